"""The crash matrix: the bot's whole process tree SIGKILLed at every step of both paths.

Each kill point is made deterministic by holding the bot (or its helm) at a known request
with an API-server hang (``world.kube.inject_fault(..., hang_seconds=120)``; a hung request is
not applied; ``skip`` lets the first N matching requests through), or, for the pod waits, by
pods that the simulated cluster keeps unready (``world.cluster.hold_unready``). The test waits
until the held request is recorded in ``world.kube.requests`` with no answer yet (and made by
the bot itself, not helm, where that matters), kills the process group, clears the faults,
restarts the bot with the same environment, approves what is left and asserts:

- the upgrade ends ``succeeded`` (a restore: the root says restored);
- every destructive action took effect exactly once: each approved Pulsar V2 PVC and each PV
  bound to it (the worlds use reclaim policy Retain, so the bot deletes the PVs itself) got
  exactly one successful DELETE (200/202), the Milvus resource at most one; no successful
  DELETE of any other PVC, PV or Milvus resource; every other PVC (other-release, staging,
  etcd, MinIO) is still there with its uid;
- the final release values (Helm) or resource spec (operator) are the saved ones plus only
  the Pulsar keys;
- no thread message is left with Approve/Abort buttons.

Milvus calls go through the API server's service proxy, so the same hang holds a flush or
``/healthz`` (no Milvus-side hang helper is needed).

Kill points: 22 on the Helm path (2 of them restores), 18 on the operator path (1 restore).

Not made deterministic, hence not in the matrix: a kill "right after a click was recorded"
with nothing held (the bot may or may not have started the next request by then); each
such point is instead held at the first request the bot makes after the click
(``*-click-*`` ids). Milvus is held through the service proxy only: with MILVUS_MGMT_URL
set (Milvus reached directly) these flush/verify points are not exercised. "Mid helm
uninstall" holds helm's DELETE of a StatefulSet: which object helm deletes first is helm's
order, so the hang is on the first StatefulSet DELETE, whatever StatefulSet it is. The
operator's "CR Deleting" point keeps the operator's own pod unready (the simulated operator
acts only while its Deployment has a Ready pod), so the resource stays with its
deletionTimestamp and finalizer until the test lets the operator back.
"""

from __future__ import annotations

import collections
import copy
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from bot.cluster.helm import HelmRelease, find_release
from sandbox.botproc import BotProcess
from sandbox.kube.server import RequestRecord
from sandbox.world import World
from tests.conftest import person
from tests.scenario import Person, has_button

NS = "default"
HANG = 120.0
HELD_TIMEOUT = 60.0
STS = r"/apis/apps/v1/namespaces/default/statefulsets"
PVCS = r"/api/v1/namespaces/default/persistentvolumeclaims$"
SECRETS = r"/api/v1/namespaces/default/secrets$"
PODS = r"/api/v1/namespaces/default/pods$"
PV_ANY = r"^/api/v1/persistentvolumes/[^/]+$"
OPERATOR_NS = "milvus-operator"
OPERATOR_PODS = "app.kubernetes.io/name=milvus-operator"


def _proxy(service: str, port: int, route: str) -> str:
    return rf"/api/v1/namespaces/default/services/{service}:{port}/proxy{route}$"


@dataclass
class Run:
    """What a kill point needs to know about its world while arming and checking."""

    world: World
    release: str
    pvcs: list[str]  # approved Pulsar V2 PVC names, sorted (the bot deletes in this order)
    pvs: list[str]  # PVs bound to them, sorted
    marks: dict[str, Any] = field(default_factory=dict)


Held = Callable[[], bool]
Arm = Callable[[Run], Held]


def _matching(world: World, method: str, regex: str, bot_only: bool = True) -> list[RequestRecord]:
    pattern = re.compile(regex)
    return [
        r
        for r in list(world.kube.requests)
        if r.method == method and pattern.search(r.path) and not (bot_only and r.user_agent.startswith("Helm/"))
    ]


def hang(method: str, regex: str | Callable[[Run], str], skip: int = 0, bot_only: bool = True) -> Arm:
    """Hang the (skip+1)-th matching request; held once it is recorded and unanswered."""

    def arm(run: Run) -> Held:
        path = regex(run) if callable(regex) else regex
        before = len(_matching(run.world, method, path, bot_only=False))
        run.world.kube.inject_fault(method, path, hang_seconds=HANG, count=1, skip=skip)

        def held() -> bool:
            found = _matching(run.world, method, path, bot_only=False)[before:]
            if len(found) <= skip:
                return False
            target = found[skip]
            if bot_only and target.user_agent.startswith("Helm/"):
                raise AssertionError(f"the hang caught helm's request, not the bot's: {method} {target.path}")
            return target.status == 0

        return held

    return arm


def hang_sts_create(run: Run) -> Held:
    """helm's next StatefulSet create: POST for Helm 3, a server-side apply PATCH for Helm 4."""
    method = "PATCH" if run.world.helm_major == 4 else "POST"
    return hang(method, STS + "(/[^/]+)?$", bot_only=False)(run)


def hold_pods(selector: str, said: str) -> Arm:
    """Keep the new pods unready; held once the bot said ``said`` and is watching the pods."""

    def arm(run: Run) -> Held:
        run.world.cluster.hold_unready(NS, selector)
        run.marks.setdefault("release_holds", []).append((NS, selector))
        before = len(run.world.kube.requests)

        def held() -> bool:
            if not any(said in m.text for m in run.marks["alice"].thread()):
                return False
            watches = [
                r
                for r in list(run.world.kube.requests)[before:]
                if r.method == "GET" and re.search(PODS, r.path) and r.query.get("watch", "").lower() in ("1", "true")
            ]
            return bool(watches) and bool(run.world.pods(NS, selector))

        return held

    return arm


def hold_operator(run: Run) -> Held:
    """The operator's pod unready (the operator stops acting); held once the CR is being deleted."""
    run.world.cluster.hold_unready(OPERATOR_NS, OPERATOR_PODS)
    run.marks.setdefault("release_holds", []).append((OPERATOR_NS, OPERATOR_PODS))
    alice: Person = run.marks["alice"]
    alice.wait(
        lambda: not any(_ready(p) for p in run.world.pods(OPERATOR_NS, OPERATOR_PODS)),
        30,
        "the operator pod to be unready",
    )

    def held() -> bool:
        cr = run.world.store.try_get("milvuses.milvus.io", NS, run.release)
        return cr is not None and bool(cr["metadata"].get("deletionTimestamp"))

    return held


def _ready(pod: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in (pod.get("status") or {}).get("conditions", [])
    )


@dataclass(frozen=True)
class Point:
    id: str
    at: str  # the checkpoint whose click is held ("start": the command itself; "restore")
    arm: Arm
    abort_at: str | None = None  # a restore: abort at this checkpoint, then click Restore
    helm: int = 4


def _p(point: Point) -> Any:
    return pytest.param(point, id=point.id)


CHECKPOINTS = ("flush_done", "pvc_list", "reinstall")
MGMT = "my-release-milvus"
HELM_POINTS = [
    _p(Point("flush1-persist", "start", hang("POST", _proxy(MGMT, 9091, "/api/v1/persist")))),
    _p(Point("flush1-persist-state", "start", hang("GET", _proxy(MGMT, 9091, "/api/v1/persist/state")))),
    _p(Point("flush-done-click-release-read", "flush_done", hang("GET", SECRETS))),
    _p(Point("flush2-persist", "flush_done", hang("POST", _proxy(MGMT, 9091, "/api/v1/persist")))),
    _p(Point("flush2-persist-state", "flush_done", hang("GET", _proxy(MGMT, 9091, "/api/v1/persist/state")))),
    _p(Point("backup-secret-create", "flush_done", hang("POST", SECRETS))),
    _p(Point("mid-helm-uninstall-helm4", "flush_done", hang("DELETE", STS + "/", bot_only=False))),
    _p(Point("mid-helm-uninstall-helm3", "flush_done", hang("DELETE", STS + "/", bot_only=False), helm=3)),
    _p(Point("after-uninstall-pvc-list", "flush_done", hang("GET", PVCS))),
    _p(Point("pvc-list-click-relist", "pvc_list", hang("GET", PVCS))),
    _p(Point("first-pvc-delete", "pvc_list", hang("DELETE", lambda r: rf"{PVCS[:-1]}/{r.pvcs[0]}$"))),
    _p(Point("after-first-pvc-delete", "pvc_list", hang("DELETE", lambda r: rf"{PVCS[:-1]}/{r.pvcs[1]}$"))),
    _p(Point("after-pvc-deletes-first-pv", "pvc_list", hang("DELETE", PV_ANY))),
    _p(Point("after-first-pv-delete", "pvc_list", hang("DELETE", PV_ANY, skip=1))),
    _p(Point("reinstall-click", "reinstall", hang("GET", SECRETS))),
    _p(Point("mid-helm-install-helm4", "reinstall", hang_sts_create)),
    _p(Point("mid-helm-install-helm3", "reinstall", hang_sts_create, helm=3)),
    _p(Point("after-helm-install-first-pod-list", "reinstall", hang("GET", PODS))),
    _p(Point("pod-wait", "reinstall", hold_pods("app=pulsarv3,release=my-release", "Installed `my-release`"))),
    _p(Point("verify-healthz", "reinstall", hang("GET", _proxy(MGMT, 9091, "/healthz")))),
    _p(Point("restore-click", "restore", hang("GET", SECRETS), abort_at="pvc_list")),
    _p(Point("mid-restore-helm-install", "restore", hang_sts_create, abort_at="pvc_list")),
]

OMGMT = "my-milvus-milvus"
CR = r"/apis/milvus.io/v1beta1/namespaces/default/milvuses/my-milvus$"
CRS = r"/apis/milvus.io/v1beta1/namespaces/default/milvuses$"
OPERATOR_POINTS = [
    _p(Point("flush1-persist-state", "start", hang("GET", _proxy(OMGMT, 9091, "/api/v1/persist/state")))),
    _p(Point("flush-done-click-cr-read", "flush_done", hang("GET", CR))),
    _p(Point("flush2-persist", "flush_done", hang("POST", _proxy(OMGMT, 9091, "/api/v1/persist")))),
    _p(Point("flush2-persist-state", "flush_done", hang("GET", _proxy(OMGMT, 9091, "/api/v1/persist/state")))),
    _p(Point("backup-secret-create", "flush_done", hang("POST", SECRETS))),
    _p(Point("pvc-list-click-relist", "pvc_list", hang("GET", PVCS))),
    _p(Point("cr-merge-patch", "pvc_list", hang("PATCH", CR))),
    _p(Point("after-patch-read-back", "pvc_list", hang("GET", CR, skip=1))),
    _p(Point("after-patch-cr-delete", "pvc_list", hang("DELETE", CR))),
    _p(Point("cr-deleting", "pvc_list", hold_operator)),
    _p(Point("cr-gone-first-pv-delete", "pvc_list", hang("DELETE", PV_ANY))),
    _p(Point("after-first-pv-delete", "pvc_list", hang("DELETE", PV_ANY, skip=1))),
    _p(Point("reinstall-click-cr-read", "reinstall", hang("GET", CR))),
    _p(Point("cr-create", "reinstall", hang("POST", CRS))),
    _p(Point("after-cr-create-first-pod-list", "reinstall", hang("GET", PODS))),
    _p(Point("healthy-wait", "reinstall", hold_pods("app=pulsar,release=my-milvus-pulsar", "Created the Milvus"))),
    _p(Point("verify-healthz", "reinstall", hang("GET", _proxy(OMGMT, 9091, "/healthz")))),
    _p(Point("mid-restore-cr-create", "restore", hang("POST", CRS), abort_at="reinstall")),
]


# ---------------------------------------------------------------------------------- driving


def _pvc_snapshot(world: World) -> dict[str, str]:
    return {
        f"{p['metadata']['namespace']}/{p['metadata']['name']}": p["metadata"]["uid"]
        for p in world.store.list("persistentvolumeclaims")
        if not p["metadata"].get("deletionTimestamp")
    }


def _bound_pvs(world: World, names: list[str]) -> list[str]:
    out = []
    for name in names:
        pvc = world.store.try_get("persistentvolumeclaims", NS, name)
        assert pvc is not None
        out.append(pvc["spec"]["volumeName"])
    return sorted(out)


def _drive(world: World, bot: BotProcess, point: Point, command: str, release: str, selector: str) -> Run:
    alice = person(world, bot)
    pvcs = sorted(n.split("/", 1)[1] for n in world.pvcs(NS, selector))
    assert len(pvcs) >= 2, pvcs
    run = Run(world, release, pvcs, _bound_pvs(world, pvcs), {"alice": alice})
    order = CHECKPOINTS
    if point.at == "start":
        held = point.arm(run)
        alice.type(command)
        later = list(order)
    else:
        alice.type(command)
        stop = point.abort_at or point.at
        for kind in order[: order.index(stop)]:
            alice.approve(kind)
        if point.abort_at:
            alice.click(alice.checkpoint(point.abort_at), "upgrade_abort")
        cp = alice.checkpoint(point.at)
        held = point.arm(run)
        alice.click(cp, "upgrade_approve")
        later = [] if point.abort_at else list(order[order.index(point.at) + 1 :])
    alice.wait(held, HELD_TIMEOUT, f"the bot to be held at {point.id}")
    bot.kill()
    for undo in run.marks.get("after_kill", []):
        undo()
    world.kube.clear_faults()
    bot.start()
    for ns, sel in run.marks.get("release_holds", []):
        world.cluster.release_unready(ns, sel)
    for kind in later:
        alice.approve(kind)
    return run


def _assert_deletes(run: Run, before: dict[str, str], cr_path: str | None, restored: bool) -> None:
    pvc_paths = {f"/api/v1/namespaces/{NS}/persistentvolumeclaims/{n}" for n in run.pvcs}
    pv_paths = {f"/api/v1/persistentvolumes/{n}" for n in run.pvs}
    done = collections.Counter(
        r.path
        for r in list(run.world.kube.requests)
        if r.method == "DELETE"
        and r.status in (200, 202)
        and re.search(r"/(persistentvolumeclaims|persistentvolumes|milvuses)/", r.path)
    )
    twice = {p: n for p, n in done.items() if n > 1}
    assert not twice, f"deleted more than once: {twice}"
    allowed = pvc_paths | pv_paths | ({cr_path} if cr_path else set())
    assert set(done) <= allowed, f"deleted outside the approved set: {sorted(set(done) - allowed)}"
    if restored:  # aborted before any deletion
        assert not set(done) & (pvc_paths | pv_paths), "a restore deleted volumes"
    else:
        if cr_path is not None:
            assert cr_path in done, "the Milvus resource was never deleted by the bot"
        else:
            assert set(done) >= pvc_paths, f"approved PVCs not deleted by the bot: {sorted(pvc_paths - set(done))}"
        assert set(done) >= pv_paths, f"PVs not deleted by the bot: {sorted(pv_paths - set(done))}"
    after = _pvc_snapshot(run.world)
    approved = {f"{NS}/{n}" for n in run.pvcs}
    lost = {k: v for k, v in before.items() if k not in approved and after.get(k) != v}
    assert not lost, f"PVCs outside the approved set changed: {sorted(lost)}"


def _assert_no_live_buttons(alice: Person) -> None:
    def clean() -> bool:
        return not any(has_button(m, "upgrade_approve") or has_button(m, "upgrade_abort") for m in alice.thread())

    alice.wait(clean, 15, "no checkpoint message left with live buttons")


def _release(world: World, name: str) -> HelmRelease | None:
    return find_release(world.store.list("secrets", NS, label_selector=f"owner=helm,name={name}"), name)


# ---------------------------------------------------------------------------------- Helm


@pytest.mark.parametrize("point", HELM_POINTS)
def test_helm_kill_point(point: Point, make_world: Callable[..., World], make_bot: Callable[..., BotProcess]) -> None:
    world = make_world("default", helm_major=point.helm, reclaim_policy="Retain")
    bot = make_bot(world)
    original = world.releases[(NS, "my-release")].values
    before = _pvc_snapshot(world)
    run = _drive(world, bot, point, "start my-release", "my-release", "app=pulsar,release=my-release")
    alice: Person = run.marks["alice"]
    if point.abort_at:
        alice.wait(lambda: "restored" in alice.root().text, 120, "the root to say restored")
        release = _release(world, "my-release")
        assert release is not None and release.status == "deployed" and release.config == original
    else:
        assert alice.outcome(timeout=120) == "succeeded"
        release = _release(world, "my-release")
        assert release is not None and release.status == "deployed"
        assert release.config == {**original, "pulsar": {"enabled": False}, "pulsarv3": {"enabled": True}}
        assert world.pvcs(NS, "app=pulsar,release=my-release") == []
    _assert_deletes(run, before, None, restored=point.abort_at == "pvc_list")
    _assert_no_live_buttons(alice)


# ---------------------------------------------------------------------------------- operator


def _expected_spec(original: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(original["spec"])
    pulsar = spec["dependencies"]["pulsar"]["inCluster"]
    pulsar["chartVersion"] = "pulsar-v3"
    pulsar["values"] = None
    return spec


@pytest.mark.parametrize("point", OPERATOR_POINTS)
def test_operator_kill_point(
    point: Point, make_world: Callable[..., World], make_bot: Callable[..., BotProcess]
) -> None:
    world = make_world("operator", reclaim_policy="Retain")
    bot = make_bot(world)
    original = world.releases[(NS, "my-milvus")].values
    before = _pvc_snapshot(world)
    run = _drive(world, bot, point, "start my-milvus", "my-milvus", "app=pulsar,release=my-milvus-pulsar")
    alice: Person = run.marks["alice"]
    if point.abort_at:
        alice.wait(lambda: "restored" in alice.root().text, 120, "the root to say restored")
        cr = world.store.try_get("milvuses.milvus.io", NS, "my-milvus")
        assert cr is not None and cr["spec"] == original["spec"]
    else:
        assert alice.outcome(timeout=120) == "succeeded"
        cr = world.store.try_get("milvuses.milvus.io", NS, "my-milvus")
        assert cr is not None
        assert cr["spec"] == _expected_spec(original)
    cr_path = f"/apis/milvus.io/v1beta1/namespaces/{NS}/milvuses/my-milvus"
    _assert_deletes(run, before, cr_path, restored=point.abort_at == "pvc_list")
    _assert_no_live_buttons(alice)
