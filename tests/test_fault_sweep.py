"""A 429 and a hang on every distinct call the bot makes, Kubernetes and Milvus, on both paths.

How: one clean upgrade per path (a module fixture) lists the distinct kinds of request the
bot itself made: (method, path with PVC and PV names generalised, watch or not). The bot's
requests are told from helm's by their User-Agent: its Kubernetes client sends
``OpenAPI-Generator/<version>/python``, its Milvus client (httpx, through the API server's
service proxy, the default) ``python-httpx/<version>``, helm ``Helm/<version>``; any other
client fails the derivation. Faults are narrowed to the bot's User-Agents, so helm's own
requests to the same paths are never caught. Then, per path, ONE more upgrade per fault kind
with one fault armed for every kind at once, each catching a single request:

- 429 Too Many Requests with ``Retry-After: 1`` (what the API server's priority and fairness
  answers): the upgrade must end ``succeeded`` with nobody clicking Retry, and every fault
  must have caught its request (``Fault.hits``);
- a hang of an hour, far past the bot's KUBE_REQUEST_TIMEOUT_SECONDS=1 (a hung request is
  never applied by the sandbox): the upgrade must end ``succeeded``; a step that runs out of
  automatic retries may stop with an error saying which call did not answer, and Retry
  (clicked by the test, a bounded number of times) must carry on. Each hung call must be given
  up by the bot within its timeout: the bot's next request comes at most the timeout plus the
  longest automatic backoff (8 s) later;
- Milvus' own error answer on each distinct Milvus endpoint (``MilvusSim.fail_next`` with a
  retriable "service not ready" status, as a Milvus whose proxy restarts answers): ends
  ``succeeded``, a stop showing Milvus' reason with Retry allowed.

Every run also checks what the crash matrix checks: every approved PVC and PV deleted exactly
once, nothing else deleted, no live buttons left, the final values (Helm) or spec (operator).

The pod waits and the operator's CR deletion are made to watch deterministically (pods kept
unready, the operator kept unready, until the bot's watch is seen or its fault caught), so
that the watch kinds are in every run.

Watches are in the 429 sweep but not in the hang sweep: a watch's connection that breaks is
resumed from the last resourceVersion (tests/test_cluster_faults.py, the cut-watch test, which
also checks that every watch asks the server to end it with ``timeoutSeconds``), and a watch
read has its own client timeout (timeoutSeconds + 5 s), so a hung watch costs a whole watch
chunk (20 s) and proves nothing more.
"""

from __future__ import annotations

import collections
import copy
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import redis

from sandbox.botproc import BotProcess
from sandbox.kube.server import Fault, KubeApiServer, RequestRecord
from sandbox.milvus import CODE_SERVICE_NOT_READY, EC_NOT_READY_SERVE
from sandbox.redis_server import RedisServer, free_port
from sandbox.slack.blocks import render_blocks
from sandbox.slack.model import Message
from sandbox.world import CHANNEL, World
from tests.conftest import person
from tests.scenario import OUTCOMES, Person, has_button
from tests.test_crash_matrix import (
    OPERATOR_NS,
    OPERATOR_PODS,
    Run,
    _assert_deletes,
    _assert_no_live_buttons,
    _bound_pvs,
    _expected_spec,
    _pvc_snapshot,
    _ready,
    _release,
)

NS = "default"
BOT_AGENT = r"^(OpenAPI-Generator|python-httpx)/"
HELM_AGENT = "Helm/"
TIMEOUT = 1  # KUBE_REQUEST_TIMEOUT_SECONDS of the hang sweep
HANG = 3600.0  # only the bot's own timeout ends a hung call
LONGEST_BACKOFF = 8.0  # the engine's third automatic retry of a step comes 8 s after the failure
STEP_WAIT = 90.0  # the longest the test waits for the next thing to happen in the thread
NAMED = re.compile(r"^(/api/v1(?:/namespaces/[^/]+)?/(?:persistentvolumeclaims|persistentvolumes))/[^/]+$")
PROXY = re.compile(r"/services/[^/]+:(\d+)/proxy(/.*)$")


@dataclass(frozen=True)
class Kind:
    """One kind of request the bot makes: method, anchored path regex, watch or not."""

    method: str
    path: str
    watch: bool

    @property
    def milvus_route(self) -> str | None:
        """The Milvus route (e.g. ``/api/v1/persist``) of a request through the service proxy."""
        m = PROXY.search(self.path.replace("\\", "").rstrip("$"))
        return m.group(2) if m else None

    def __str__(self) -> str:
        return f"{self.method} {self.path}{' (watch)' if self.watch else ''}"


@dataclass(frozen=True)
class PathSpec:
    seed: str
    command: str
    release: str
    pvc_selector: str
    pods_selector: str  # the new Pulsar's pods, kept unready until the bot watches them
    operator: bool


HELM = PathSpec("default", "start my-release", "my-release", "app=pulsar,release=my-release",
                "app=pulsarv3,release=my-release", False)  # fmt: skip
OPERATOR = PathSpec("operator", "start my-milvus", "my-milvus", "app=pulsar,release=my-milvus-pulsar",
                    "app=pulsar,release=my-milvus-pulsar", True)  # fmt: skip


def _is_watch(r: RequestRecord) -> bool:
    return r.query.get("watch", "").lower() in ("1", "true")


def _bot_requests(world: World, since: int = 0) -> list[RequestRecord]:
    """The bot's own requests in ``world``'s log from index ``since`` (helm's left out; any
    third client is a failure: the derivation would not know whose it is)."""
    out = []
    for r in list(world.kube.requests)[since:]:
        if re.search(BOT_AGENT, r.user_agent):
            out.append(r)
        else:
            assert r.user_agent.startswith(HELM_AGENT), f"a request from an unknown client: {r.user_agent!r} {r.path}"
    return out


def kind_of(r: RequestRecord) -> Kind:
    m = NAMED.match(r.path)
    path = re.escape(m.group(1)) + "/[^/]+" if m else re.escape(r.path)
    return Kind(r.method, f"^{path}$", _is_watch(r))


# ---------------------------------------------------------------------------------- driving


def _cp_kind(msg: Message) -> str:
    for block in msg.blocks:
        block_id = str(block.get("block_id", ""))
        if block.get("type") == "actions" and block_id.startswith("cp:"):
            return block_id[3:].rsplit("-", 1)[0]
    return ""


@dataclass
class Drive:
    """Approve every checkpoint as it opens, click Retry on errors (at most ``retries``), run
    the ``pending`` (condition, action) pairs as their conditions come true; until the end."""

    alice: Person
    retries: int
    before_approve: dict[str, Callable[[], None]] = field(default_factory=dict)
    pending: list[tuple[Callable[[], bool], Callable[[], None]]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    clicked: set[str] = field(default_factory=set)

    def run(self) -> str:
        while True:
            found: dict[str, Any] = {}
            self.alice.wait(lambda: self._next(found), STEP_WAIT, "a checkpoint, an error or the end")  # noqa: B023
            if "outcome" in found:
                return str(found["outcome"])
            msg: Message = found["msg"]
            self.clicked.add(msg.ts)
            if found["what"] == "error":
                text = msg.text + "\n" + "\n".join(render_blocks(msg.blocks))
                self.errors.append(text)
                assert len(self.errors) <= self.retries, f"stopped with an error (Retry #{len(self.errors)}):\n{text}"
                self.alice.click(msg, "upgrade_retry")
            else:
                hook = self.before_approve.pop(_cp_kind(msg), None)
                if hook is not None:
                    hook()
                self.alice.click(msg, "upgrade_approve")

    def _next(self, found: dict[str, Any]) -> bool:
        for cond, action in list(self.pending):
            if cond():
                self.pending.remove((cond, action))
                action()
        if not self.alice.world.slack.messages(CHANNEL):  # not posted yet, or never: refused at the start
            refused = [t for t in self.alice.ephemerals() if "Not started" in t]
            assert not refused, f"the upgrade was not even started: {refused}"
            return False
        text = self.alice.root().text
        words = [w for w in OUTCOMES if w in text]
        if words:
            assert len(words) == 1, text
            found["outcome"] = words[0]
            return True
        for m in self.alice.thread()[1:]:
            if m.ts in self.clicked:
                continue
            if has_button(m, "upgrade_retry"):
                found.update(msg=m, what="error")
                return True
            if has_button(m, "upgrade_approve") and _cp_kind(m):
                found.update(msg=m, what="checkpoint")
                return True
        return False


def _watched(world: World, regex: str, since: int) -> Callable[[], bool]:
    pattern = re.compile(regex)
    return lambda: any(
        _is_watch(r) and pattern.search(r.path) and re.search(BOT_AGENT, r.user_agent)
        for r in list(world.kube.requests)[since:]
    )


def _arm_holds(world: World, spec: PathSpec, drive: Drive, watch_faults: dict[str, Fault]) -> None:
    """Make the pod wait (and the operator's CR deletion) watch: keep the pods (the operator)
    unready from the click before, until the bot's watch was seen (or its fault caught it)."""

    def hold_pods() -> None:
        since = len(world.kube.requests)
        world.cluster.hold_unready(NS, spec.pods_selector)
        fault = watch_faults.get("pods")
        cond = (lambda: fault.hits > 0) if fault is not None else _watched(world, r"/namespaces/default/pods$", since)
        drive.pending.append((cond, lambda: world.cluster.release_unready(NS, spec.pods_selector)))

    drive.before_approve["reinstall"] = hold_pods
    if not spec.operator:
        return

    def hold_operator() -> None:
        since = len(world.kube.requests)
        world.cluster.hold_unready(OPERATOR_NS, OPERATOR_PODS)
        drive.alice.wait(
            lambda: not any(_ready(p) for p in world.pods(OPERATOR_NS, OPERATOR_PODS)),
            30,
            "the operator pod to be unready",
        )
        fault = watch_faults.get("milvuses")
        cond = (lambda: fault.hits > 0) if fault is not None else _watched(world, r"/milvuses$", since)
        drive.pending.append((cond, lambda: world.cluster.release_unready(OPERATOR_NS, OPERATOR_PODS)))

    drive.before_approve["pvc_list"] = hold_operator


@dataclass
class Upgrade:
    world: World
    run: Run
    before: dict[str, str]
    original: dict[str, Any]
    since: int


def _begin(world: World, bot: BotProcess, spec: PathSpec) -> tuple[Upgrade, Person]:
    alice = person(world, bot)
    pvcs = sorted(n.split("/", 1)[1] for n in world.pvcs(NS, spec.pvc_selector))
    run = Run(world, spec.release, pvcs, _bound_pvs(world, pvcs), {"alice": alice})
    up = Upgrade(world, run, _pvc_snapshot(world), copy.deepcopy(world.releases[(NS, spec.release)].values), 0)
    up.since = len(world.kube.requests)
    return up, alice


def _check_end(up: Upgrade, spec: PathSpec, alice: Person) -> None:
    world = up.world
    if spec.operator:
        cr = world.store.try_get("milvuses.milvus.io", NS, spec.release)
        assert cr is not None and cr["spec"] == _expected_spec(up.original)
        cr_path: str | None = f"/apis/milvus.io/v1beta1/namespaces/{NS}/milvuses/{spec.release}"
    else:
        release = _release(world, spec.release)
        assert release is not None and release.status == "deployed"
        assert release.config == {**up.original, "pulsar": {"enabled": False}, "pulsarv3": {"enabled": True}}
        cr_path = None
    now = _pvc_snapshot(world)  # the operator's Pulsar V3 claims carry the same labels: compare uids
    assert not [n for n in up.run.pvcs if now.get(f"{NS}/{n}") == up.before[f"{NS}/{n}"]], "a Pulsar V2 PVC is left"
    _assert_deletes(up.run, up.before, cr_path, restored=False)
    _assert_no_live_buttons(alice)


# ---------------------------------------------------------------------------------- the clean runs


def _world(tmp: Any, spec: PathSpec) -> World:
    w = World(str(tmp), reclaim_policy="Retain").start()
    try:
        w.seed_operator() if spec.operator else w.seed_default()
    except BaseException:
        w.stop()
        raise
    return w


def _clean_kinds(spec: PathSpec, redis_server: RedisServer, tmp: Any) -> list[Kind]:
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()
    redis.Redis.from_url(redis_server.url).flushall()
    world = _world(tmp, spec)
    bot = BotProcess(world.bot_env(redis_server.url, free_port()), f"{tmp}/bot-clean.log")
    try:
        bot.start()
        up, alice = _begin(world, bot, spec)
        drive = Drive(alice, retries=0)
        _arm_holds(world, spec, drive, {})
        alice.type(spec.command)
        assert drive.run() == "succeeded"
        _check_end(up, spec, alice)
        requests = _bot_requests(world, up.since)
    finally:
        bot.stop()
        world.stop()
    kinds = list(dict.fromkeys(kind_of(r) for r in requests))
    assert any(k.watch for k in kinds), "the clean run never watched: the watch kinds would be missed"
    return kinds


@pytest.fixture(scope="module")
def helm_kinds(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> list[Kind]:
    return _clean_kinds(HELM, redis_server, tmp_path_factory.mktemp("clean-helm"))


@pytest.fixture(scope="module")
def operator_kinds(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> list[Kind]:
    return _clean_kinds(OPERATOR, redis_server, tmp_path_factory.mktemp("clean-operator"))


def test_the_clean_runs_saw_every_kind_of_call(helm_kinds: list[Kind], operator_kinds: list[Kind]) -> None:
    """The derivation itself: both clients, both ports of Milvus, the watches and the deletes."""
    for kinds in (helm_kinds, operator_kinds):
        shown = "\n".join(map(str, kinds))
        routes = {k.milvus_route for k in kinds} - {None}
        assert routes == {
            "/api/v1/health",
            "/api/v1/collections",
            "/api/v1/persist",
            "/api/v1/persist/state",
            "/healthz",
            "/v2/vectordb/databases/list",
            "/v2/vectordb/collections/get_stats",
            "/v2/vectordb/collections/get_load_state",
        }, shown
        assert any(k.method == "DELETE" and "persistentvolumes/" in k.path for k in kinds), shown
        assert any(k.watch and k.path.endswith("/pods$") for k in kinds), shown
    assert any(k.method == "DELETE" and "persistentvolumeclaims/" in k.path for k in helm_kinds)
    assert any(k.watch and k.path.endswith("/milvuses$") for k in operator_kinds)
    assert {k.method for k in operator_kinds} >= {"GET", "POST", "PATCH", "DELETE"}


# ---------------------------------------------------------------------------------- the sweeps


def _arm(world: World, kinds: list[Kind], **fault: Any) -> dict[Kind, Fault]:
    return {
        k: world.kube.inject_fault(k.method, k.path, count=1, user_agent=BOT_AGENT, watch=k.watch, **fault)
        for k in kinds
    }


def _watch_faults(faults: dict[Kind, Fault]) -> dict[str, Fault]:
    out = {}
    for k, f in faults.items():
        if k.watch:
            out["pods" if k.path.endswith("/pods$") else "milvuses"] = f
    return out


def _sweep(
    spec: PathSpec,
    kinds: list[Kind],
    make_world: Callable[..., World],
    make_bot: Callable[..., BotProcess],
    retries: int,
    env: dict[str, str] | None = None,
    **fault: Any,
) -> tuple[Upgrade, Drive, dict[Kind, Fault]]:
    world = make_world(spec.seed, reclaim_policy="Retain")
    bot = make_bot(world, **(env or {}))
    up, alice = _begin(world, bot, spec)
    faults = _arm(world, kinds, **fault)
    drive = Drive(alice, retries=retries)
    _arm_holds(world, spec, drive, _watch_faults(faults) if not fault.get("hang_seconds") else {})
    alice.type(spec.command)
    outcome = drive.run()
    missed = [str(k) for k, f in faults.items() if f.hits != 1]
    errors = "\n---\n".join(drive.errors)
    assert outcome == "succeeded", f"ended {outcome!r}; errors shown:\n{errors}\n{alice.root().text}"
    assert not missed, "faults that caught no request:\n" + "\n".join(missed)
    _check_end(up, spec, alice)
    return up, drive, faults


@pytest.mark.parametrize("spec", [HELM, OPERATOR], ids=["helm", "operator"])
def test_a_429_on_every_call_is_retried_by_itself(
    spec: PathSpec,
    request: pytest.FixtureRequest,
    make_world: Callable[..., World],
    make_bot: Callable[..., BotProcess],
) -> None:
    kinds: list[Kind] = request.getfixturevalue("operator_kinds" if spec.operator else "helm_kinds")
    up, _drive, faults = _sweep(spec, kinds, make_world, make_bot, retries=0, status=429)
    statuses = collections.Counter(r.status for r in _bot_requests(up.world, up.since))
    assert statuses[429] == len(faults)


def _gaps(up: Upgrade, faults: dict[Kind, Fault]) -> dict[str, float]:
    """For each hung request: how long until the bot's next request (it gave up on the hung one)."""
    requests = _bot_requests(up.world, up.since)
    out = {}
    for kind in faults:
        pattern = re.compile(kind.path)
        hung = next(r for r in requests if r.method == kind.method and pattern.search(r.path) and not _is_watch(r))
        later = [r.time for r in requests if r.time > hung.time]
        out[str(kind)] = (later[0] if later else float("inf")) - hung.time
    return out


@pytest.mark.parametrize("spec", [HELM, OPERATOR], ids=["helm", "operator"])
def test_a_hang_on_every_call_is_cut_by_the_timeout_and_the_upgrade_goes_on(
    spec: PathSpec,
    request: pytest.FixtureRequest,
    make_world: Callable[..., World],
    make_bot: Callable[..., BotProcess],
) -> None:
    kinds: list[Kind] = request.getfixturevalue("operator_kinds" if spec.operator else "helm_kinds")
    unary = [k for k in kinds if not k.watch]
    env = {"KUBE_REQUEST_TIMEOUT_SECONDS": str(TIMEOUT)}
    up, drive, faults = _sweep(spec, unary, make_world, make_bot, retries=len(unary), env=env, hang_seconds=HANG)
    for text in drive.errors:  # every stop said which call did not answer
        assert "did not answer" in text or "ReadTimeout" in text, text
    slow = {k: round(g, 1) for k, g in _gaps(up, faults).items() if g > TIMEOUT + LONGEST_BACKOFF + 4}
    assert not slow, f"hung calls the bot waited on longer than its {TIMEOUT}s timeout (s until its next call): {slow}"


def test_a_milvus_error_on_every_endpoint_is_retried(
    helm_kinds: list[Kind], make_world: Callable[..., World], make_bot: Callable[..., BotProcess]
) -> None:
    routes = sorted({route for k in helm_kinds if (route := k.milvus_route) is not None})
    world = make_world("default", reclaim_policy="Retain")
    bot = make_bot(world)
    up, alice = _begin(world, bot, HELM)
    milvus = world.milvus(HELM.release)
    reason = "service not ready[proxy=1][state=Abnormal]"
    for route in routes:
        milvus.fail_next(
            route, reason=reason, code=CODE_SERVICE_NOT_READY, error_code=EC_NOT_READY_SERVE, retriable=True
        )
    drive = Drive(alice, retries=len(routes))
    _arm_holds(world, HELM, drive, {})
    alice.type(HELM.command)
    outcome = drive.run()
    errors = "\n---\n".join(drive.errors)
    assert outcome == "succeeded", f"ended {outcome!r}; errors shown:\n{errors}\n{alice.root().text}"
    failed = {r.path for r in milvus.requests if r.status != 200 or reason in str(r.response)}
    assert failed == set(routes), f"endpoints whose error was not answered: {set(routes) - failed}"
    for text in drive.errors:
        assert "service not ready" in text, text
    _check_end(up, HELM, alice)


# ---------------------------------------------------------------------------------- the sandbox's part


def test_sandbox_faults_narrowed_by_client_and_watch_and_counted(server: KubeApiServer) -> None:
    """What the sweeps rely on: a fault catches only its User-Agent and watch-or-not, counts its
    hits, and a 429 carries Retry-After (1 unless the fault says)."""
    server.store.ensure_namespace("default")
    path = r"^/api/v1/namespaces/default/configmaps$"
    bot_fault = server.inject_fault("GET", path, status=429, user_agent=BOT_AGENT, watch=False)
    later = server.inject_fault("GET", path, status=503, retry_after=7)
    url = f"{server.url}/api/v1/namespaces/default/configmaps"
    headers = {"Authorization": f"Bearer {server.token}"}
    with httpx.Client(verify=server.ssl_context(), headers=headers, timeout=5) as http:
        assert http.get(url, headers={"User-Agent": "Helm/4.1.4"}).status_code == 503  # not the bot's fault
        assert (bot_fault.hits, later.hits) == (0, 1)
        watch = http.get(url, params={"watch": "true", "timeoutSeconds": "1"}, headers={"User-Agent": "python-httpx/1"})
        assert watch.status_code == 200 and bot_fault.hits == 0  # a watch: not this fault's
        answer = http.get(url, headers={"User-Agent": "OpenAPI-Generator/37.0.2/python"})
        assert answer.status_code == 429 and answer.headers["Retry-After"] == "1"
        assert bot_fault.hits == 1 and bot_fault.remaining == 0
        again = server.inject_fault("GET", path, status=503, retry_after=7)
        assert http.get(url).headers["Retry-After"] == "7" and again.hits == 1
        assert http.get(url).status_code == 200
