"""The pod dies while helm runs: the whole process tree (the bot and its helm) is SIGKILLed.

Covers, with the real helm:
- killed during the reinstall's ``helm install`` (Helm 4 and Helm 3): the release is left
  ``pending-install``; after the restart the bot recognises its own interrupted command (it
  recorded it before running it), removes the never-completed release record, installs again,
  and the upgrade succeeds with exactly the saved values plus the two Pulsar keys;
- killed during ``helm uninstall`` (the release left ``uninstalling``): the restarted bot runs the uninstall
  again and the upgrade succeeds;
- killed during "Restore previous release" (``pending-install``): the restarted bot clears it and
  the restore completes (the release is deployed with its original values).
A hang injected into the API server holds helm at a known point, so the kill lands inside the
command, not before or after it.
"""

from __future__ import annotations

from bot.cluster.helm import HelmRelease, find_release
from sandbox.botproc import BotProcess
from sandbox.slack import SlackClient
from sandbox.world import World
from tests.conftest import BOTH_HELMS
from tests.scenario import Person

STS = r"/apis/apps/v1/namespaces/default/statefulsets"


def _release(world: World, name: str = "my-release") -> HelmRelease | None:
    return find_release(world.store.list("secrets", "default", label_selector=f"owner=helm,name={name}"), name)


def _status(world: World) -> str | None:
    release = _release(world)
    return release.status if release is not None else None


def _hold_helm_creating_statefulsets(world: World) -> None:
    """The next StatefulSet create hangs: POST for Helm 3, a server-side apply PATCH for Helm 4."""
    for method in ("POST", "PATCH"):
        world.kube.inject_fault(method, STS, hang_seconds=120, count=1)


def _crash_and_restart(world: World, bot: BotProcess) -> None:
    bot.kill()
    world.kube.clear_faults()
    bot.start()


@BOTH_HELMS
def test_killed_during_helm_install(world: World, slack: SlackClient, bot: BotProcess) -> None:
    original = world.releases[("default", "my-release")].values
    alice = Person(world, slack)
    alice.type("start my-release")
    alice.approve("flush_done")
    alice.approve("pvc_list")
    cp = alice.checkpoint("reinstall")
    _hold_helm_creating_statefulsets(world)
    alice.click(cp, "upgrade_approve")
    alice.wait(lambda: _status(world) == "pending-install", 60, "helm install to be under way")
    _crash_and_restart(world, bot)
    assert alice.outcome(timeout=120) == "succeeded"
    release = _release(world)
    assert release is not None and release.status == "deployed"
    assert release.config == {**original, "pulsar": {"enabled": False}, "pulsarv3": {"enabled": True}}
    assert any("An interrupted `helm install`" in m.text for m in alice.thread())
    assert world.pvcs("default", "app=pulsar,release=my-release") == []


def test_killed_during_helm_uninstall(world: World, slack: SlackClient, bot: BotProcess) -> None:
    alice = Person(world, slack)
    alice.type("start my-release")
    cp = alice.checkpoint("flush_done")
    world.kube.inject_fault("DELETE", STS + "/", hang_seconds=120, count=1)
    alice.click(cp, "upgrade_approve")
    alice.wait(lambda: _status(world) == "uninstalling", 60, "helm uninstall to be under way")
    _crash_and_restart(world, bot)
    alice.approve("pvc_list")
    alice.approve("reinstall")
    assert alice.outcome(timeout=120) == "succeeded"
    assert world.pvcs("default", "app=pulsar,release=my-release") == []


def test_killed_during_restore(world: World, slack: SlackClient, bot: BotProcess) -> None:
    original = world.releases[("default", "my-release")].values
    alice = Person(world, slack)
    alice.type("start my-release")
    alice.approve("flush_done")
    cp = alice.checkpoint("pvc_list")
    alice.click(cp, "upgrade_abort")
    restore = alice.checkpoint("restore")
    _hold_helm_creating_statefulsets(world)
    alice.click(restore, "upgrade_approve")
    alice.wait(lambda: _status(world) == "pending-install", 60, "the restore's helm install to be under way")
    _crash_and_restart(world, bot)
    alice.wait(lambda: "restored" in alice.root().text, 120, "the root to say restored")
    release = _release(world)
    assert release is not None and release.status == "deployed" and release.config == original
