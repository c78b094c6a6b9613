"""The chart's RBAC, proven from the Kubernetes requests of real runs (and the Slack scopes too).

The runs happen under the chart's RBAC, enforced by the sandbox's API server as the real RBAC
authorizer does: once the world's own setup (its helm installs, as the cluster admin) is done,
the Roles, ClusterRoles and bindings of the chart rendered by the run's helm are created in the
cluster, the bot's kubeconfig carries a token of the chart's ServiceAccount
(``system:serviceaccount:ops:upgrade-bot``), and RBAC is enforced (``KubeApiServer.enforce_rbac``,
with the default policy every cluster has: access and rules reviews and discovery for every
authenticated user). So every request below was really authorized by those rules (escalation
prevention on the Roles helm writes included), and the analysis that follows re-derives it.

The module runs, once, against the sandbox with the real bot process and the real helm: with
Helm 4 (the image's helm) a whole Helm-path upgrade (with pods held unready during the wait, so
that the not-Ready report reads the pods' events, then Retry), an abort at the PVC list and a
restore, a whole operator-path upgrade, the ``status``, ``list``, ``audit`` and ``scan``
commands; with Helm 3 a Helm-path upgrade and an abort + restore, on volumes whose reclaim
policy keeps the PVs (so the bot deletes them itself). Every request that reached the API server
is mapped, as the real API server does, to (apiGroup, resource[/subresource], verb,
namespace or cluster): GET of a name is get, of a collection list, with ``watch=true`` watch;
POST create; PUT update; PATCH patch (and create too when a server-side apply created the
object: the real server checks both); DELETE of a name delete, of a collection deletecollection;
the service proxy by method on ``services/proxy``. Clients are told apart by User-Agent: the
bot's kubernetes client (``OpenAPI-Generator/``), its helm (``Helm/``), its Milvus httpx client
through the service proxy (``python-httpx/``). Nothing here imports the bot to decide.

Against the chart rendered by the real ``helm template`` (``targetNamespaces`` = the namespaces
of the runs), it asserts: every request is allowed by the Roles and ClusterRoles bound to the
bot's ServiceAccount; every verb of every resource of every rule is used by some request (no
unused grant); every Role (and RoleBinding to it) that helm creates grants nothing the bot does
not hold (RBAC escalation prevention would refuse it); every SelfSubjectAccessReview the bot asks
is granted and the preflight passes (the scripted outcomes happen, no "not allowed" refusal),
with one SelfSubjectRulesReview per namespace and access reviews only for cluster-scoped checks;
discovery and OpenAPI requests are those every authenticated user may make; ``scan`` outside
``targetNamespaces`` (refused there by the enforced RBAC) names those namespaces and still
answers. And the Slack apps' manifests: the runs' Slack grants exactly the manifest's bot scopes,
no call lacks one, and each scope is needed by a call (``commands`` by the command).
"""

from __future__ import annotations

import re
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from sandbox.botproc import BotProcess
from sandbox.kube.rbac import service_account
from sandbox.kube.server import RequestRecord
from sandbox.redis_server import RedisServer, free_port
from sandbox.slack import ApiCall, SlackClient
from sandbox.slack.api import METHODS as SLACK_METHODS
from sandbox.slack.blocks import render_blocks
from sandbox.world import CHANNEL, GROUP_OPERATOR, SIGNING_SECRET, World, seed_data
from tests.chart_render import ROOT, render
from tests.scenario import OUTCOMES, Person

TARGETS = ["default", "staging"]  # where the runs' Milvus installations live
CHART_VALUES: dict[str, Any] = {
    "operators": "U0ALICE,S0OPS",
    "targetNamespaces": TARGETS,
    "slack": {"existingSecret": "s"},
}
RBAC_KINDS = {
    "Role": "roles.rbac.authorization.k8s.io",
    "ClusterRole": "clusterroles.rbac.authorization.k8s.io",
    "RoleBinding": "rolebindings.rbac.authorization.k8s.io",
    "ClusterRoleBinding": "clusterrolebindings.rbac.authorization.k8s.io",
    "ServiceAccount": "serviceaccounts",
}
BOT_KUBE_TOKEN = "sandbox-upgrade-bot-serviceaccount-token"
# The top-level message of each upgrade of a run, in order, and how it ends (as scripted).
SCRIPTED_OUTCOMES = {4: ["succeeded", "aborted", "succeeded"], 3: ["succeeded", "aborted"]}
# Resources every authenticated user may use without a grant of the chart (the default
# ClusterRole system:basic-user). None: the chart grants the rules and access reviews itself too,
# so that preflight works where that default binding was removed.
PUBLIC_RESOURCES: set[tuple[str, str, str]] = set()
AGENTS = {"OpenAPI-Generator": "the bot", "Helm": "the bot's helm", "python-httpx": "the bot's Milvus client"}
MANIFESTS = {"http": ROOT / "slack-app-manifest.yaml", "socket": ROOT / "slack-app-manifest-socket-mode.yaml"}
UPGRADE_ID = re.compile(r"\b\d{8}-\d{6}-[0-9a-f]{6}\b")

# Grants that no run exercises, each with why it is still needed. Empty: every grant is used.
ALLOWED_UNUSED: dict[tuple[str, str, str], str] = {}

# Non-resource URLs every authenticated user may GET (the built-in ClusterRoles system:discovery
# and system:public-info-viewer, bound to system:authenticated): no rule of the chart is needed.
PUBLIC_PATHS = ("/api", "/apis", "/openapi", "/version", "/healthz", "/livez", "/readyz")


# --- the runs -------------------------------------------------------------------------------


class _Upgrade(Person):
    """A person following the ``nth`` upgrade of the channel (``Person`` follows the first)."""

    def __init__(self, world: World, client: SlackClient, nth: int) -> None:
        super().__init__(world, client)
        self.nth = nth

    def root(self, timeout: float = 15.0) -> Any:
        self.world.slack.wait_for(lambda: len(self.world.slack.messages(CHANNEL)) > self.nth, timeout)
        return self.world.slack.messages(CHANNEL)[self.nth]

    def upgrade_id(self) -> str:
        root = self.root()
        shown = "\n".join([root.text, *render_blocks(root.blocks)])
        found = UPGRADE_ID.search(shown)
        assert found, shown
        return found.group(0)


@dataclass
class Run:
    helm_major: int
    requests: list[RequestRecord]
    slack_calls: list[ApiCall]
    scopes: tuple[str, ...]
    needed_scopes: Counter[str] = field(default_factory=Counter)
    denied_namespaces: set[str] = field(default_factory=set)  # the chart's RBAC refuses the bot there
    scan_answer: str = ""
    bot_user: str = ""  # the identity the bot's token authenticates as
    kubeconfig: str = ""  # the bot's (its ServiceAccount's token)
    roots: list[str] = field(default_factory=list)  # each upgrade's top-level message
    channel_text: str = ""  # every message and reply of the channel, blocks rendered


def _manifest_scopes(path: Path) -> list[str]:
    return list(yaml.safe_load(path.read_text(encoding="utf-8"))["oauth_config"]["scopes"]["bot"])


def _enforce_chart_rbac(world: World, helm_major: int, workdir: Path, run: Run) -> None:
    """Create the chart's ServiceAccount, Roles, ClusterRoles and bindings (as ``helm install``
    of the chart by an admin would), give the bot a token of that ServiceAccount, and enforce
    RBAC from here on (the world's own token stays a cluster admin, ``system:masters``)."""
    docs = [d for d in render(helm_major, CHART_VALUES) if d["kind"] in RBAC_KINDS]
    sa = next(d for d in docs if d["kind"] == "ServiceAccount")
    for doc in docs:
        namespace = doc["metadata"].get("namespace")
        if namespace:
            world.store.ensure_namespace(namespace)
        world.store.create(RBAC_KINDS[doc["kind"]], doc, namespace)
    who = service_account(sa["metadata"]["namespace"], sa["metadata"]["name"])
    world.kube.add_token(BOT_KUBE_TOKEN, who.user, who.groups)
    run.bot_user = who.user
    run.kubeconfig = world.kube.write_kubeconfig(str(workdir / "bot-kubeconfig"), token=BOT_KUBE_TOKEN)
    Path(run.kubeconfig).chmod(0o600)
    world.kube.enforce_rbac()


def _start_world(workdir: Path, helm_major: int, seed: str, run: Run, reclaim_policy: str = "Delete") -> World:
    workdir.mkdir(parents=True, exist_ok=True)
    world = World(str(workdir), helm_major=helm_major, reclaim_policy=reclaim_policy).start()
    # A deleted claim stays Terminating a moment, as behind the real pvc-protection controller,
    # so the bot's PVC wait always goes on to its watch (with 0 s the claims could be gone by the
    # first list, and the watch verb granted for that wait would go unused in a run).
    world.cluster.config.pvc_release_seconds = 1.5
    if seed == "operator":
        world.seed_operator()  # default/my-milvus (operator) and default/other-release (Helm)
        staging = world.install("my-release", "staging")
        seed_data(staging.milvus)
    else:
        world.seed_default()  # default/my-release, default/other-release, staging/my-release
    world.settle()
    _enforce_chart_rbac(world, helm_major, workdir, run)
    # From here on the only Slack is the one the manifest describes, and the only client of the
    # API server is the bot, as the chart's ServiceAccount (the world's own helm installed the
    # releases above, as an admin).
    world.slack.scopes = tuple(_manifest_scopes(MANIFESTS["http"]))
    world.kube.clear_requests()
    return world


def _helm_upgrade(p: _Upgrade, release: str, pods_held: str | None = None) -> None:
    p.type(f"start {release}")
    p.approve("flush_done")
    p.approve("pvc_list")
    if pods_held:
        p.world.cluster.hold_unready("default", pods_held, reason="Readiness probe failed: bookie not up")
    p.approve("reinstall")
    if pods_held:
        error = p.error_message(timeout=60)
        shown = "\n".join(render_blocks(error.blocks))
        assert "not every pod is Ready" in shown and "bookie not up" in shown, shown  # the pods' events
        p.world.cluster.release_unready("default", pods_held)
        p.click(error, "upgrade_retry")
    assert p.outcome(timeout=120) == "succeeded"


def _abort_and_restore(p: _Upgrade, release: str, namespace: str) -> None:
    p.type(f"start {release} --namespace {namespace}")
    p.approve("flush_done")
    p.click(p.checkpoint("pvc_list"), "upgrade_abort")
    assert p.outcome() == "aborted"
    p.approve("restore")
    p.wait(lambda: "restored" in p.root().text, 90, "the restore")


def _operator_upgrade(p: _Upgrade, name: str) -> None:
    p.type(f"start {name}")
    p.approve("flush_done")
    p.approve("pvc_list")
    p.approve("reinstall")
    assert p.outcome(timeout=120) == "succeeded"


def _commands(world: World, client: SlackClient, upgrade_id: str) -> None:
    p = _Upgrade(world, client, 0)
    p.type(f"status {upgrade_id}")
    p.wait_ephemeral(upgrade_id)
    p.type("list")
    p.wait_ephemeral("ended")
    p.type(f"audit {upgrade_id}")
    p.wait_ephemeral("Attached the audit trail", timeout=30)


def _scan(world: World, client: SlackClient, run: Run) -> None:
    """``scan`` of every namespace: outside TARGETS the chart's RBAC (enforced) refuses it."""
    namespaces = {n["metadata"]["name"] for n in world.store.list("namespaces")}
    run.denied_namespaces = namespaces - set(TARGETS)
    assert run.denied_namespaces, namespaces
    bob = Person(world, client, GROUP_OPERATOR)  # an operator through his user group (usergroups.users.list)
    bob.type("scan")
    run.scan_answer = bob.wait_ephemeral("*Scan*", timeout=60)


def _bot(world: World, run: Run, redis_url: str, log: Path, **env: str) -> BotProcess:
    """The bot, with the kubeconfig of the chart's ServiceAccount (its helm uses it too)."""
    return BotProcess(world.bot_env(redis_url, free_port(), KUBECONFIG=run.kubeconfig, **env), str(log)).start()


def _finish(world: World, run: Run) -> Run:
    roots = world.slack.messages(CHANNEL)
    run.roots = [m.text for m in roots]
    shown = []
    for root in roots:
        for m in world.slack.thread(CHANNEL, root.ts):
            shown += [m.text, *render_blocks(m.blocks)]
    run.channel_text = "\n".join(shown)
    run.requests = list(world.kube.requests)
    run.slack_calls = list(world.slack.calls)
    for call in run.slack_calls:
        needed = world.slack.api.needed_scope(call.method, call.args) if call.method in SLACK_METHODS else None
        if needed:
            run.needed_scopes[needed] += 1
    return run


def _run_helm4(workdir: Path, redis_url: str) -> Run:
    run = Run(4, [], [], ())
    world = _start_world(workdir, 4, "operator", run)
    run.scopes = world.slack.scopes
    try:
        # A short pod timeout for the first upgrade only, whose pods are held unready.
        bot_a = _bot(world, run, redis_url, workdir / "bot-a.log", UPGRADE_PODS_TIMEOUT_SECONDS="5")
        try:
            client = SlackClient(world.slack, bot_a.events_url, SIGNING_SECRET)
            held = "app=pulsarv3,release=other-release,component=bookie"
            _helm_upgrade(_Upgrade(world, client, 0), "other-release", held)
        finally:
            bot_a.stop()
        bot = _bot(world, run, redis_url, workdir / "bot-b.log")  # the default pod timeout from here on
        try:
            client = SlackClient(world.slack, bot.events_url, SIGNING_SECRET)
            _abort_and_restore(_Upgrade(world, client, 1), "my-release", "staging")
            operator = _Upgrade(world, client, 2)
            _operator_upgrade(operator, "my-milvus")
            _commands(world, client, operator.upgrade_id())
            _scan(world, client, run)
        finally:
            bot.stop()
        return _finish(world, run)
    finally:
        world.stop()


def _run_helm3(workdir: Path, redis_url: str) -> Run:
    # PVs that are Retained when their claim goes: the bot deletes them itself (uid precondition).
    run = Run(3, [], [], ())
    world = _start_world(workdir, 3, "default", run, reclaim_policy="Retain")
    run.scopes = world.slack.scopes
    try:
        bot = _bot(world, run, redis_url, workdir / "bot.log")
        try:
            client = SlackClient(world.slack, bot.events_url, SIGNING_SECRET)
            _helm_upgrade(_Upgrade(world, client, 0), "my-release")
            _abort_and_restore(_Upgrade(world, client, 1), "my-release", "staging")
        finally:
            bot.stop()
        return _finish(world, run)
    finally:
        world.stop()


@pytest.fixture(scope="module")
def runs(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[int, Run]]:
    out: dict[int, Run] = {}
    for major, runner in ((4, _run_helm4), (3, _run_helm3)):
        if redis_server.proc is None or redis_server.proc.poll() is not None:
            redis_server.start()
        redis.Redis.from_url(redis_server.url).flushall()
        started = time.monotonic()
        out[major] = runner(tmp_path_factory.mktemp(f"rbac-helm{major}"), redis_server.url)
        print(f"helm {major} runs: {time.monotonic() - started:.1f}s, {len(out[major].requests)} requests")
    yield out


# --- the API server's view of a request -----------------------------------------------------


@dataclass(frozen=True)
class Attr:
    """A request's authorization attributes, as the API server's RequestInfo has them."""

    group: str
    resource: str  # with "/subresource"
    verb: str
    namespace: str | None  # None: cluster-scoped (or across every namespace)
    name: str | None = None

    def __str__(self) -> str:
        where = f"in {self.namespace}" if self.namespace else "cluster-wide"
        return f"{self.verb} {self.group + '/' if self.group else ''}{self.resource} {where}"


_COLLECTION_VERBS = {"GET": "list", "POST": "create", "DELETE": "deletecollection"}
_OBJECT_VERBS = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def attributes(record: RequestRecord) -> list[Attr] | None:
    """The attributes the API server authorizes for ``record`` (None: a non-resource request).

    A server-side apply that created its object (201) is authorized as patch *and* create."""
    segments = [urllib.parse.unquote(s) for s in record.path.strip("/").split("/")]
    if segments[0] == "api" and len(segments) > 2:
        group, rest = "", segments[2:]
    elif segments[0] == "apis" and len(segments) > 3:
        group, rest = segments[1], segments[3:]
    else:
        return None
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3 and not (len(rest) == 3 and rest[2] in ("status", "finalize")):
        namespace, rest = rest[1], rest[2:]
    resource, name = rest[0], rest[1] if len(rest) > 1 else None
    if len(rest) > 2:
        resource = f"{resource}/{rest[2]}"  # a subresource (for proxy, rest[3:] is the proxied path)
    watch = record.query.get("watch") in ("true", "1")
    if name is None:
        verb = "watch" if watch and record.method == "GET" else _COLLECTION_VERBS[record.method]
    else:
        verb = "watch" if watch and record.method == "GET" else _OBJECT_VERBS[record.method]
    out = [Attr(group, resource, verb, namespace, name)]
    if record.method == "PATCH" and record.content_type.startswith("application/apply-patch") and record.status == 201:
        out.append(Attr(group, resource, "create", namespace, name))
    return out


def _agent(record: RequestRecord) -> str:
    return record.user_agent.split("/", 1)[0]


def _body(record: RequestRecord) -> Any:
    if record.body is not None:
        return record.body
    return yaml.safe_load(record.raw) if record.raw else None


# --- RBAC as the API server evaluates it ----------------------------------------------------


@dataclass(frozen=True)
class Rule:
    where: str  # "Role upgrade-bot rule 3" (the same in every target namespace) or "ClusterRole ... rule 0"
    groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    names: tuple[str, ...] = ()

    def matches(self, a: Attr) -> bool:
        _, _, sub = a.resource.partition("/")
        resource_ok = any(r in ("*", a.resource) or (sub and r == f"*/{sub}") for r in self.resources)
        return (
            any(g in ("*", a.group) for g in self.groups)
            and resource_ok
            and any(v in ("*", a.verb) for v in self.verbs)
            and (not self.names or a.name in self.names)
        )

    def grants(self) -> set[tuple[str, str, str]]:
        return {(g, r, v) for g in self.groups for r in self.resources for v in self.verbs}


@dataclass
class Grants:
    """The rules bound to the bot's ServiceAccount: per namespace (RoleBindings) and cluster-wide."""

    namespaced: dict[str, list[Rule]]
    cluster: list[Rule]

    def matching(self, a: Attr) -> list[Rule]:
        rules = self.cluster + (self.namespaced.get(a.namespace, []) if a.namespace else [])
        return [r for r in rules if r.matches(a)]

    def all_rules(self) -> list[Rule]:
        return list({r for rules in [self.cluster, *self.namespaced.values()] for r in rules})


def chart_grants(docs: list[dict[str, Any]]) -> Grants:
    sa = next(d for d in docs if d["kind"] == "ServiceAccount")
    subject = {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": sa["metadata"]["namespace"]}

    def rules_of(kind: str, name: str, namespace: str | None) -> list[Rule]:
        role = next(
            d
            for d in docs
            if d["kind"] == kind and d["metadata"]["name"] == name and d["metadata"].get("namespace") == namespace
        )
        return [
            Rule(
                f"{kind} {name} rule {i}",
                tuple(r.get("apiGroups", [])),
                tuple(r.get("resources", [])),
                tuple(r.get("verbs", [])),
                tuple(r.get("resourceNames", [])),
            )
            for i, r in enumerate(role["rules"])
        ]

    namespaced: dict[str, list[Rule]] = {}
    cluster: list[Rule] = []
    for d in docs:
        if d["kind"] not in ("RoleBinding", "ClusterRoleBinding") or subject not in d["subjects"]:
            continue
        ref = d["roleRef"]
        if d["kind"] == "ClusterRoleBinding":
            cluster += rules_of("ClusterRole", ref["name"], None)
        else:
            ns = d["metadata"]["namespace"]
            role_ns = ns if ref["kind"] == "Role" else None
            namespaced.setdefault(ns, []).extend(rules_of(ref["kind"], ref["name"], role_ns))
    return Grants(namespaced, cluster)


@pytest.fixture(scope="module", params=[4, 3], ids=["rendered-by-helm4", "rendered-by-helm3"])
def grants(request: pytest.FixtureRequest) -> Grants:
    return chart_grants(render(request.param, CHART_VALUES))


# --- what each run needs --------------------------------------------------------------------


@dataclass
class Need:
    attr: Attr
    why: str  # the request, or the Role whose creation needs it, or the access review


def needs(run: Run, grants: Grants) -> tuple[list[Need], list[str]]:
    """(every attribute the run needed, with why; problems found on the way)."""
    out: list[Need] = []
    problems: list[str] = []
    created_roles: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in run.requests:
        agent = _agent(r)
        if agent not in AGENTS:
            problems.append(f"unknown client {r.user_agent!r}: {r.method} {r.path}")
            continue
        attrs = attributes(r)
        if attrs is None:
            if not r.path.rstrip("/").startswith(PUBLIC_PATHS) or r.method != "GET":
                problems.append(f"{AGENTS[agent]}: non-resource {r.method} {r.path} is not public discovery")
            continue
        if agent == "python-httpx" and attrs[0].resource != "services/proxy":
            problems.append(f"the Milvus client reached {attrs[0]} (only the service proxy is expected)")
        why = f"{AGENTS[agent]}: {r.method} {r.path}"
        if (attrs[0].group, attrs[0].resource, attrs[0].verb) in PUBLIC_RESOURCES:
            continue  # allowed to every authenticated user (system:basic-user): no grant of the chart needed
        out += [Need(a, why) for a in attrs]
        body = _body(r) if r.method in ("POST", "PATCH", "PUT") else None
        if not isinstance(body, dict):
            continue
        if attrs[0].resource == "selfsubjectaccessreviews":
            out.append(_reviewed(body, why))
        elif attrs[0].group == "rbac.authorization.k8s.io" and r.status < 300:
            out += _escalation_needs(body, attrs[0].namespace, created_roles, problems)
    return out, problems


def _reviewed(body: dict[str, Any], why: str) -> Need:
    """What a SelfSubjectAccessReview asks about."""
    spec = body.get("spec", {}).get("resourceAttributes") or {}
    resource = spec.get("resource", "") + (f"/{spec['subresource']}" if spec.get("subresource") else "")
    checked = Attr(spec.get("group", ""), resource, spec.get("verb", ""), spec.get("namespace") or None)
    return Need(checked, f"the bot's preflight access review asks for it ({why})")


def _escalation_needs(
    body: dict[str, Any], namespace: str | None, roles: dict[tuple[str, str], list[dict[str, Any]]], problems: list[str]
) -> list[Need]:
    """Every permission a Role (or a binding to it) that helm writes grants: the writer must hold it."""
    ns = namespace or ""
    if body["kind"] in ("Role", "ClusterRole"):
        roles[(ns, body["metadata"]["name"])] = body.get("rules") or []
    why = f"{body['kind']} {body['metadata']['name']} that helm creates grants it"
    return [
        Need(Attr(group, resource, verb, namespace), why)
        for rule in _escalation_rules(body, roles, ns, problems)
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    ]


def _escalation_rules(
    body: dict[str, Any], roles: dict[tuple[str, str], list[dict[str, Any]]], ns: str, problems: list[str]
) -> list[dict[str, Any]]:
    """What the creator of ``body`` must hold: a Role's rules; for a binding, its Role's rules."""
    if body["kind"] in ("Role", "ClusterRole"):
        return list(body.get("rules") or [])
    if body["kind"] in ("RoleBinding", "ClusterRoleBinding"):
        ref = body["roleRef"]
        key = (ns if ref["kind"] == "Role" else "", ref["name"])
        if key not in roles:
            problems.append(
                f"{body['kind']} {body['metadata']['name']} binds {ref['kind']} {ref['name']}, not seen created"
            )
            return []
        return roles[key]
    return []


# --- the assertions -------------------------------------------------------------------------


def test_every_request_is_allowed_by_the_chart(runs: dict[int, Run], grants: Grants) -> None:
    for major, run in runs.items():
        by_agent = Counter(_agent(r) for r in run.requests)
        assert by_agent["OpenAPI-Generator"] > 50 and by_agent["Helm"] > 100 and by_agent["python-httpx"] > 10, by_agent
        found, problems = needs(run, grants)
        refused: list[str] = []
        for need in found:
            if need.attr.namespace in run.denied_namespaces:
                continue  # checked by the scan test: refused, as the chart's RBAC refuses it
            if not grants.matching(need.attr):
                refused.append(f"{need.attr}  <- {need.why}")
        assert problems == [], "\n".join(problems)
        assert refused == [], f"helm {major}: not allowed by the chart's RBAC:\n" + "\n".join(sorted(set(refused)))
        # the only refused requests are the scan's outside TARGETS
        for r in run.requests:
            if r.status == 403:
                attrs = attributes(r)
                assert attrs and attrs[0].namespace in run.denied_namespaces, (r.method, r.path)


def test_every_granted_verb_is_used(runs: dict[int, Run], grants: Grants) -> None:
    used: dict[tuple[str, str, str, str], list[str]] = {}
    for run in runs.values():
        found, _ = needs(run, grants)
        for need in found:
            if need.attr.namespace in run.denied_namespaces or "access review" in need.why:
                continue  # a review asks whether a verb is allowed; only a request that needs it uses it
            for rule in grants.matching(need.attr):
                key = (rule.where, need.attr.group, need.attr.resource, need.attr.verb)
                used.setdefault(key, []).append(need.why)
    unused = []
    for rule in grants.all_rules():
        assert "*" not in rule.groups + rule.resources + rule.verbs, f"{rule.where} has a wildcard"
        for group, resource, verb in sorted(rule.grants()):
            if (rule.where, group, resource, verb) not in used and (group, resource, verb) not in ALLOWED_UNUSED:
                unused.append(f"{rule.where}: {verb} {group + '/' if group else ''}{resource}")
    assert unused == [], "granted but never used:\n" + "\n".join(unused)
    stale = [k for k in ALLOWED_UNUSED if any(u[1:] == k for u in used)]
    assert stale == [], f"allow-listed but used after all (remove them): {stale}"


def test_roles_helm_creates_grant_nothing_the_bot_lacks(runs: dict[int, Run], grants: Grants) -> None:
    """RBAC escalation prevention: helm (as the bot) may create the Milvus chart's Pulsar broker
    Role, and bind it, only if the bot holds every permission in it."""
    for major, run in runs.items():
        found, _ = needs(run, grants)
        escalations = [n for n in found if "that helm creates grants it" in n.why]
        assert escalations, f"helm {major}: no Role was created (the check would be vacuous)"
        missing = sorted({f"{n.attr}  <- {n.why}" for n in escalations if not grants.matching(n.attr)})
        assert missing == [], f"helm {major}: helm would be refused creating:\n" + "\n".join(missing)


def _rules_review_namespaces(run: Run) -> Counter[str]:
    """How many SelfSubjectRulesReviews the bot asked, per namespace."""
    out: Counter[str] = Counter()
    for r in run.requests:
        attrs = attributes(r)
        body = _body(r) if r.method == "POST" else None
        if attrs and attrs[0].resource == "selfsubjectrulesreviews" and isinstance(body, dict):
            out[str((body.get("spec") or {}).get("namespace", ""))] += 1
    return out


def test_the_runs_were_made_as_the_charts_service_account(runs: dict[int, Run]) -> None:
    for major, run in runs.items():
        assert run.bot_user == "system:serviceaccount:ops:upgrade-bot"
        users = Counter(r.user for r in run.requests if r.user)
        assert set(users) == {run.bot_user}, f"helm {major}: {users}"  # never the world's admin token
        # the only requests without an identity are those served before authentication
        anonymous = {r.path for r in run.requests if not r.user}
        assert all(p.rstrip("/") == "/version" or p.startswith(("/healthz", "/livez", "/readyz")) for p in anonymous)


def test_preflight_passes_under_the_charts_rbac(runs: dict[int, Run], grants: Grants) -> None:
    """With the chart's RBAC enforced, the preflight finds everything it needs in every run: the
    upgrades end as scripted and the bot never reports a missing permission."""
    for major, run in runs.items():
        assert "not allowed to" not in run.channel_text, f"helm {major}: preflight refused:\n{run.channel_text}"
        expected = SCRIPTED_OUTCOMES[major]
        assert len(run.roots) == len(expected), run.roots
        for text, outcome in zip(run.roots, expected, strict=True):
            assert outcome in text and not [w for w in OUTCOMES if w in text and w != outcome], (outcome, text)
        found, _ = needs(run, grants)
        reviews = [n for n in found if "access review" in n.why]
        refused = sorted({str(n.attr) for n in reviews if not grants.matching(n.attr)})
        assert refused == [], f"helm {major}: preflight would refuse the upgrade: not granted " + ", ".join(refused)
        # The preflight asks one SelfSubjectRulesReview per namespace and evaluates the rules itself;
        # under the chart's RBAC they show every namespaced verb, so access reviews are asked only
        # for the cluster-scoped checks (a namespace's rules do not say what holds cluster-wide).
        per_namespace = _rules_review_namespaces(run)
        assert set(TARGETS) <= set(per_namespace), f"helm {major}: rules reviews {dict(per_namespace)}"
        namespaced = sorted({str(n.attr) for n in reviews if n.attr.namespace})
        assert namespaced == [], f"helm {major}: access reviews the rules already answered: {namespaced}"
        assert reviews, f"helm {major}: no access review of the cluster-scoped checks"


def test_scan_outside_the_target_namespaces_is_named_not_failed(runs: dict[int, Run], grants: Grants) -> None:
    run = runs[4]
    answer = run.scan_answer
    assert "Could not read:" in answer, answer
    for ns in run.denied_namespaces:
        assert f"`{ns}`:" in answer, (ns, answer)
        assert not grants.matching(Attr("", "secrets", "list", ns)), f"the chart lets the bot read secrets in {ns}"
    for line in ("`my-release` in `staging`", "`my-milvus` in `default`", "`other-release` in `default`"):
        assert line in answer, answer
    refused = [r for r in run.requests if r.status == 403]
    assert refused and {attributes(r)[0].namespace for r in refused} <= run.denied_namespaces  # type: ignore[index]


def test_slack_scopes_are_exactly_what_the_bot_calls(runs: dict[int, Run]) -> None:
    http, socket = (yaml.safe_load(p.read_text(encoding="utf-8")) for p in MANIFESTS.values())
    scopes = set(http["oauth_config"]["scopes"]["bot"])
    assert set(socket["oauth_config"]["scopes"]["bot"]) == scopes
    assert len(scopes) == len(http["oauth_config"]["scopes"]["bot"])  # no duplicate
    for run in runs.values():
        assert set(run.scopes) == scopes  # the runs' Slack granted exactly these
        lacking = [(c.method, c.args.get("channel")) for c in run.slack_calls if c.error == "missing_scope"]
        assert lacking == [], f"calls refused for a missing scope: {lacking}"
    needed: Counter[str] = sum((run.needed_scopes for run in runs.values()), Counter())
    methods = {c.method for run in runs.values() for c in run.slack_calls}
    assert {"chat.postMessage", "chat.update", "files.completeUploadExternal"} <= methods
    assert {"usergroups.users.list", "chat.getPermalink"} <= methods, methods
    # `commands` is for the slash command itself, which both manifests declare
    assert http["features"]["slash_commands"][0]["command"] == socket["features"]["slash_commands"][0]["command"]
    assert scopes - {"commands"} == set(needed), f"scopes {sorted(scopes)}, needed by the calls {dict(needed)}"
    # HTTP mode: both request URLs at /slack/events; Socket Mode: none, and the websocket on
    assert http["features"]["slash_commands"][0]["url"].endswith("/slack/events")
    assert http["settings"]["interactivity"]["request_url"].endswith("/slack/events")
    assert http["settings"]["socket_mode_enabled"] is False
    assert socket["settings"]["socket_mode_enabled"] is True
    assert "url" not in socket["features"]["slash_commands"][0]
    assert "request_url" not in socket["settings"]["interactivity"]
