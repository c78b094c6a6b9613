"""The simulated API server's authorization: rules reviews, and real RBAC when enforced.

Driven by the real kubectl (``.tools/kubectl``, ``auth can-i`` and ``auth can-i --list``, which
send protobuf access and rules reviews) and the official ``kubernetes`` client:
- SelfSubjectRulesReview: allow-all answers cluster-admin's ``*.*`` rule; a deny (in one
  namespace or cluster-wide) takes exactly the denied verb out of the listed rules, nothing
  else; no ``spec.namespace`` is a 400 ``no namespace on request``, as for real;
- ``enforce_rbac``: a Role + RoleBinding allows exactly what it grants, in its namespace only
  (403 elsewhere with the real message); a ClusterRole bound by a RoleBinding applies only in
  that namespace, by a ClusterRoleBinding everywhere; ServiceAccount and Group subjects;
  aggregated ClusterRoles; access and rules reviews and discovery are allowed to everyone (the
  default bootstrap policy); the deny list still applies on top; escalation prevention on
  writing Roles and RoleBindings (``escalate`` / ``bind`` lift it), as the real registry does.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client, config

from sandbox.kube import rbac
from sandbox.kube.server import KubeApiServer

ROOT = Path(__file__).resolve().parents[1]
KUBECTL = ROOT / ".tools" / "kubectl"
JANE = "jane-token"
SA_TOKEN = "bot-sa-token"


@pytest.fixture(scope="module")
def kubectl_bin() -> Path:
    if not KUBECTL.exists():
        subprocess.run(["bash", str(ROOT / "sandbox" / "tools" / "fetch.sh"), str(ROOT / ".tools")], check=True)
    return KUBECTL


class Kubectl:
    def __init__(self, binary: Path, kubeconfig: str, home: Path) -> None:
        self.binary, self.kubeconfig = binary, kubeconfig
        self.env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "KUBECACHEDIR": str(home / "cache")}

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.binary), "--kubeconfig", self.kubeconfig, *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
            check=False,
        )

    def can_i(self, *args: str) -> str:
        proc = self("auth", "can-i", *args)
        assert proc.returncode in (0, 1), proc.stderr
        return proc.stdout.strip()

    def rules(self, namespace: str) -> dict[str, tuple[str, str, str]]:
        """``auth can-i --list -n namespace`` as {resource: (non-resource URLs, names, verbs)}
        for the resource rows (non-resource rows under their URLs)."""
        proc = self("auth", "can-i", "--list", "-n", namespace)
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        assert lines[0].split() == ["Resources", "Non-Resource", "URLs", "Resource", "Names", "Verbs"], lines[0]
        out: dict[str, tuple[str, str, str]] = {}
        for line in lines[1:]:
            found = re.match(r"^(\S*)\s+(\[[^\]]*\])\s+(\[[^\]]*\])\s+(\[[^\]]*\])\s*$", line)
            assert found, line
            resource, urls, names, verbs = found.groups()
            out[resource or urls] = (urls, names, verbs)
        return out


def _tmp_home(tmp_path: Path, name: str) -> Path:
    home = tmp_path / name
    home.mkdir()
    return home


@pytest.fixture
def admin_kubectl(server: KubeApiServer, kubectl_bin: Path, tmp_path: Path) -> Kubectl:
    return Kubectl(kubectl_bin, server.write_kubeconfig(str(tmp_path / "admin.kubeconfig")), _tmp_home(tmp_path, "a"))


def _api(server: KubeApiServer, path: Path, token: str | None = None) -> client.ApiClient:
    return config.new_client_from_config(config_file=server.write_kubeconfig(str(path), token=token))


@pytest.fixture
def admin(server: KubeApiServer, tmp_path: Path) -> client.ApiClient:
    return _api(server, tmp_path / "admin-py.kubeconfig")


def _rules_review(api: client.ApiClient, namespace: str) -> Any:
    body = client.V1SelfSubjectRulesReview(spec=client.V1SelfSubjectRulesReviewSpec(namespace=namespace))
    return client.AuthorizationV1Api(api).create_self_subject_rules_review(body)


def _can(api: client.ApiClient, verb: str, resource: str, namespace: str = "", group: str = "") -> Any:
    attrs = client.V1ResourceAttributes(verb=verb, resource=resource, namespace=namespace or None, group=group)
    body = client.V1SelfSubjectAccessReview(spec=client.V1SelfSubjectAccessReviewSpec(resource_attributes=attrs))
    return client.AuthorizationV1Api(api).create_self_subject_access_review(body).status


def _verbs_for(review: Any, group: str, resource: str) -> set[str]:
    """The verbs the rules of ``review`` grant on group/resource (no resourceNames)."""
    out: set[str] = set()
    for r in review.status.resource_rules:
        if r.resource_names:
            continue
        if any(g in ("*", group) for g in r.api_groups or []) and any(x in ("*", resource) for x in r.resources or []):
            out |= set(r.verbs)
    return out


def _forbidden(exc: client.ApiException) -> str:
    assert exc.status == 403, exc.body
    body = json.loads(exc.body or "")
    assert body["kind"] == "Status" and body["reason"] == "Forbidden" and body["code"] == 403
    return str(body["message"])


# ---- the rules review, allow-all with a deny list ----


def test_can_i_list_shows_everything_when_all_is_allowed(admin_kubectl: Kubectl) -> None:
    rows = admin_kubectl.rules("default")
    assert rows["*.*"] == ("[]", "[]", "[*]")
    assert rows["[*]"] == ("[*]", "[]", "[*]")
    assert rows["selfsubjectrulesreviews.authorization.k8s.io"] == ("[]", "[]", "[create]")
    assert admin_kubectl.can_i("delete", "pods", "-n", "default") == "yes"


def test_a_deny_takes_exactly_that_verb_out_of_the_rules(server: KubeApiServer, admin_kubectl: Kubectl) -> None:
    server.deny("delete", "pods", namespace="locked")
    rows = admin_kubectl.rules("locked")
    assert "*.*" not in rows, rows  # a wildcard would claim the denied verb
    assert rows["pods"][2] == "[create deletecollection get list patch update watch]", rows["pods"]
    assert rows["configmaps"][2] == "[create delete deletecollection get list patch update watch]"
    assert rows["pods/status"][2] == "[get patch update]"
    assert rows["deployments.apps"][2] == "[create delete deletecollection get list patch update watch]"
    assert rows["services/proxy"][2] == "[create delete get patch update]"
    assert rows["selfsubjectaccessreviews.authorization.k8s.io"][2] == "[create]"
    assert rows["[*]"] == ("[*]", "[]", "[*]")  # non-resource URLs are untouched
    assert admin_kubectl.can_i("delete", "pods", "-n", "locked") == "no"
    assert admin_kubectl.can_i("get", "pods", "-n", "locked") == "yes"
    # elsewhere nothing is denied: the cluster-admin answer again
    assert admin_kubectl.rules("open")["*.*"] == ("[]", "[]", "[*]")
    assert admin_kubectl.can_i("delete", "pods", "-n", "open") == "yes"


def test_rules_review_through_the_python_client(server: KubeApiServer, admin: client.ApiClient) -> None:
    review = _rules_review(admin, "ns1")
    assert review.status.incomplete is False and review.status.evaluation_error is None
    first = review.status.resource_rules[0]
    assert (first.verbs, first.api_groups, first.resources) == (["*"], ["*"], ["*"])
    assert review.status.non_resource_rules[0].non_resource_urls == ["*"]
    server.deny("*", "*", namespace="ns1", group="*")  # nothing namespaced in ns1
    server.deny("list", "secrets")  # cluster-wide: every namespace
    locked = _rules_review(admin, "ns1")
    assert _verbs_for(locked, "", "pods") == set() and _verbs_for(locked, "apps", "deployments") == set()
    assert _verbs_for(locked, "", "persistentvolumes") >= {"delete", "get", "list"}  # cluster-scoped
    assert _verbs_for(locked, "authorization.k8s.io", "selfsubjectrulesreviews") == {"create"}
    other = _rules_review(admin, "ns2")
    assert "list" not in _verbs_for(other, "", "secrets") and "get" in _verbs_for(other, "", "secrets")
    assert _verbs_for(other, "", "pods") >= {"get", "list", "delete"}
    assert _can(admin, "list", "secrets", "ns2").allowed is False
    assert _can(admin, "get", "secrets", "ns2").allowed is True


def test_rules_review_needs_a_namespace(server: KubeApiServer) -> None:
    url = f"{server.url}/apis/authorization.k8s.io/v1/selfsubjectrulesreviews"
    headers = {"Authorization": f"Bearer {server.token}"}
    with httpx.Client(verify=server.ssl_context()) as http:
        for spec in ({}, {"namespace": ""}, None):
            body: dict[str, Any] = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview"}
            if spec is not None:
                body["spec"] = spec
            resp = http.post(url, json=body, headers=headers)
            assert resp.status_code == 400, resp.text
            assert resp.json()["message"] == "no namespace on request"
            assert resp.json()["reason"] == "BadRequest"
        ok = http.post(url, json={**body, "spec": {"namespace": "x"}}, headers=headers)
    assert ok.status_code == 201
    assert ok.json()["kind"] == "SelfSubjectRulesReview" and ok.json()["spec"] == {}
    assert set(ok.json()["status"]) == {"resourceRules", "nonResourceRules", "incomplete"}


def test_discovery_lists_rules_reviews(admin: client.ApiClient) -> None:
    resources = client.AuthorizationV1Api(admin).get_api_resources().resources
    assert {r.name: r.verbs for r in resources}["selfsubjectrulesreviews"] == ["create"]


# ---- real RBAC ----


@pytest.fixture
def enforced(server: KubeApiServer, admin: client.ApiClient) -> Iterator[KubeApiServer]:
    core = client.CoreV1Api(admin)
    for ns in ("team-a", "team-b", "ops"):
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    server.add_token(JANE, "jane", ["devs"])
    server.add_token(SA_TOKEN, *_sa_identity("ops", "bot"))
    server.enforce_rbac()
    yield server
    server.relax_rbac()


def _sa_identity(namespace: str, name: str) -> tuple[str, tuple[str, ...]]:
    who = rbac.service_account(namespace, name)
    return who.user, who.groups


@pytest.fixture
def jane(enforced: KubeApiServer, tmp_path: Path) -> client.ApiClient:
    return _api(enforced, tmp_path / "jane.kubeconfig", JANE)


@pytest.fixture
def jane_kubectl(enforced: KubeApiServer, kubectl_bin: Path, tmp_path: Path) -> Kubectl:
    path = enforced.write_kubeconfig(str(tmp_path / "jane-ctl.kubeconfig"), token=JANE)
    return Kubectl(kubectl_bin, path, _tmp_home(tmp_path, "j"))


def _role(name: str, rules: list[dict[str, Any]], namespace: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, **({"namespace": namespace} if namespace else {})}
    kind = "Role" if namespace else "ClusterRole"
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": meta, "rules": rules}


def _binding(
    name: str, ref_kind: str, ref: str, subject: dict[str, Any], namespace: str | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding" if namespace else "ClusterRoleBinding",
        "metadata": meta,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": ref_kind, "name": ref},
        "subjects": [subject],
    }


USER_JANE = {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "jane"}
READ_PODS = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]


def _create(api: client.ApiClient, obj: dict[str, Any]) -> Any:
    rbac_api: Any = client.RbacAuthorizationV1Api(api)
    ns = obj["metadata"].get("namespace")
    create = {
        "Role": lambda: rbac_api.create_namespaced_role(ns, obj),
        "ClusterRole": lambda: rbac_api.create_cluster_role(obj),
        "RoleBinding": lambda: rbac_api.create_namespaced_role_binding(ns, obj),
        "ClusterRoleBinding": lambda: rbac_api.create_cluster_role_binding(obj),
    }[obj["kind"]]
    return create()


def test_a_role_allows_exactly_what_it_grants_in_its_namespace(
    admin: client.ApiClient, jane: client.ApiClient, jane_kubectl: Kubectl
) -> None:
    _create(admin, _role("pod-reader", READ_PODS, "team-a"))  # an admin (system:masters) may grant anything
    _create(admin, _binding("read-pods", "Role", "pod-reader", USER_JANE, "team-a"))
    core = client.CoreV1Api(jane)
    assert core.list_namespaced_pod("team-a").items == []
    with pytest.raises(client.ApiException) as elsewhere:
        core.list_namespaced_pod("team-b")
    assert _forbidden(elsewhere.value) == (
        'pods is forbidden: User "jane" cannot list resource "pods" in API group "" in the namespace "team-b"'
    )
    with pytest.raises(client.ApiException) as other_verb:
        core.delete_namespaced_pod("x", "team-a")
    assert _forbidden(other_verb.value) == (
        'pods "x" is forbidden: User "jane" cannot delete resource "pods" in API group "" in the namespace "team-a"'
    )
    with pytest.raises(client.ApiException) as everywhere:
        core.list_pod_for_all_namespaces()
    assert _forbidden(everywhere.value).endswith('cannot list resource "pods" in API group "" at the cluster scope')
    with pytest.raises(client.ApiException) as secrets:
        core.list_namespaced_secret("team-a")
    _forbidden(secrets.value)
    # the access review says the same, with the real reason
    allowed = _can(jane, "list", "pods", "team-a")
    assert allowed.allowed is True
    assert allowed.reason == 'RBAC: allowed by RoleBinding "read-pods/team-a" of Role "pod-reader" to User "jane"'
    assert _can(jane, "list", "pods", "team-b").allowed is False
    # the rules review: exactly the Role's rules, plus what every user may do
    review = _rules_review(jane, "team-a")
    assert review.status.incomplete is False
    rules = [(r.verbs, r.api_groups, r.resources) for r in review.status.resource_rules]
    assert (["get", "list"], [""], ["pods"]) in rules
    assert (["create"], ["authorization.k8s.io"], ["selfsubjectrulesreviews"]) in rules
    assert not any("*" in r.verbs + r.resources for r in review.status.resource_rules)
    assert _verbs_for(_rules_review(jane, "team-b"), "", "pods") == set()
    # the real kubectl agrees (and its discovery, as jane, works)
    assert jane_kubectl.can_i("list", "pods", "-n", "team-a") == "yes"
    assert jane_kubectl.can_i("list", "pods", "-n", "team-b") == "no"
    assert jane_kubectl.can_i("delete", "pods", "-n", "team-a") == "no"
    rows = jane_kubectl.rules("team-a")
    assert rows["pods"] == ("[]", "[]", "[get list]")
    assert "*.*" not in rows
    assert "pods" not in jane_kubectl.rules("team-b")
    got = jane_kubectl("get", "pods", "-n", "team-a")
    assert got.returncode == 0, got.stderr
    refused = jane_kubectl("get", "pods", "-n", "team-b")
    assert refused.returncode == 1
    assert 'User "jane" cannot list resource "pods" in API group "" in the namespace "team-b"' in refused.stderr


def test_a_cluster_role_bound_by_a_role_binding_applies_only_there(
    admin: client.ApiClient, jane: client.ApiClient
) -> None:
    _create(admin, _role("cm-reader", [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]))
    _create(admin, _binding("cm", "ClusterRole", "cm-reader", USER_JANE, "team-a"))
    core = client.CoreV1Api(jane)
    core.list_namespaced_config_map("team-a")
    with pytest.raises(client.ApiException) as exc:
        core.list_namespaced_config_map("team-b")
    _forbidden(exc.value)
    assert _can(jane, "list", "configmaps", "team-a").reason == (
        'RBAC: allowed by RoleBinding "cm/team-a" of ClusterRole "cm-reader" to User "jane"'
    )
    # a ClusterRoleBinding (to jane's group) applies everywhere, the cluster scope too
    _create(admin, _binding("cm-all", "ClusterRole", "cm-reader", {"kind": "Group", "name": "devs"}))
    core.list_namespaced_config_map("team-b")
    core.list_config_map_for_all_namespaces()
    assert _can(jane, "list", "configmaps", "team-b").reason == (
        'RBAC: allowed by ClusterRoleBinding "cm-all" of ClusterRole "cm-reader" to Group "devs"'
    )


def test_service_accounts_names_subresources_and_aggregation(
    enforced: KubeApiServer, admin: client.ApiClient, tmp_path: Path
) -> None:
    sa = _api(enforced, tmp_path / "sa.kubeconfig", SA_TOKEN)
    subject = {"kind": "ServiceAccount", "name": "bot", "namespace": "ops"}
    rules = [
        {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["only-this"]},
    ]
    _create(admin, _role("narrow", rules, "ops"))
    _create(admin, _binding("narrow", "Role", "narrow", subject, "ops"))
    assert _can(sa, "get", "secrets", "ops").allowed is False  # not any secret: only the named one
    status: Any = (
        client.AuthorizationV1Api(sa)
        .create_self_subject_access_review(
            client.V1SelfSubjectAccessReview(
                spec=client.V1SelfSubjectAccessReviewSpec(
                    resource_attributes=client.V1ResourceAttributes(
                        verb="get", resource="secrets", name="only-this", namespace="ops"
                    )
                )
            )
        )
        .status
    )
    assert status.allowed is True
    assert status.reason == 'RBAC: allowed by RoleBinding "narrow/ops" of Role "narrow" to ServiceAccount "bot/ops"'
    with pytest.raises(client.ApiException) as exc:
        client.CoreV1Api(sa).read_namespaced_secret("another", "ops")
    assert _forbidden(exc.value) == (
        'secrets "another" is forbidden: User "system:serviceaccount:ops:bot" cannot get resource "secrets" '
        'in API group "" in the namespace "ops"'
    )
    apps = client.AppsV1Api(sa)
    with pytest.raises(client.ApiException) as scale:
        apps.read_namespaced_deployment_scale("web", "ops")
    assert scale.value.status == 404  # allowed through: it simply does not exist
    with pytest.raises(client.ApiException) as deployment:
        apps.read_namespaced_deployment("web", "ops")
    _forbidden(deployment.value)
    review = _rules_review(sa, "ops")
    named = [r for r in review.status.resource_rules if r.resource_names]
    assert [(r.verbs, r.resources, r.resource_names) for r in named] == [(["get"], ["secrets"], ["only-this"])]
    # an aggregated ClusterRole holds the rules of the ClusterRoles its selectors match
    part = _role("pvc-part", [{"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["list"]}])
    part["metadata"]["labels"] = {"example.com/aggregate-to-bot": "true"}
    _create(admin, part)
    agg = _role("bot-aggregate", [])
    agg["aggregationRule"] = {"clusterRoleSelectors": [{"matchLabels": {"example.com/aggregate-to-bot": "true"}}]}
    _create(admin, agg)
    _create(admin, _binding("bot-aggregate", "ClusterRole", "bot-aggregate", subject))
    client.CoreV1Api(sa).list_namespaced_persistent_volume_claim("team-b")
    assert _verbs_for(_rules_review(sa, "team-b"), "", "persistentvolumeclaims") == {"list"}


def test_reviews_and_discovery_are_allowed_to_everyone(enforced: KubeApiServer, jane: client.ApiClient) -> None:
    assert _can(jane, "get", "nodes").allowed is False  # jane holds nothing, yet may ask
    assert _rules_review(jane, "team-a").status.non_resource_rules
    assert client.CoreV1Api(jane).get_api_resources().resources
    headers = {"Authorization": f"Bearer {JANE}"}
    with httpx.Client(verify=enforced.ssl_context()) as http:
        assert http.get(f"{enforced.url}/apis", headers=headers).status_code == 200
        assert http.get(f"{enforced.url}/openapi/v3", headers=headers).status_code == 200
        enforced.store.delete("clusterrolebindings.rbac.authorization.k8s.io", None, "system:discovery")
        refused = http.get(f"{enforced.url}/apis", headers=headers)
        assert refused.status_code == 403
        assert refused.json()["message"] == 'forbidden: User "jane" cannot get path "/apis"'
        assert http.get(f"{enforced.url}/version", headers=headers).status_code == 200  # public


def test_the_deny_list_applies_on_top_of_rbac(
    enforced: KubeApiServer, admin: client.ApiClient, jane: client.ApiClient
) -> None:
    _create(admin, _role("pod-reader", READ_PODS, "team-a"))
    _create(admin, _binding("read-pods", "Role", "pod-reader", USER_JANE, "team-a"))
    enforced.deny("list", "pods", namespace="team-a")
    with pytest.raises(client.ApiException) as exc:
        client.CoreV1Api(jane).list_namespaced_pod("team-a")
    _forbidden(exc.value)
    assert _can(jane, "get", "pods", "team-a").allowed is True
    assert _verbs_for(_rules_review(jane, "team-a"), "", "pods") == {"get"}


def test_escalation_prevention(admin: client.ApiClient, jane: client.ApiClient) -> None:
    manage = [
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"], "verbs": ["create"]},
        *READ_PODS,
    ]
    _create(admin, _role("role-maker", manage, "team-a"))
    _create(admin, _binding("role-maker", "Role", "role-maker", USER_JANE, "team-a"))
    _create(jane, _role("pods-too", READ_PODS, "team-a"))  # only what she holds: allowed
    with pytest.raises(client.ApiException) as exc:
        _create(
            jane, _role("secrets", [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}], "team-a")
        )
    assert _forbidden(exc.value) == (
        'roles.rbac.authorization.k8s.io "secrets" is forbidden: user "jane" (groups=["devs" "system:authenticated"]) '
        "is attempting to grant RBAC permissions not currently held:\n"
        '{APIGroups:[""], Resources:["secrets"], Verbs:["get" "list"]}'
    )
    # binding a ClusterRole she does not hold: refused; with `bind` on it: allowed
    _create(admin, _role("secret-reader", [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]))
    binding = _binding("secrets", "ClusterRole", "secret-reader", USER_JANE, "team-a")
    with pytest.raises(client.ApiException) as bind:
        _create(jane, binding)
    assert "is attempting to grant RBAC permissions not currently held" in _forbidden(bind.value)
    bind_rule = {
        "apiGroups": ["rbac.authorization.k8s.io"],
        "resources": ["clusterroles"],
        "verbs": ["bind"],
        "resourceNames": ["secret-reader"],
    }
    _create(admin, _role("binder", [bind_rule], "team-a"))
    _create(admin, _binding("binder", "Role", "binder", USER_JANE, "team-a"))
    _create(jane, binding)
    assert _can(jane, "get", "secrets", "team-a").allowed is True
    # `escalate` lets her write a Role granting what she lacks
    escalate = {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"], "verbs": ["escalate"]}
    _create(admin, _role("escalator", [escalate], "team-a"))
    _create(admin, _binding("escalator", "Role", "escalator", USER_JANE, "team-a"))
    _create(jane, _role("deployments", [{"apiGroups": ["apps"], "resources": ["*"], "verbs": ["*"]}], "team-a"))
