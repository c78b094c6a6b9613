"""Helm's output encoders: JSON as Go's ``json.Encoder`` writes it, YAML as sigs.k8s.io/yaml
(keys sorted), tables as gosuri/uitable (cells padded, tab-separated), and the release status
block (``NAME:``/``LAST DEPLOYED:``/... ) helm prints after install, upgrade and status.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import yaml

from sandbox.helm.storage import parse_time


def go_json(obj: Any) -> str:
    """One compact JSON document and a newline; ``<``, ``>``, ``&`` escaped like Go does."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    for raw, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(raw, escaped)
    return text + "\n"


class _YamlDumper(yaml.SafeDumper):
    """go-yaml style: quoted scalars use double quotes."""

    def choose_scalar_style(self) -> str:
        style = super().choose_scalar_style()
        return '"' if style == "'" else style


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_YamlDumper.add_representer(str, _str_presenter)


def go_yaml(obj: Any) -> str:
    """YAML as sigs.k8s.io/yaml marshals (sorted keys; ``null`` for nothing)."""
    if obj is None:
        return "null\n"
    if obj == {}:
        return "{}\n"
    return yaml.dump(
        obj, Dumper=_YamlDumper, sort_keys=True, default_flow_style=False, allow_unicode=True, width=1 << 20
    )


def table(rows: list[list[str]]) -> str:
    """uitable with tab separators: every cell padded to its column's width."""
    if not rows:
        return ""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["\t".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) for row in rows]
    return "\n".join(lines) + "\n"


def ansic(stamp: str) -> str:
    """Go's time.ANSIC (``Mon Jan  2 15:04:05 2006``)."""
    parsed = parse_time(stamp)
    if parsed is None:
        return ""
    return f"{parsed:%a %b} {parsed.day:>2} {parsed:%H:%M:%S %Y}"


def list_time(stamp: str) -> str:
    """``2006-01-02 15:04:05.999999999 -0700 MST`` as helm list prints UPDATED."""
    parsed: datetime | None = parse_time(stamp)
    if parsed is None:
        return ""
    frac = f"{parsed.microsecond:06d}".rstrip("0")
    offset = parsed.strftime("%z") or "+0000"
    zone = "UTC" if offset == "+0000" else parsed.strftime("%Z") or offset
    return f"{parsed:%Y-%m-%d %H:%M:%S}" + (f".{frac}" if frac else "") + f" {offset} {zone}"


def status_block(release: dict[str, Any], *, show_desc: bool = False, debug: bool = False) -> str:
    info = release.get("info") or {}
    lines = [f"NAME: {release.get('name', '')}"]
    if info.get("last_deployed"):
        lines.append(f"LAST DEPLOYED: {ansic(info['last_deployed'])}")
    lines += [
        f"NAMESPACE: {release.get('namespace', '')}",
        f"STATUS: {info.get('status', '')}",
        f"REVISION: {release.get('version', 0)}",
    ]
    if show_desc:
        lines.append(f"DESCRIPTION: {info.get('description', '')}")
    lines.append("TEST SUITE: None")
    text = "\n".join(lines) + "\n"
    if debug:
        text += "USER-SUPPLIED VALUES:\n" + go_yaml(release.get("config") or {}) + "\n"
    if str(info.get("description", "")).lower() == "dry run complete" or debug:
        text += "HOOKS:\n" + f"MANIFEST:\n{release.get('manifest', '')}\n"
    notes = str(info.get("notes") or "").strip()
    if notes:
        text += f"NOTES:\n{notes}\n"
    return text


def encode(fmt: str, obj: Any, table_text: str) -> str:
    if fmt == "json":
        return go_json(obj)
    if fmt == "yaml":
        return go_yaml(obj)
    return table_text
