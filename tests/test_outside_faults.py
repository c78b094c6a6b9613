"""Outside faults during an upgrade, each ending "succeeded" after the fault clears.

Covers: the Kubernetes API answering 429 (with Retry-After) and 503 to the bot's own calls (the
PVC list, the backup Secret) is retried by itself; helm exiting non-zero in the reinstall (the
API server refuses a StatefulSet) stops the step with helm's stderr in the thread, and Retry
installs over the failed release and succeeds.
"""

from __future__ import annotations

from bot.cluster.helm import find_release
from sandbox.slack import SlackClient
from sandbox.slack.blocks import render_blocks
from sandbox.world import World
from tests.scenario import Person

STS = r"/apis/apps/v1/namespaces/default/statefulsets"


def test_kubernetes_429_and_503_are_retried(world: World, slack: SlackClient) -> None:
    world.kube.inject_fault("GET", r"/namespaces/default/persistentvolumeclaims$", status=429, count=2)
    world.kube.inject_fault("POST", r"/namespaces/default/secrets$", status=503, count=1)
    alice = Person(world, slack)
    alice.type("start my-release")
    alice.approve("flush_done")
    alice.approve("pvc_list")
    alice.approve("reinstall")
    assert alice.outcome() == "succeeded"
    statuses = [r.status for r in world.kube.requests if r.path.endswith("/persistentvolumeclaims")]
    assert statuses.count(429) == 2


def test_helm_failure_shows_its_stderr_and_retry_installs(world: World, slack: SlackClient) -> None:
    alice = Person(world, slack)
    alice.type("start my-release")
    alice.approve("flush_done")
    alice.approve("pvc_list")
    cp = alice.checkpoint("reinstall")
    for method in ("POST", "PATCH"):  # Helm 3 creates with POST, Helm 4 applies with PATCH
        world.kube.inject_fault(method, STS, status=422, count=1, message="sandbox refuses this StatefulSet")
    alice.click(cp, "upgrade_approve")
    error = alice.error_message()
    assert "helm exited with code 1" in error.text
    assert "sandbox refuses this StatefulSet" in "\n".join(render_blocks(error.blocks))  # helm's stderr
    world.kube.clear_faults()
    release = find_release(
        world.store.list("secrets", "default", label_selector="owner=helm,name=my-release"), "my-release"
    )
    assert release is not None and release.status == "failed"
    alice.click(error, "upgrade_retry")
    assert alice.outcome() == "succeeded"
    release = find_release(
        world.store.list("secrets", "default", label_selector="owner=helm,name=my-release"), "my-release"
    )
    assert release is not None and release.status == "deployed" and release.revision == 2
