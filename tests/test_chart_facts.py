"""What the bot assumes about the Milvus chart, checked against every vendored real chart.

Each chart in sandbox/charts is read and rendered with the real helm (``helm show``,
``helm template``). Behaviours covered:
- the Milvus version of each chart (appVersion) is judged by the bot as the README says:
  only 2.5.x is a target (4.2.20 is Milvus 2.4, 5.0.19 is Milvus 2.6);
- the ``pulsarv3`` subchart exists exactly from ``FIRST_PULSARV3_CHART`` on, and the bot's
  idea of whether Pulsar V2 is on by default matches each chart's default values;
- with Pulsar V2 on, the PVCs the Pulsar StatefulSets will claim (template labels merged with
  the selector's matchLabels, as the StatefulSet controller does) are exactly those the bot's
  V2 selector finds, none of etcd's or MinIO's, and they are named as the guide says;
- those claims are not in the release manifest (so ``helm uninstall`` leaves them, which is why
  the bot deletes them), while the standalone MinIO PVC is, with ``helm.sh/resource-policy: keep``,
  and the bot's ``pvcs_helm_would_delete`` finds it only once a values override drops the keep;
- after the bot's two value changes, the chart renders Pulsar V3 claims that the bot's V3
  selector finds, and no V2 claim;
- chart 4.2.27 as packaged holds both Pulsar subcharts in one folder (``charts/pulsar``): its
  Pulsar V2 renders nothing and its Pulsar V3 does not render at all. A reinstall onto it can
  only fail, which is why preflight renders the reinstall with helm before anything is deleted.
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import yaml

from bot.procedure.common import is_milvus_25, version_tuple, with_pulsar_v3, yaml_documents
from bot.procedure.helm_path import FIRST_PULSARV3_CHART, pulsar_v2_enabled, pvcs_helm_would_delete
from bot.procedure.volumes import helm_pulsar_selector
from sandbox import tools
from sandbox.chartrepo import chart_path

CHARTS = ["4.2.20", "4.2.27", "4.2.37", "4.2.40", "4.2.58", "5.0.19"]
MILVUS_25 = {"4.2.27", "4.2.37", "4.2.40", "4.2.58"}
BROKEN = "4.2.27"  # both Pulsar subcharts packaged as charts/pulsar
RENDERS = [c for c in CHARTS if c != BROKEN]
RELEASE = "rel"
V2_VALUES: dict[str, Any] = {
    "cluster": {"enabled": True},
    "pulsar": {"enabled": True},
    "pulsarv3": {"enabled": False},
    "etcd": {"replicaCount": 1},
    "minio": {"mode": "standalone"},
}


def helm(*args: str) -> str:
    proc = subprocess.run([tools.helm(4), *args], capture_output=True, text=True, check=False)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, proc.args, proc.stdout, proc.stderr)
    return proc.stdout


def render(version: str, values: dict[str, Any], tmp_path: Any) -> list[dict[str, Any]]:
    path = tmp_path / f"values-{version}.yaml"
    path.write_text(yaml.safe_dump(values))
    out = helm("template", RELEASE, str(chart_path(version)), "-f", str(path), "-n", "default")
    return [d for d in yaml.safe_load_all(out) if d]


def claims(objects: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """PVC name -> labels of every claim the StatefulSets will make (ordinal 0)."""
    out = {}
    for sts in (o for o in objects if o["kind"] == "StatefulSet"):
        match = sts["spec"]["selector"].get("matchLabels") or {}
        for tpl in sts["spec"].get("volumeClaimTemplates") or []:
            labels = {**(tpl["metadata"].get("labels") or {}), **match}
            out[f"{tpl['metadata']['name']}-{sts['metadata']['name']}-0"] = labels
    return out


def selected(selector: str, labelled: dict[str, dict[str, str]]) -> set[str]:
    want = dict(term.split("=", 1) for term in selector.split(","))
    return {name for name, labels in labelled.items() if all(labels.get(k) == v for k, v in want.items())}


@pytest.mark.parametrize("version", CHARTS)
def test_milvus_version_and_pulsar_defaults(version: str) -> None:
    meta = yaml.safe_load(helm("show", "chart", str(chart_path(version))))
    assert meta["version"] == version
    assert is_milvus_25(str(meta["appVersion"])) is (version in MILVUS_25)
    aliases = {d.get("alias") or d["name"] for d in meta.get("dependencies") or []}
    assert ("pulsarv3" in aliases) is (version_tuple(version) >= FIRST_PULSARV3_CHART)
    defaults = yaml.safe_load(helm("show", "values", str(chart_path(version))))
    assert pulsar_v2_enabled({}, version) is bool(defaults["pulsar"]["enabled"])


@pytest.mark.parametrize("version", [c for c in RENDERS if c in MILVUS_25 or c == "4.2.20"])
def test_pulsar_v2_claims_are_what_the_bot_selects(version: str, tmp_path: Any) -> None:
    objects = render(version, V2_VALUES, tmp_path)
    made = claims(objects)
    v2 = selected(helm_pulsar_selector(RELEASE), made)
    pulsar = {n for n in made if f"{RELEASE}-pulsar-" in n}
    assert v2 == pulsar and v2
    assert f"{RELEASE}-pulsar-bookie-journal-{RELEASE}-pulsar-bookie-0" in v2
    assert f"{RELEASE}-pulsar-bookie-ledgers-{RELEASE}-pulsar-bookie-0" in v2
    assert {made[n]["component"] for n in v2} == {"bookie", "zookeeper"}
    etcd = selected(f"app.kubernetes.io/name=etcd,app.kubernetes.io/instance={RELEASE}", made)
    assert etcd == {f"data-{RELEASE}-etcd-0"}
    assert not v2 & etcd
    # Claims are not in the manifest: helm uninstall leaves them. The standalone MinIO PVC is, kept.
    in_manifest = {o["metadata"]["name"]: o for o in objects if o["kind"] == "PersistentVolumeClaim"}
    assert not v2 & set(in_manifest)
    minio = in_manifest[f"{RELEASE}-minio"]
    assert minio["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert pvcs_helm_would_delete(yaml.safe_dump_all(objects)) == []
    no_keep = {**V2_VALUES, "minio": {"mode": "standalone", "persistence": {"annotations": None}}}
    assert pvcs_helm_would_delete(yaml.safe_dump_all(render(version, no_keep, tmp_path))) == [f"{RELEASE}-minio"]


@pytest.mark.parametrize("version", [c for c in RENDERS if c in MILVUS_25])
def test_reinstall_values_render_pulsar_v3_claims(version: str, tmp_path: Any) -> None:
    made = claims(render(version, with_pulsar_v3(V2_VALUES), tmp_path))
    v3 = selected(helm_pulsar_selector(RELEASE, v3=True), made)
    assert v3 and v3 == {n for n in made if f"{RELEASE}-pulsarv3-" in n}
    assert not selected(helm_pulsar_selector(RELEASE), made)


def test_chart_4_2_27_cannot_be_a_reinstall_target(tmp_path: Any) -> None:
    assert not selected(helm_pulsar_selector(RELEASE), claims(render(BROKEN, V2_VALUES, tmp_path)))
    with pytest.raises(subprocess.CalledProcessError) as err:
        render(BROKEN, with_pulsar_v3(V2_VALUES), tmp_path)
    assert "pulsar_manager" in err.value.stderr


@pytest.mark.parametrize("version", [c for c in RENDERS if c in MILVUS_25])
def test_the_bots_fast_yaml_reads_a_real_manifest_as_pyyaml_does(version: str, tmp_path: Any) -> None:
    """``yaml_documents`` (libyaml) gives exactly PyYAML's documents for a whole rendered chart, and
    a text libyaml refuses is refused with PyYAML's own error."""
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(V2_VALUES))
    out = helm("template", RELEASE, str(chart_path(version)), "-f", str(path), "-n", "default")
    assert yaml_documents(out) == list(yaml.safe_load_all(out))
    with pytest.raises(yaml.YAMLError):
        yaml_documents("a: [1, 2\n")
