"""Values reach the real helm type for type (Helm 3.17 and 4.1, ``helm template``).

Behaviours covered:
- the bot's values file (``bot.cluster.helm.values_file``), read by real helm, gives back
  exactly the values it was made from: strings that YAML 1.1 would read as numbers, booleans,
  octal or null ("1e3", "y", "on", "0755", "~", "null"), multi-line and non-ASCII text, the
  characters YAML treats as line breaks, dotted keys, empty maps and lists, ints and floats;
- the same values written the old way (PyYAML ``safe_dump``) do not survive (so the test can
  fail: this is the defect the JSON file fixes);
- ``values_document`` is valid JSON equal to the values.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.cluster.helm import values_document, values_file
from sandbox import tools

TRICKY: dict[str, Any] = {
    "exponent": "1e3",
    "yes_short": "y",
    "no_short": "n",
    "on": "on",
    "off": "OFF",
    "octal": "0755",
    "hex": "0x1F",
    "sexagesimal": "1:20",
    "tilde": "~",
    "null_word": "null",
    "empty": "",
    "true_word": "True",
    "multi": "line one\nline two\n  indented: yes\n",
    "unicode": "données — 検索 🚀",
    "line_breaks": "a\u2028b\u0085c",
    "quotes": 'it\'s "quoted" \\ backslash',
    "dotted.key": {"inner.dots": "v"},
    "empty_map": {},
    "empty_list": [],
    "list": ["1e3", 1000, 1.5, True, None, {"k": "on"}],
    "int": 9007199254740991,
    "float": 0.25,
    "negative": -7,
    "bool": False,
    "nothing": None,
    "nested": {"image": {"tag": "v2.5.10"}, "resources": {"limits": {"memory": "8Gi"}}},
}

CHART = {
    "Chart.yaml": "apiVersion: v2\nname: echo\nversion: 0.1.0\n",
    "templates/values.yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: echo\ndata:\n  values: {{ .Values | toJson | quote }}\n"
    ),
}


@pytest.fixture(scope="module")
def chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("chart") / "echo"
    for name, text in CHART.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def rendered_values(helm: str, chart: Path, values_path: str) -> Any:
    out = subprocess.run(
        [helm, "template", "r", str(chart), "-f", values_path], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(yaml.safe_load(out)["data"]["values"])


@pytest.mark.parametrize("major", [3, 4])
def test_values_file_round_trips_through_real_helm(chart: Path, major: int) -> None:
    with values_file(TRICKY) as path:
        assert rendered_values(tools.helm(major), chart, path) == TRICKY


@pytest.mark.parametrize("major", [3, 4])
def test_pyyaml_dump_is_misread_by_real_helm(chart: Path, major: int, tmp_path: Path) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(TRICKY, allow_unicode=True))
    got = rendered_values(tools.helm(major), chart, str(path))
    assert got["exponent"] == 1000
    assert got != TRICKY


def test_values_document_is_json_of_the_values() -> None:
    text = values_document(TRICKY)
    assert json.loads(text) == TRICKY
    assert "\u2028" not in text and "\u0085" not in text
    assert "検索" in text
