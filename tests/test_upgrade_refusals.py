"""Preflight refusals added for the data-safety defects (issue 8), each with nothing changed.

Covers: a right helm needs for an object kind of the release (patch batch/jobs) missing;
a PVC that the chart itself renders without ``helm.sh/resource-policy: keep`` (here the
standalone MinIO PVC, whose default keep annotation a values override removed) is named, and the
upgrade is refused before anything is written, because ``helm uninstall`` would delete it.
"""

from __future__ import annotations

from bot.cluster.helm import find_release
from sandbox.slack import SlackClient
from sandbox.world import PULSAR_V2, World
from tests.scenario import Person, cluster_writes


def test_pvc_in_the_manifest_without_keep_is_refused(world: World, slack: SlackClient) -> None:
    values = {
        **PULSAR_V2,
        "etcd": {"replicaCount": 1},
        "minio": {"mode": "standalone", "persistence": {"annotations": None}},
    }
    world.install("nokeep", values=values)
    assert "default/nokeep-minio" in world.pvcs("default")
    world.kube.clear_requests()
    alice = Person(world, slack)
    alice.type("start nokeep")
    assert alice.outcome() == "failed"
    refusal = alice.thread()[1].text
    assert "`helm uninstall` would delete PVC `nokeep-minio` with the release" in refusal
    assert cluster_writes(world) == []
    release = find_release(world.store.list("secrets", "default", label_selector="owner=helm,name=nokeep"), "nokeep")
    assert release is not None and release.status == "deployed"


def test_a_right_helm_needs_for_an_object_of_the_release_is_checked_before_anything(
    world: World, slack: SlackClient
) -> None:
    """The chart renders Jobs (its init jobs); without the right to patch Jobs, Helm 4's reinstall
    would fail after the uninstall. Preflight asks for every kind of the release and refuses."""
    world.kube.deny("patch", "jobs", namespace="default", group="batch")
    world.kube.clear_requests()
    alice = Person(world, slack)
    alice.type("start my-release")
    assert alice.outcome() == "failed"
    refusal = alice.thread()[1].text
    assert "not allowed to patch batch/jobs in `default`" in refusal
    assert cluster_writes(world) == []
