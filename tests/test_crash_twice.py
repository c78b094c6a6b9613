"""A second crash during the recovery of the first: the bot (its whole process group, helm
included) SIGKILLed, restarted, and SIGKILLed again while it repairs what the first kill left.

- Killed inside the reinstall's ``helm install`` (Helm 4 and Helm 3; the release left
  ``pending-install``), then killed again inside the ``helm uninstall`` with which
  ``clear_interrupted`` removes that never-completed record (the release left ``uninstalling``):
  the third process must finish the clearing, install and succeed, and say which interrupted
  command it cleared.
- Killed inside ``helm uninstall`` (``uninstalling``), then killed again inside the
  uninstall that the restarted bot runs again: the third process uninstalls and succeeds.
- Operator path: killed after the Milvus resource's DELETE was applied (the operator held, so
  the resource stays ``Deleting``), killed again while the restarted bot follows the deletion
  (its watch of the resource open), and a third time inside the re-create (its POST held):
  the fourth process succeeds.

Each kill is held deterministically as in the crash matrix (an API-server hang on the exact
next request, which the server does not apply, or the operator kept unready); the checks are
the crash matrix's own: ``succeeded``, every destructive action effective exactly once and
nothing outside the approved set touched, the final values or spec, no live buttons.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from sandbox.botproc import BotProcess
from sandbox.world import World
from tests.conftest import person
from tests.scenario import OUTCOMES, Person, has_button
from tests.test_crash_matrix import (
    CRS,
    HELD_TIMEOUT,
    NS,
    STS,
    Held,
    Run,
    _assert_deletes,
    _assert_no_live_buttons,
    _bound_pvs,
    _expected_spec,
    _pvc_snapshot,
    _release,
    hang,
    hang_sts_create,
    hold_operator,
)

HELM_V2 = "app=pulsar,release=my-release"
OPERATOR_V2 = "app=pulsar,release=my-milvus-pulsar"


def _start(world: World, bot: BotProcess, release: str, selector: str) -> Run:
    alice = person(world, bot)
    pvcs = sorted(n.split("/", 1)[1] for n in world.pvcs(NS, selector))
    return Run(world, release, pvcs, _bound_pvs(world, pvcs), {"alice": alice})


def _status(world: World) -> str | None:
    release = _release(world, "my-release")
    return release.status if release is not None else None


def _kill_when(run: Run, bot: BotProcess, held: Held, what: str) -> None:
    """Wait until ``held``, SIGKILL the bot's process group and clear the API-server faults."""
    alice: Person = run.marks["alice"]
    alice.wait(held, HELD_TIMEOUT, what)
    bot.kill()
    run.world.kube.clear_faults()


def _succeeded(alice: Person, timeout: float = 120) -> None:
    """Wait for the end; an error with Retry in the meantime fails at once, showing it."""
    errors: list[str] = []

    def ended() -> bool:
        errors[:] = [m.text for m in alice.thread()[1:] if has_button(m, "upgrade_retry")]
        return bool(errors) or any(w in alice.root().text for w in OUTCOMES)

    alice.wait(ended, timeout, "the upgrade to end")
    assert not errors, f"stopped with an error instead of recovering: {errors}"
    assert alice.outcome() == "succeeded"


def _assert_helm_success(run: Run, before: dict[str, str], original: dict[str, object]) -> None:
    alice: Person = run.marks["alice"]
    _succeeded(alice)
    release = _release(run.world, "my-release")
    assert release is not None and release.status == "deployed"
    assert release.config == {**original, "pulsar": {"enabled": False}, "pulsarv3": {"enabled": True}}
    assert run.world.pvcs(NS, HELM_V2) == []
    _assert_deletes(run, before, None, restored=False)
    _assert_no_live_buttons(alice)


@pytest.mark.parametrize("helm", [4, 3], ids=["helm4", "helm3"])
def test_killed_in_helm_install_then_in_clearing_it(
    helm: int, make_world: Callable[..., World], make_bot: Callable[..., BotProcess]
) -> None:
    world = make_world("default", reclaim_policy="Retain", helm_major=helm)
    bot = make_bot(world)
    original = world.releases[(NS, "my-release")].values
    before = _pvc_snapshot(world)
    run = _start(world, bot, "my-release", HELM_V2)
    alice: Person = run.marks["alice"]
    alice.type("start my-release")
    alice.approve("flush_done")
    alice.approve("pvc_list")
    cp = alice.checkpoint("reinstall")
    held = hang_sts_create(run)
    alice.click(cp, "upgrade_approve")
    _kill_when(run, bot, held, "helm install to be held creating a StatefulSet")
    assert _status(world) == "pending-install"

    # The recovery: clear_interrupted runs `helm uninstall` of the never-completed record.
    # Hold that uninstall at its first StatefulSet DELETE (the release is `uninstalling` by then).
    held = hang("DELETE", STS + "/", bot_only=False)(run)
    bot.start()
    _kill_when(run, bot, lambda: held() and _status(world) == "uninstalling", "the clearing uninstall to be held")
    bot.start()
    _assert_helm_success(run, before, original)
    assert any("An interrupted `helm install`" in m.text for m in alice.thread())


def test_killed_in_helm_uninstall_then_in_its_rerun(
    make_world: Callable[..., World], make_bot: Callable[..., BotProcess]
) -> None:
    world = make_world("default", reclaim_policy="Retain")
    bot = make_bot(world)
    original = world.releases[(NS, "my-release")].values
    before = _pvc_snapshot(world)
    run = _start(world, bot, "my-release", HELM_V2)
    alice: Person = run.marks["alice"]
    alice.type("start my-release")
    cp = alice.checkpoint("flush_done")
    held = hang("DELETE", STS + "/", bot_only=False)(run)
    alice.click(cp, "upgrade_approve")
    _kill_when(run, bot, lambda: held() and _status(world) == "uninstalling", "helm uninstall to be held")

    held = hang("DELETE", STS + "/", bot_only=False)(run)  # the re-run uninstall, held the same way
    bot.start()
    _kill_when(run, bot, lambda: held() and _status(world) == "uninstalling", "the re-run uninstall to be held")
    bot.start()
    alice.approve("pvc_list")
    alice.approve("reinstall")
    _assert_helm_success(run, before, original)
    uninstalls = [m.text for m in alice.thread() if "`helm uninstall my-release` done" in m.text]
    assert len(uninstalls) == 1, uninstalls


def _bot_watching_cr(run: Run, since: int) -> Held:
    def held() -> bool:
        return any(
            r.method == "GET"
            and re.search(r"/milvuses$", r.path)
            and r.query.get("watch", "").lower() in ("1", "true")
            and not r.user_agent.startswith("Helm/")
            for r in list(run.world.kube.requests)[since:]
        )

    return held


def test_operator_killed_after_the_delete_then_while_following_it_then_in_the_recreate(
    make_world: Callable[..., World], make_bot: Callable[..., BotProcess]
) -> None:
    world = make_world("operator", reclaim_policy="Retain")
    bot = make_bot(world)
    original = world.releases[(NS, "my-milvus")].values
    before = _pvc_snapshot(world)
    run = _start(world, bot, "my-milvus", OPERATOR_V2)
    alice: Person = run.marks["alice"]
    alice.type("start my-milvus")
    alice.approve("flush_done")
    cp = alice.checkpoint("pvc_list")
    deleting = hold_operator(run)  # the operator stops acting: the resource stays Deleting
    alice.click(cp, "upgrade_approve")
    _kill_when(run, bot, deleting, "the resource's DELETE to be applied (Deleting)")

    since = len(world.kube.requests)
    bot.start()  # resumes following the deletion: reads the resource, watches it
    _kill_when(run, bot, _bot_watching_cr(run, since), "the restarted bot to watch the resource")
    cr = world.store.try_get("milvuses.milvus.io", NS, "my-milvus")
    assert cr is not None and cr["metadata"].get("deletionTimestamp")

    bot.start()
    world.cluster.release_unready(*run.marks["release_holds"].pop())  # the operator acts again
    cp = alice.checkpoint("reinstall", timeout=60)
    held = hang("POST", CRS)(run)
    alice.click(cp, "upgrade_approve")
    _kill_when(run, bot, held, "the re-create to be held")
    bot.start()

    _succeeded(alice)
    cr = world.store.try_get("milvuses.milvus.io", NS, "my-milvus")
    assert cr is not None and cr["spec"] == _expected_spec(original)
    _assert_deletes(run, before, f"/apis/milvus.io/v1beta1/namespaces/{NS}/milvuses/my-milvus", restored=False)
    _assert_no_live_buttons(alice)
    creates = [r for r in world.kube.requests if r.method == "POST" and re.search(CRS, r.path) and r.status == 201]
    assert len(creates) == 1, [r.status for r in world.kube.requests if r.method == "POST" and re.search(CRS, r.path)]
