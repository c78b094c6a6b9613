"""Kubernetes RBAC as the real API server evaluates it, over the objects of a ``Store``.

Why: the simulated API server can enforce (``KubeApiServer.enforce_rbac``) the Roles,
ClusterRoles, RoleBindings and ClusterRoleBindings in its store for an identity, so that a
client's permissions are proven against the real rules rather than an allow-all server.

What it does, after plugin/pkg/auth/authorizer/rbac and pkg/registry/rbac of kubernetes:
- ``Rbac.authorize``: the rules of every ClusterRoleBinding whose subject is the user (User
  name, Group, ServiceAccount ``system:serviceaccount:<ns>:<name>``) apply everywhere, those of
  the RoleBindings of the request's namespace only there (a ClusterRole bound by a RoleBinding
  too); a rule allows when its verbs, apiGroups, resources (``*``, ``resource/sub``, ``*/sub``)
  and resourceNames match; non-resource URLs match exactly or by a trailing ``*``. The reason
  is the real one (``RBAC: allowed by RoleBinding "rb/ns" of Role "r" to ServiceAccount ...``);
  a missing Role is a resolution error (``RBAC: role.rbac.authorization.k8s.io "x" not found``).
- ``Rbac.rules_for``: the rules a SelfSubjectRulesReview lists for a namespace.
- aggregated ClusterRoles (``aggregationRule.clusterRoleSelectors``): their rules are those of
  the ClusterRoles the selectors match, as the aggregation controller writes them (computed
  when evaluated, not written back into the object);
- ``Rbac.escalation_error``: RBAC escalation prevention (the writer of a Role or binding must
  hold every permission it grants, with the real ``is attempting to grant RBAC permissions not
  currently held`` message; ``system:masters`` is exempt);
- ``bootstrap_policy()``: the default ClusterRoles and ClusterRoleBindings every cluster has
  (cluster-admin for ``system:masters``; system:basic-user, system:discovery and
  system:public-info-viewer for ``system:authenticated``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sandbox.kube.store import Store

GROUP = "rbac.authorization.k8s.io"
MASTERS = "system:masters"
AUTHENTICATED = "system:authenticated"
Rule = dict[str, Any]


@dataclass(frozen=True)
class Identity:
    """Who a bearer token authenticates as."""

    user: str
    groups: tuple[str, ...] = (AUTHENTICATED,)

    @property
    def privileged(self) -> bool:
        return MASTERS in self.groups


def service_account(namespace: str, name: str) -> Identity:
    """The identity of a ServiceAccount's token, as the real token authenticator reports it."""
    return Identity(
        f"system:serviceaccount:{namespace}:{name}",
        ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", AUTHENTICATED),
    )


@dataclass(frozen=True)
class Attributes:
    """A request's authorization attributes (authorizer.AttributesRecord)."""

    verb: str
    group: str = ""
    resource: str = ""  # the plural only
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""  # a non-resource request's URL path
    resource_request: bool = True


# ---- rule matching (rbac.RuleAllows) ----


def _has(values: list[str] | None, want: str) -> bool:
    return any(v == "*" or v == want for v in values or [])


def _resource_matches(rule: Rule, resource: str, subresource: str) -> bool:
    combined = f"{resource}/{subresource}" if subresource else resource
    for r in rule.get("resources") or []:
        if r == "*" or r == combined:
            return True
        if subresource and r == f"*/{subresource}":
            return True
    return False


def _url_matches(rule: Rule, path: str) -> bool:
    for url in rule.get("nonResourceURLs") or []:
        if url == "*" or url == path or (url.endswith("*") and path.startswith(url.rstrip("*"))):
            return True
    return False


def rule_allows(rule: Rule, a: Attributes) -> bool:
    if not _has(rule.get("verbs"), a.verb):
        return False
    if not a.resource_request:
        return _url_matches(rule, a.path)
    names = rule.get("resourceNames") or []
    return (
        _has(rule.get("apiGroups"), a.group)
        and _resource_matches(rule, a.resource, a.subresource)
        and (not names or a.name in names)
    )


# ---- subjects and roles ----


def _applies(subject: dict[str, Any], who: Identity, binding_namespace: str) -> bool:
    kind, name = subject.get("kind"), subject.get("name", "")
    if kind == "User":
        return bool(name) and name == who.user
    if kind == "Group":
        return name in who.groups
    if kind == "ServiceAccount":
        ns = subject.get("namespace") or binding_namespace
        return bool(ns) and f"system:serviceaccount:{ns}:{name}" == who.user
    return False


def _describe(subject: dict[str, Any], binding_namespace: str) -> str:
    if subject.get("kind") == "ServiceAccount":
        ns = subject.get("namespace") or binding_namespace
        return f"ServiceAccount {json.dumps(subject.get('name', '') + '/' + ns)}"
    return f"{subject.get('kind')} {json.dumps(subject.get('name', ''))}"


def _selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if (
            (op == "In" and labels.get(key) not in values)
            or (op == "NotIn" and key in labels and labels.get(key) in values)
            or (op == "Exists" and key not in labels)
            or (op == "DoesNotExist" and key in labels)
        ):
            return False
    return True


class RoleNotFound(Exception):
    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f'{kind}.{GROUP} "{name}" not found')
        self.kind = kind
        self.name = name


class Rbac:
    """The RBAC authorizer and rule resolver over ``store``'s RBAC objects."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _cluster_role_rules(self, name: str) -> list[Rule]:
        role = self.store.try_get(f"clusterroles.{GROUP}", None, name)
        if role is None:
            raise RoleNotFound("clusterrole", name)
        aggregation = role.get("aggregationRule")
        if not isinstance(aggregation, dict):
            return list(role.get("rules") or [])
        out: list[Rule] = []
        selectors = aggregation.get("clusterRoleSelectors") or []
        for other in self.store.list(f"clusterroles.{GROUP}"):
            labels = other["metadata"].get("labels") or {}
            if other["metadata"]["name"] == name or not any(_selector_matches(s, labels) for s in selectors):
                continue
            for rule in other.get("rules") or []:
                if rule not in out:
                    out.append(rule)
        return out

    def role_ref_rules(self, ref: dict[str, Any], namespace: str) -> list[Rule]:
        """GetRoleReferenceRules: the rules of a binding's roleRef (raises ``RoleNotFound``)."""
        if ref.get("kind") == "Role":
            role = self.store.try_get(f"roles.{GROUP}", namespace, ref.get("name", ""))
            if role is None:
                raise RoleNotFound("role", ref.get("name", ""))
            return list(role.get("rules") or [])
        if ref.get("kind") == "ClusterRole":
            return self._cluster_role_rules(ref.get("name", ""))
        raise RoleNotFound(str(ref.get("kind", "")).lower(), ref.get("name", ""))

    def visit(self, who: Identity, namespace: str) -> Iterator[tuple[str, Rule | None, str | None]]:
        """(source, rule, None) for every rule that applies to ``who`` in ``namespace`` ('' =
        cluster scope), or (source, None, error) for a binding whose role cannot be read."""
        for kind, scope, bindings in self._bindings(namespace):
            for binding in sorted(bindings, key=lambda b: b["metadata"]["name"]):
                subject = next((s for s in binding.get("subjects") or [] if _applies(s, who, scope)), None)
                if subject is None:
                    continue
                ref = binding.get("roleRef") or {}
                name = binding["metadata"]["name"] + (f"/{scope}" if scope else "")
                source = (
                    f"{kind} {json.dumps(name)} of {ref.get('kind')} "
                    f"{json.dumps(ref.get('name', ''))} to {_describe(subject, scope)}"
                )
                yield from self._rules_of(source, ref, scope)

    def _bindings(self, namespace: str) -> Iterator[tuple[str, str, list[dict[str, Any]]]]:
        """(kind, scope, bindings): the ClusterRoleBindings, then (in a namespace) its RoleBindings,
        each listed only when the caller gets that far (an authorizer stops at the first allow)."""
        yield "ClusterRoleBinding", "", self.store.list(f"clusterrolebindings.{GROUP}")
        if namespace:
            yield "RoleBinding", namespace, self.store.list(f"rolebindings.{GROUP}", namespace)

    def _rules_of(
        self, source: str, ref: dict[str, Any], namespace: str
    ) -> Iterator[tuple[str, Rule | None, str | None]]:
        try:
            rules = self.role_ref_rules(ref, namespace)
        except RoleNotFound as exc:
            yield source, None, str(exc)
            return
        for rule in rules:
            yield source, rule, None

    def authorize(self, who: Identity, a: Attributes) -> tuple[bool, str]:
        """(allowed, reason) as the RBAC authorizer decides (not allowed = no opinion)."""
        errors: list[str] = []
        with self.store.lock:
            for source, rule, error in self.visit(who, a.namespace):
                if error is not None:
                    errors.append(error)
                elif rule is not None and rule_allows(rule, a):
                    return True, f"RBAC: allowed by {source}"
        return False, f"RBAC: {aggregate(errors)}" if errors else ""

    def rules_for(self, who: Identity, namespace: str) -> tuple[list[Rule], list[str]]:
        """(every rule that applies in ``namespace``, resolution errors)."""
        rules: list[Rule] = []
        errors: list[str] = []
        with self.store.lock:
            for _source, rule, error in self.visit(who, namespace):
                if error is not None:
                    errors.append(error)
                elif rule is not None:
                    rules.append(rule)
        return rules, errors

    # ---- escalation prevention (pkg/registry/rbac/validation) ----

    def escalation_error(self, who: Identity, namespace: str, granted: list[Rule]) -> str | None:
        """ConfirmNoEscalation: None when ``who`` holds every permission in ``granted``."""
        owner, errors = self.rules_for(who, namespace)
        missing: list[Rule] = []
        for rule in granted:
            for piece in breakdown(rule):
                if not any(covers(o, piece) for o in owner) and piece not in missing:
                    missing.append(piece)
        if not missing:
            return None
        described = sorted({compact_string(r) for r in compact(missing)})
        groups = "[" + " ".join(json.dumps(g) for g in who.groups) + "]"
        msg = (
            f"user {json.dumps(who.user)} (groups={groups}) is attempting to grant RBAC permissions not currently "
            "held:\n" + "\n".join(described)
        )
        if errors:
            msg += f"; resolution errors: [{' '.join(errors)}]"
        return msg


def aggregate(errors: list[str]) -> str:
    """utilerrors.NewAggregate(errs).Error()."""
    return errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"


def breakdown(rule: Rule) -> list[Rule]:
    """BreakdownRule: one rule per (group, resource, verb[, name]) or (url, verb)."""
    out: list[Rule] = []
    verbs = rule.get("verbs") or []
    for group in rule.get("apiGroups") or []:
        for resource in rule.get("resources") or []:
            for verb in verbs:
                names = rule.get("resourceNames") or []
                if names:
                    out += [
                        {"apiGroups": [group], "resources": [resource], "resourceNames": [n], "verbs": [verb]}
                        for n in names
                    ]
                else:
                    out.append({"apiGroups": [group], "resources": [resource], "verbs": [verb]})
    for url in rule.get("nonResourceURLs") or []:
        out += [{"nonResourceURLs": [url], "verbs": [verb]} for verb in verbs]
    return out


def _resource_covers(owner: list[str], wanted: str) -> bool:
    if "*" in owner or wanted in owner:
        return True
    return "/" in wanted and "*" + wanted[wanted.index("/") :] in owner


def covers(owner: Rule, piece: Rule) -> bool:
    """ruleCovers: does ``owner`` cover the single permission ``piece`` (from ``breakdown``)?"""
    if not _has(owner.get("verbs"), piece["verbs"][0]):
        return False
    if piece.get("nonResourceURLs"):
        url = piece["nonResourceURLs"][0]
        return any(
            u == "*" or u == url or (u.endswith("*") and url.startswith(u.rstrip("*")))
            for u in owner.get("nonResourceURLs") or []
        )
    if not _has(owner.get("apiGroups"), piece["apiGroups"][0]):
        return False
    if not _resource_covers(owner.get("resources") or [], piece["resources"][0]):
        return False
    owner_names = owner.get("resourceNames") or []
    return not owner_names or (bool(piece.get("resourceNames")) and piece["resourceNames"][0] in owner_names)


def compact(rules: list[Rule]) -> list[Rule]:
    """CompactRules: simple (one group, one resource, no names) rules merged by (group, resource)."""
    merged: dict[tuple[str, str], Rule] = {}
    out: list[Rule] = []
    for rule in rules:
        simple = (
            len(rule.get("apiGroups") or []) == 1
            and len(rule.get("resources") or []) == 1
            and not rule.get("resourceNames")
            and not rule.get("nonResourceURLs")
        )
        if not simple:
            out.append(rule)
            continue
        key = (rule["apiGroups"][0], rule["resources"][0])
        if key in merged:
            merged[key]["verbs"] += [v for v in rule["verbs"] if v not in merged[key]["verbs"]]
        else:
            merged[key] = {"apiGroups": [key[0]], "resources": [key[1]], "verbs": list(rule["verbs"])}
            out.append(merged[key])
    return out


def compact_string(rule: Rule) -> str:
    """PolicyRule.CompactString: ``{APIGroups:["apps"], Resources:["deployments"], Verbs:["get"]}``."""

    def q(values: list[str]) -> str:
        return "[" + " ".join(json.dumps(v) for v in values) + "]"

    parts = []
    for label, key in (
        ("APIGroups", "apiGroups"),
        ("Resources", "resources"),
        ("NonResourceURLs", "nonResourceURLs"),
        ("ResourceNames", "resourceNames"),
        ("Verbs", "verbs"),
    ):
        if rule.get(key):
            parts.append(f"{label}:{q(rule[key])}")
    return "{" + ", ".join(parts) + "}"


# ---- the default policy of every cluster (plugin/pkg/auth/authorizer/rbac/bootstrappolicy) ----

_BOOTSTRAP_META = {
    "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
    "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
}
_DISCOVERY_URLS = [
    "/api",
    "/api/*",
    "/apis",
    "/apis/*",
    "/healthz",
    "/livez",
    "/openapi",
    "/openapi/*",
    "/readyz",
    "/version",
    "/version/",
]
_PUBLIC_URLS = ["/healthz", "/livez", "/readyz", "/version", "/version/"]
BASIC_USER_RULES: list[Rule] = [
    {"verbs": ["create"], "apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews"]},
    {"verbs": ["create"], "apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectrulesreviews"]},
    {"verbs": ["create"], "apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"]},
]
DISCOVERY_RULES: list[Rule] = [{"verbs": ["get"], "nonResourceURLs": _DISCOVERY_URLS}]
PUBLIC_INFO_RULES: list[Rule] = [{"verbs": ["get"], "nonResourceURLs": _PUBLIC_URLS}]


def _meta(name: str) -> dict[str, Any]:
    return {"name": name, **json.loads(json.dumps(_BOOTSTRAP_META))}


def bootstrap_policy() -> list[tuple[str, dict[str, Any]]]:
    """(store key, object) of the default ClusterRoles and ClusterRoleBindings."""
    roles = {
        "cluster-admin": [
            {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]},
            {"verbs": ["*"], "nonResourceURLs": ["*"]},
        ],
        "system:basic-user": BASIC_USER_RULES,
        "system:discovery": DISCOVERY_RULES,
        "system:public-info-viewer": PUBLIC_INFO_RULES,
    }
    groups = {
        "cluster-admin": [MASTERS],
        "system:basic-user": [AUTHENTICATED],
        "system:discovery": [AUTHENTICATED],
        "system:public-info-viewer": [AUTHENTICATED, "system:unauthenticated"],
    }
    out: list[tuple[str, dict[str, Any]]] = []
    for name, rules in roles.items():
        out.append(
            (
                f"clusterroles.{GROUP}",
                {"apiVersion": f"{GROUP}/v1", "kind": "ClusterRole", "metadata": _meta(name), "rules": rules},
            )
        )
        out.append(
            (
                f"clusterrolebindings.{GROUP}",
                {
                    "apiVersion": f"{GROUP}/v1",
                    "kind": "ClusterRoleBinding",
                    "metadata": _meta(name),
                    "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": name},
                    "subjects": [{"apiGroup": GROUP, "kind": "Group", "name": g} for g in groups[name]],
                },
            )
        )
    return out
