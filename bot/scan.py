"""``scan``: which Milvus installations the bot can see still need this upgrade (read-only).

Every namespace is read in parallel (at most SCAN_WORKERS at once, the whole scan bounded by
SCAN_SECONDS): its Helm release Secrets (the latest revision of each release of the ``milvus``
chart, decoded as Helm stores it) and its Milvus resources (milvus-operator). Each installation
gets a verdict:

- "needs this upgrade": Milvus 2.5.x with the chart's in-cluster Pulsar V2;
- "already on Pulsar V3";
- "not applicable", with why: another Milvus version (2.4 and older, 2.6 and newer), an external
  Pulsar, Kafka, a standalone Milvus with its own queue (RocksMQ, Woodpecker), a release that is
  not deployed.

Nothing is written anywhere: no record, no audit of calls (there are none to audit).
"""

from __future__ import annotations

import concurrent.futures
from typing import Any

from bot.cluster.helm import HelmRelease, find_release
from bot.cluster.kube import Kube, KubeError
from bot.procedure.common import dig, is_milvus_25, version_tuple
from bot.procedure.helm_path import milvus_version, pulsar_v2_enabled
from bot.procedure.operator_path import _tag as tag_of
from bot.reports import DONE_ALREADY, NEEDS, NOT_APPLICABLE, Finding

SCAN_WORKERS = 8
SCAN_SECONDS = 20.0


def _version_why(version: str) -> str:
    if version_tuple(version) >= (2, 6):
        return f"it runs Milvus {version}: 2.6 and newer have no Pulsar V2 to move from"
    return f"it runs Milvus {version}: upgrade it to 2.5 first (this procedure is for 2.5.x)"


def classify_helm(release: HelmRelease) -> Finding:
    config = release.config or {}
    version = milvus_version(release)
    standalone = dig(config, "cluster", "enabled") is False
    if dig(config, "externalPulsar", "enabled"):
        queue = "external Pulsar"
    elif dig(config, "kafka", "enabled") or dig(config, "externalKafka", "enabled"):
        queue = "Kafka"
    elif dig(config, "pulsarv3", "enabled"):
        queue = "Pulsar V3"
    elif pulsar_v2_enabled(config, release.chart_version):
        queue = "Pulsar V2"
    elif standalone:
        queue = str(dig(config, "standalone", "messageQueue") or "rocksmq").capitalize().replace("mq", "MQ")
    else:
        queue = "none found"
    base = {
        "name": release.name,
        "namespace": release.namespace,
        "method": "Helm",
        "chart": f"{release.chart_name}-{release.chart_version}",
        "milvus": version,
        "queue": queue,
    }
    if release.status != "deployed":
        return Finding(**base, verdict=NOT_APPLICABLE, why=f"the release is `{release.status}`, not deployed")
    if not is_milvus_25(version):
        return Finding(**base, verdict=NOT_APPLICABLE, why=_version_why(version))
    if queue == "Pulsar V3":
        return Finding(**base, verdict=DONE_ALREADY)
    if queue == "Pulsar V2":
        return Finding(**base, verdict=NEEDS)
    return Finding(**base, verdict=NOT_APPLICABLE, why=_queue_why(queue, standalone))


def _queue_why(queue: str, standalone: bool) -> str:
    if queue == "external Pulsar":
        return "it uses an external Pulsar: only an in-cluster Pulsar V2 is replaced by this procedure"
    if queue == "Kafka":
        return "its message queue is Kafka, not Pulsar"
    if standalone:
        return f"a standalone Milvus with its own queue ({queue})"
    return "no Pulsar is enabled in its values"


def classify_cr(cr: dict[str, Any]) -> Finding:
    meta = cr.get("metadata") or {}
    image = str(dig(cr, "spec", "components", "image") or "")
    version = tag_of(image) or "?"
    mode = dig(cr, "spec", "mode") or "cluster"
    deps = dig(cr, "spec", "dependencies") or {}
    stream = deps.get("msgStreamType") or ("rocksmq" if mode == "standalone" else "pulsar")
    pulsar = deps.get("pulsar") or {}
    if stream != "pulsar":
        queue = {"kafka": "Kafka", "rocksmq": "RocksMQ", "natsmq": "NATS", "woodpecker": "Woodpecker"}.get(
            str(stream), str(stream)
        )
    elif pulsar.get("external"):
        queue = "external Pulsar"
    elif (dig(pulsar, "inCluster", "chartVersion") or "pulsar-v2") == "pulsar-v3":
        queue = "Pulsar V3"
    else:
        queue = "Pulsar V2"
    base = {
        "name": str(meta.get("name")),
        "namespace": str(meta.get("namespace")),
        "method": "milvus-operator",
        "chart": "-",
        "milvus": version,
        "queue": queue,
    }
    if version != "?" and not is_milvus_25(version):
        return Finding(**base, verdict=NOT_APPLICABLE, why=_version_why(version))
    if queue == "Pulsar V3":
        return Finding(**base, verdict=DONE_ALREADY)
    if queue == "Pulsar V2":
        return Finding(**base, verdict=NEEDS)
    return Finding(**base, verdict=NOT_APPLICABLE, why=_queue_why(queue, mode == "standalone"))


def scan_namespace(kube: Kube, namespace: str) -> list[Finding]:
    secrets = kube.list_secrets(namespace, "owner=helm")
    names = sorted({str((s.get("metadata") or {}).get("labels", {}).get("name")) for s in secrets})
    found = []
    for name in names:
        release = find_release(secrets, name)
        if release is not None and release.chart_name == "milvus" and release.status != "uninstalled":
            found.append(classify_helm(release))
    found += [classify_cr(cr) for cr in kube.list_milvuses(namespace)]
    return found


def scan(kube: Kube, namespaces: list[str]) -> tuple[list[Finding], list[str]]:
    """(findings, problems): every namespace at once (bounded workers and time); a namespace the
    bot may not read or that does not answer in time is a problem, not a failure of the scan."""
    findings: list[Finding] = []
    problems: list[str] = []
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=SCAN_WORKERS)
    futures = {pool.submit(scan_namespace, kube, ns): ns for ns in namespaces}
    done, pending = concurrent.futures.wait(futures, timeout=SCAN_SECONDS)
    for future in done:
        ns = futures[future]
        try:
            findings += future.result()
        except KubeError as err:
            problems.append(f"`{ns}`: {err.message}")
    for future in pending:
        problems.append(f"`{futures[future]}`: no answer within {SCAN_SECONDS:g}s")
        future.cancel()
    pool.shutdown(wait=False, cancel_futures=True)
    findings.sort(key=lambda f: (f.verdict != NEEDS, f.namespace, f.name))
    return findings, sorted(problems)
