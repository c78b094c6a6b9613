"""The bot's Helm chart (``helm-chart/``), linted and rendered by the real Helm 3 and Helm 4.

Covers, for the default values and for each switch (chart-made Secret or existingSecret, Socket
Mode, Redis in the chart or managed by URL or by Secret, Ingress, NetworkPolicy, and every
optional value set): ``helm lint --strict`` passes; ``helm template`` renders manifests that are
valid (strict: no unknown field) against the Kubernetes OpenAPI schemas of v1.25 (the chart's
``kubeVersion`` floor) and v1.37, with the validator ``kubernetes-validate`` and its bundled
schemas (offline); both helms render the same thing. The shape a platform team expects: one
replica, Recreate, non-root with a read-only root filesystem and every capability dropped,
helm's folders and TMPDIR on a writable emptyDir, the probes on the PORT, resources, a Role per
target namespace (no built-in ``admin`` role bound), a pinned Redis with a PVC and an
append-only file. ``values.schema.json`` refuses a wrong type, a missing or empty ``operators``
and unknown keys with helm's own message (shown); the chart refuses what the schema cannot see
(no token, Socket Mode with an Ingress...) with one line. Every setting the bot reads
(``bot/settings.py``, and both configuration tables of the README) is a chart value mapped to its
environment variable, and the rendered environment of every switch loads in the bot's own
settings parser. The chart installs into the sandbox's API server with the real helm, and the
NOTES say how to finish the Slack setup (request URL, or Socket Mode).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from bot import settings as bot_settings
from sandbox.kube.server import KubeApiServer
from tests.chart_render import CHART, NAMESPACE, RELEASE, ROOT, find, helm, one, render, template, values_file

HELMS = pytest.mark.parametrize("major", [4, 3], ids=["helm4", "helm3"])
KUBE_VERSIONS = ("1.25.0", "1.37.0")  # the chart's kubeVersion floor, and the newest schemas bundled
TARGETS = ["milvus", "default"]
BASE: dict[str, Any] = {"operators": "U0ALICE,S0OPS", "targetNamespaces": TARGETS}
SLACK_SECRET = "upgrade-bot-slack"

EVERYTHING: dict[str, Any] = {
    **BASE,
    "slack": {
        "botToken": "xoxb-1-everything",
        "signingSecret": "sig-everything",
        "apiUrl": "https://slack.example/api/",
    },
    "milvusToken": "root:Milvus",
    "redis": {"enabled": False, "url": "rediss://:pw@redis.example.com:6380/1"},
    "requireSecondApprover": True,
    "backupToSlack": "full",
    "approvalTtlSeconds": 7200,
    "reminderSeconds": 600,
    "auditRetentionDays": 30,
    "channels": "C0UPGRADE,G0PRIVATE",
    "pollIntervalSeconds": 2,
    "port": 8080,
    "logLevel": "DEBUG",
    "logFormat": "text",
    "milvus": {
        "mgmtUrl": "http://{release}-milvus.{namespace}:9091",
        "url": "http://{release}-milvus.{namespace}:19530",
    },
    "milvusHelm": {"repoUrl": "https://charts.example/milvus", "chart": "mirror/milvus", "chartVersion": "4.2.58"},
    "helm": {"bin": "/usr/local/bin/helm"},
    "kubernetes": {
        "kubeconfigSecret": "remote-kubeconfig",
        "kubeconfigSecretKey": "kubeconfig.yaml",
        "context": "prod",
        "requestTimeoutSeconds": 20,
    },
    "timeouts": {"flushSeconds": 1200, "podsSeconds": 1800, "pvcSeconds": 120, "loadSeconds": 900},
    "runnerLeaseSeconds": 20,
    "runnerWorkers": 8,
    "shutdownGraceSeconds": 50,
    "terminationGracePeriodSeconds": 70,
    "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy.example:3128"}],
    "rbac": {"extraRules": [{"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": ["get"]}]},
    "image": {"digest": "sha256:" + "a" * 64},
    "podAnnotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "8080"},
}

SWITCHES: dict[str, dict[str, Any]] = {
    # Redis in the chart, HTTP mode, the tokens in a Secret the platform manages.
    "default": {**BASE, "slack": {"existingSecret": SLACK_SECRET}},
    "chart-secret": {**BASE, "slack": {"botToken": "xoxb-1-test", "signingSecret": "sig-test"}, "milvusToken": "tok"},
    "socket-mode": {
        **BASE,
        "slack": {"existingSecret": SLACK_SECRET, "socketMode": True},
        "service": {"enabled": False},
    },
    "socket-mode-chart-secret": {
        **BASE,
        "slack": {"botToken": "xoxb-1-test", "appToken": "xapp-1-test", "socketMode": True},
        "networkPolicy": {"enabled": True},
    },
    "redis-managed-url": {
        **BASE,
        "slack": {"existingSecret": SLACK_SECRET},
        "redis": {"enabled": False, "url": "rediss://:pw@redis.example.com:6380/0"},
    },
    "redis-managed-secret": {
        **BASE,
        "slack": {"existingSecret": SLACK_SECRET},
        "redis": {"enabled": False, "existingSecret": "redis-url", "existingSecretKey": "url"},
    },
    "ingress": {
        **BASE,
        "slack": {"existingSecret": SLACK_SECRET},
        "ingress": {
            "enabled": True,
            "className": "nginx",
            "host": "bot.example.com",
            "tls": [{"hosts": ["bot.example.com"], "secretName": "bot-tls"}],
        },
    },
    "network-policy": {
        **BASE,
        "slack": {"existingSecret": SLACK_SECRET},
        "networkPolicy": {
            "enabled": True,
            "ingressFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}],
        },
    },
    "everything": EVERYTHING,
}
SWITCH = pytest.mark.parametrize("switch", list(SWITCHES))


def _deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(docs, "Deployment", RELEASE)


def _container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = _deployment(docs)["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["bot"]
    return dict(containers[0])


def _env(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """name -> value, or ("secret", name, key, optional) for a secretKeyRef."""
    out: dict[str, Any] = {}
    for e in _container(docs)["env"]:
        assert e["name"] not in out, f"{e['name']} is set twice"
        if "value" in e:
            out[e["name"]] = e["value"]
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            out[e["name"]] = ("secret", ref["name"], ref["key"], bool(ref.get("optional", False)))
    return out


# --- lint and render ------------------------------------------------------------------------


@HELMS
@SWITCH
def test_helm_lint_strict(major: int, switch: str) -> None:
    proc = helm(major, "lint", "--strict", str(CHART), "--namespace", NAMESPACE, "-f", values_file(SWITCHES[switch]))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout


@HELMS
@SWITCH
def test_rendered_manifests_are_valid_kubernetes(major: int, switch: str) -> None:
    docs = render(major, SWITCHES[switch])
    assert docs
    for doc in docs:
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as err:
                raise AssertionError(
                    f"{doc['kind']} {doc['metadata']['name']} is not valid in {version}: {err}"
                ) from None
    _check_common_shape(docs, SWITCHES[switch])


@SWITCH
def test_helm3_and_helm4_render_the_same(switch: str) -> None:
    assert render(3, SWITCHES[switch]) == render(4, SWITCHES[switch])


def _check_common_shape(docs: list[dict[str, Any]], values: dict[str, Any]) -> None:
    """What every rendering must be, whatever the switches."""
    deployment = _deployment(docs)
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == RELEASE
    assert one(docs, "ServiceAccount", RELEASE)["metadata"]["namespace"] == NAMESPACE
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    container = _container(docs)
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    # helm's folders and every temp file on the writable emptyDir
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes["tmp"]
    scratch = mounts["tmp"]
    env = _env(docs)
    for name in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME", "TMPDIR"):
        assert env[name] == scratch or env[name].startswith(scratch + "/"), (name, env[name])
    # the probes on the PORT
    port = values.get("port", 3000)
    assert env["PORT"] == str(port)
    assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    # the image: the chart's appVersion, or a digest
    digest = values.get("image", {}).get("digest")
    assert container["image"].endswith(f"@{digest}" if digest else ":0.1.0")
    # RBAC: a Role and RoleBinding in each target namespace, nothing bound to a built-in role
    roles = {r["metadata"]["namespace"] for r in find(docs, "Role")}
    bindings = find(docs, "RoleBinding")
    assert roles == set(TARGETS) == {b["metadata"]["namespace"] for b in bindings}
    for binding in [*bindings, *find(docs, "ClusterRoleBinding")]:
        assert binding["roleRef"]["name"] not in ("admin", "edit", "cluster-admin", "view")
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}]
    assert {b["roleRef"]["kind"] for b in bindings} == {"Role"}
    # no object lands outside the release namespace but the Roles
    for doc in docs:
        ns = doc["metadata"].get("namespace")
        if doc["kind"] in ("Role", "RoleBinding"):
            assert ns in TARGETS
        elif doc["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            assert ns is None
        else:
            assert ns == NAMESPACE, doc["metadata"]


# --- each switch ----------------------------------------------------------------------------


@HELMS
def test_default_values_run_redis_in_the_chart_with_the_tokens_in_an_existing_secret(major: int) -> None:
    docs = render(major, SWITCHES["default"])
    env = _env(docs)
    assert env["SLACK_BOT_TOKEN"] == ("secret", SLACK_SECRET, "SLACK_BOT_TOKEN", False)
    assert env["SLACK_SIGNING_SECRET"] == ("secret", SLACK_SECRET, "SLACK_SIGNING_SECRET", False)
    assert env["MILVUS_TOKEN"] == ("secret", SLACK_SECRET, "MILVUS_TOKEN", True)
    assert "SLACK_APP_TOKEN" not in env  # HTTP mode
    assert find(docs, "Secret") == []  # the chart makes no Secret
    assert env["BOT_OPERATORS"] == "U0ALICE,S0OPS"
    # Redis: a StatefulSet with a pinned image, a PVC template, AOF on, its own Service
    redis = one(docs, "StatefulSet", f"{RELEASE}-redis")
    assert redis["spec"]["replicas"] == 1
    (rc,) = redis["spec"]["template"]["spec"]["containers"]
    assert re.fullmatch(r"docker\.io/library/redis:\d+\.\d+\.\d+-alpine", rc["image"]), rc["image"]
    args = rc["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert rc["securityContext"]["readOnlyRootFilesystem"] is True and rc["securityContext"]["runAsNonRoot"] is True
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert {m["name"] for m in rc["volumeMounts"]} == {claim["metadata"]["name"]}
    svc = one(docs, "Service", f"{RELEASE}-redis")
    assert svc["spec"]["selector"] == redis["spec"]["selector"]["matchLabels"]
    assert env["REDIS_URL"] == f"redis://{RELEASE}-redis:6379/0"
    # the bot's selector never matches the Redis pod
    bot_selector = _deployment(docs)["spec"]["selector"]["matchLabels"]
    redis_labels = redis["spec"]["template"]["metadata"]["labels"]
    assert not all(redis_labels.get(k) == v for k, v in bot_selector.items())
    # HTTP mode: a Service for Slack's requests, no Ingress unless asked
    assert one(docs, "Service", RELEASE)["spec"]["ports"][0]["targetPort"] == "http"
    assert find(docs, "Ingress") == [] and find(docs, "NetworkPolicy") == []


@HELMS
def test_chart_made_secret_holds_the_tokens(major: int) -> None:
    docs = render(major, SWITCHES["chart-secret"])
    secret = one(docs, "Secret", RELEASE)
    assert secret["stringData"] == {
        "SLACK_BOT_TOKEN": "xoxb-1-test",
        "SLACK_SIGNING_SECRET": "sig-test",
        "MILVUS_TOKEN": "tok",
    }
    env = _env(docs)
    assert env["SLACK_BOT_TOKEN"] == ("secret", RELEASE, "SLACK_BOT_TOKEN", False)
    assert env["MILVUS_TOKEN"] == ("secret", RELEASE, "MILVUS_TOKEN", True)
    # a token changed in the values restarts the pod
    annotations = _deployment(docs)["spec"]["template"]["metadata"]["annotations"]
    changed = copy.deepcopy(SWITCHES["chart-secret"])
    changed["slack"]["botToken"] = "xoxb-2-rotated"
    again = _deployment(render(major, changed))["spec"]["template"]["metadata"]["annotations"]
    assert annotations["checksum/secret"] != again["checksum/secret"]
    # no token anywhere but in the Secret
    for doc in docs:
        if doc["kind"] != "Secret":
            assert "xoxb-1-test" not in str(doc) and "sig-test" not in str(doc)


@HELMS
def test_socket_mode(major: int) -> None:
    docs = render(major, SWITCHES["socket-mode"])
    env = _env(docs)
    assert env["SLACK_APP_TOKEN"] == ("secret", SLACK_SECRET, "SLACK_APP_TOKEN", False)
    assert env["SLACK_SIGNING_SECRET"] == ("secret", SLACK_SECRET, "SLACK_SIGNING_SECRET", True)  # not needed
    assert find(docs, "Service", RELEASE) == [] and find(docs, "Ingress") == []
    # probes still on the PORT: the bot serves /healthz and /readyz in Socket Mode too
    assert _container(docs)["readinessProbe"]["httpGet"]["path"] == "/readyz"

    docs = render(major, SWITCHES["socket-mode-chart-secret"])
    assert one(docs, "Secret", RELEASE)["stringData"] == {
        "SLACK_BOT_TOKEN": "xoxb-1-test",
        "SLACK_APP_TOKEN": "xapp-1-test",
    }
    policy = one(docs, "NetworkPolicy", RELEASE)
    assert policy["spec"]["ingress"] == []  # nothing connects in: the bot dials Slack


@HELMS
def test_managed_redis_by_url_or_secret(major: int) -> None:
    docs = render(major, SWITCHES["redis-managed-url"])
    assert find(docs, "StatefulSet") == [] and find(docs, "Service", f"{RELEASE}-redis") == []
    assert _env(docs)["REDIS_URL"] == "rediss://:pw@redis.example.com:6380/0"  # TLS accepted
    docs = render(major, SWITCHES["redis-managed-secret"])
    assert find(docs, "StatefulSet") == []
    assert _env(docs)["REDIS_URL"] == ("secret", "redis-url", "url", False)


@HELMS
def test_ingress_exposes_only_the_slack_endpoint(major: int) -> None:
    docs = render(major, SWITCHES["ingress"])
    ingress = one(docs, "Ingress", RELEASE)
    assert ingress["spec"]["ingressClassName"] == "nginx"
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "bot.example.com"
    assert rule["http"]["paths"] == [
        {
            "path": "/slack/events",
            "pathType": "Exact",
            "backend": {"service": {"name": RELEASE, "port": {"name": "http"}}},
        }
    ]
    assert ingress["spec"]["tls"] == [{"hosts": ["bot.example.com"], "secretName": "bot-tls"}]
    assert one(docs, "Service", RELEASE)["spec"]["ports"][0]["name"] == "http"


@HELMS
def test_network_policy(major: int) -> None:
    docs = render(major, SWITCHES["network-policy"])
    policy = one(docs, "NetworkPolicy", RELEASE)
    assert policy["spec"]["podSelector"]["matchLabels"] == _deployment(docs)["spec"]["selector"]["matchLabels"]
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    (ingress,) = policy["spec"]["ingress"]
    assert ingress["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert ingress["from"] == SWITCHES["network-policy"]["networkPolicy"]["ingressFrom"]
    egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule.get("ports", [])}
    assert {53, 443, 6379, 19530, 9091} <= egress_ports
    milvus = next(r for r in policy["spec"]["egress"] if {"port": 19530, "protocol": "TCP"} in r["ports"])
    assert milvus["to"][0]["namespaceSelector"]["matchExpressions"][0]["values"] == TARGETS
    redis = one(docs, "NetworkPolicy", f"{RELEASE}-redis")
    (only,) = redis["spec"]["ingress"]
    assert only["from"] == [{"podSelector": {"matchLabels": _deployment(docs)["spec"]["selector"]["matchLabels"]}}]


# --- settings -------------------------------------------------------------------------------


def _settings_names() -> set[str]:
    """Every environment variable ``bot/settings.py`` reads (read as text: ``(env, "NAME"``)."""
    source = (ROOT / "bot" / "settings.py").read_text(encoding="utf-8")
    names = set(re.findall(r'\(\s*env\s*,\s*"([A-Z][A-Z0-9_]+)"', source))
    names |= set(re.findall(r'env(?:iron)?\.get\(\s*"([A-Z][A-Z0-9_]+)"', source))
    return names


def _readme_names() -> set[str]:
    """The names of both tables of the README's "Configuration" section."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Configuration", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| ([A-Z][A-Z0-9_]+) \|", section, flags=re.M))


EXPECTED_EVERYTHING_ENV = {
    "SLACK_BOT_TOKEN": ("secret", RELEASE, "SLACK_BOT_TOKEN", False),
    "SLACK_SIGNING_SECRET": ("secret", RELEASE, "SLACK_SIGNING_SECRET", False),
    "MILVUS_TOKEN": ("secret", RELEASE, "MILVUS_TOKEN", True),
    "SLACK_API_URL": "https://slack.example/api/",
    "REDIS_URL": "rediss://:pw@redis.example.com:6380/1",
    "KUBECONFIG": "/etc/milvus-pulsar-upgrade-bot/kubeconfig/kubeconfig.yaml",
    "KUBE_CONTEXT": "prod",
    "HELM_BIN": "/usr/local/bin/helm",
    "MILVUS_MGMT_URL": "http://{release}-milvus.{namespace}:9091",
    "MILVUS_URL": "http://{release}-milvus.{namespace}:19530",
    "BOT_OPERATORS": "U0ALICE,S0OPS",
    "BOT_REQUIRE_SECOND_APPROVER": "true",
    "BOT_BACKUP_TO_SLACK": "full",
    "BOT_APPROVAL_TTL_SECONDS": "7200",
    "BOT_REMINDER_SECONDS": "600",
    "BOT_AUDIT_RETENTION_DAYS": "30",
    "BOT_CHANNELS": "C0UPGRADE,G0PRIVATE",
    "BOT_NAMESPACES": ",".join(TARGETS),  # scan's default scope: where the chart grants rights
    "POLL_INTERVAL_SECONDS": "2",
    "MILVUS_HELM_REPO_URL": "https://charts.example/milvus",
    "MILVUS_HELM_CHART": "mirror/milvus",
    "MILVUS_HELM_CHART_VERSION": "4.2.58",
    "PORT": "8080",
    "LOG_LEVEL": "DEBUG",
    "LOG_FORMAT": "text",
    "UPGRADE_FLUSH_TIMEOUT_SECONDS": "1200",
    "UPGRADE_PODS_TIMEOUT_SECONDS": "1800",
    "UPGRADE_PVC_TIMEOUT_SECONDS": "120",
    "UPGRADE_LOAD_TIMEOUT_SECONDS": "900",
    "RUNNER_LEASE_SECONDS": "20",
    "RUNNER_WORKERS": "8",
    "BOT_SHUTDOWN_GRACE_SECONDS": "50",
    "KUBE_REQUEST_TIMEOUT_SECONDS": "20",
    "HTTPS_PROXY": "http://proxy.example:3128",
}


def test_every_setting_is_a_chart_value_mapped_to_its_variable() -> None:
    settings_names, readme_names = _settings_names(), _readme_names()
    assert len(settings_names) >= 25 and len(readme_names) >= 25, (settings_names, readme_names)
    docs = render(4, EVERYTHING)
    env = _env(docs)
    socket = _env(render(4, SWITCHES["socket-mode"]))
    covered = set(env) | set(socket)
    assert settings_names - covered == set(), "settings the chart does not pass"
    assert readme_names - covered == set(), "README settings the chart does not pass"
    # each is mapped from its value (not a constant): every non-default value arrives as set
    for name, want in EXPECTED_EVERYTHING_ENV.items():
        assert env.get(name) == want, (name, env.get(name))
    assert socket["SLACK_APP_TOKEN"] == ("secret", SLACK_SECRET, "SLACK_APP_TOKEN", False)
    assert _deployment(docs)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 70
    assert _deployment(docs)["spec"]["template"]["spec"]["automountServiceAccountToken"] is False  # kubeconfig given


FAKE_SECRETS = {
    "SLACK_BOT_TOKEN": "xoxb-1-from-secret",
    "SLACK_SIGNING_SECRET": "sig-from-secret",
    "SLACK_APP_TOKEN": "xapp-1-from-secret",
    "REDIS_URL": "rediss://:pw@redis.example.com:6380/2",
}


@SWITCH
def test_rendered_environment_loads_in_the_bot(switch: str) -> None:
    """The pod's environment (secret keys filled in, optional ones left out) passes the bot's own
    settings validation, so the pod would start instead of exiting 2."""
    env: dict[str, str] = {}
    for name, value in _env(render(4, SWITCHES[switch])).items():
        if isinstance(value, tuple):
            _, _, key, optional = value
            if key in FAKE_SECRETS or key == "url":
                env[name] = FAKE_SECRETS.get(key, FAKE_SECRETS["REDIS_URL"])
            else:
                assert optional, f"{name} comes from key {key}, which this test does not fill in"
        else:
            env[name] = value
    loaded = bot_settings.load(env)
    assert loaded.socket_mode == bool(SWITCHES[switch]["slack"].get("socketMode"))
    assert loaded.operators == {"U0ALICE", "S0OPS"}


# --- refusals -------------------------------------------------------------------------------

SCHEMA_REFUSALS: dict[str, tuple[dict[str, Any], dict[int, str]]] = {
    # case: (values, {helm major: a fragment of helm's message})
    "operators missing": (
        {"targetNamespaces": TARGETS, "slack": {"existingSecret": "s"}},
        {3: "operators is required", 4: "missing property 'operators'"},
    ),
    "operators empty": (
        {**SWITCHES["default"], "operators": ""},
        {
            3: "operators: String length must be greater than or equal to 1",
            4: "at '/operators': minLength: got 0, want 1",
        },
    ),
    "operators empty list": (
        {**SWITCHES["default"], "operators": []},
        {3: "operators: Array must have at least 1 items", 4: "at '/operators': minItems: got 0, want 1"},
    ),
    "operators not Slack IDs": (
        {**SWITCHES["default"], "operators": "alice,bob"},
        {3: "operators: Does not match pattern", 4: "'alice,bob' does not match pattern"},
    ),
    "port of the wrong type": (
        {**SWITCHES["default"], "port": "3000/tcp"},
        {3: "port: Invalid type. Expected: integer, given: string", 4: "at '/port': got string, want integer"},
    ),
    "boolean of the wrong type": (
        {**SWITCHES["default"], "requireSecondApprover": "yes"},
        {
            3: "requireSecondApprover: Invalid type. Expected: boolean",
            4: "at '/requireSecondApprover': got string, want boolean",
        },
    ),
    "no target namespace": (
        {**SWITCHES["default"], "targetNamespaces": []},
        {3: "targetNamespaces: Array must have at least 1 items", 4: "at '/targetNamespaces': minItems: got 0, want 1"},
    ),
    "a typo'd key": (
        {**SWITCHES["default"], "operator": "U0ALICE"},
        {3: "Additional property operator is not allowed", 4: "additional properties 'operator' not allowed"},
    ),
    "a Redis URL that is not redis://": (
        {**BASE, "slack": {"existingSecret": "s"}, "redis": {"enabled": False, "url": "http://redis:6379"}},
        {3: "redis.url: Does not match pattern", 4: "at '/redis/url'"},
    ),
    "not a bot token": (
        {**BASE, "slack": {"botToken": "xoxp-user-token", "signingSecret": "s"}},
        {3: "slack.botToken: Does not match pattern", 4: "at '/slack/botToken'"},
    ),
    "backupToSlack not redacted or full": (
        {**SWITCHES["default"], "backupToSlack": "all"},
        {
            3: "backupToSlack: backupToSlack must be one of the following",
            4: "at '/backupToSlack': value must be one of",
        },
    ),
}


@HELMS
@pytest.mark.parametrize("case", list(SCHEMA_REFUSALS))
def test_schema_refuses_bad_values_with_helms_message(major: int, case: str) -> None:
    values, fragments = SCHEMA_REFUSALS[case]
    for proc in (
        template(major, values),
        helm(major, "lint", str(CHART), "-f", values_file(values)),
    ):
        shown = proc.stdout + proc.stderr
        print(f"helm {major}, {case}:\n{shown}")
        assert proc.returncode != 0, shown
        assert "values don't meet the specifications of the schema" in shown, shown
        assert fragments[major] in shown, shown


CHART_REFUSALS: dict[str, tuple[dict[str, Any], str]] = {
    "no token and no Secret": ({**BASE}, "set slack.existingSecret"),
    "HTTP mode without a signing secret": (
        {**BASE, "slack": {"botToken": "xoxb-1"}},
        "slack.signingSecret is required in HTTP mode",
    ),
    "Socket Mode without an app token": (
        {**BASE, "slack": {"botToken": "xoxb-1", "socketMode": True}},
        "slack.appToken (xapp-...) is required with slack.socketMode=true",
    ),
    "Socket Mode with an Ingress": (
        {**BASE, "slack": {"existingSecret": "s", "socketMode": True}, "ingress": {"enabled": True}},
        "Socket Mode needs no Ingress",
    ),
    "no Redis at all": (
        {**BASE, "slack": {"existingSecret": "s"}, "redis": {"enabled": False}},
        "set redis.enabled=true",
    ),
    "two Redis at once": (
        {**BASE, "slack": {"existingSecret": "s"}, "redis": {"url": "redis://r:6379/0"}},
        "redis.enabled=true deploys a Redis",
    ),
    "a shutdown grace longer than the pod's": (
        {**SWITCHES["default"], "shutdownGraceSeconds": 60, "terminationGracePeriodSeconds": 30},
        "must be below terminationGracePeriodSeconds",
    ),
}


@HELMS
@pytest.mark.parametrize("case", list(CHART_REFUSALS))
def test_chart_refuses_inconsistent_values_in_one_line(major: int, case: str) -> None:
    values, fragment = CHART_REFUSALS[case]
    proc = template(major, values)
    print(f"helm {major}, {case}:\n{proc.stderr}")
    assert proc.returncode != 0 and fragment in proc.stderr, proc.stderr


# --- installed with the real helm -----------------------------------------------------------


@HELMS
def test_installs_into_a_cluster_and_says_how_to_finish_the_slack_setup(major: int, tmp_path: Path) -> None:
    server = KubeApiServer().start()
    try:
        kubeconfig = server.write_kubeconfig(str(tmp_path / "kubeconfig"))
        env = {"KUBECONFIG": kubeconfig}
        for ns in (NAMESPACE, *TARGETS):
            server.store.ensure_namespace(ns)
        values = SWITCHES["chart-secret"]
        proc = helm(major, "install", RELEASE, str(CHART), "-n", NAMESPACE, "-f", values_file(values), env=env)
        assert proc.returncode == 0, proc.stderr
        notes = proc.stdout.split("NOTES:", 1)[1]
        assert "https://<your public host>/slack/events" in notes and "slack-app-manifest.yaml" in notes
        assert server.store.get("deployments.apps", NAMESPACE, RELEASE)["spec"]["strategy"] == {"type": "Recreate"}
        assert server.store.get("statefulsets.apps", NAMESPACE, f"{RELEASE}-redis")
        assert {r["metadata"]["namespace"] for r in server.store.list("roles.rbac.authorization.k8s.io")} == set(
            TARGETS
        )
        assert server.store.list("rolebindings.rbac.authorization.k8s.io", NAMESPACE) == []
        proc = helm(major, "uninstall", RELEASE, "-n", NAMESPACE, env=env)
        assert proc.returncode == 0, proc.stderr
        assert server.store.try_get("deployments.apps", NAMESPACE, RELEASE) is None

        schema = helm(
            major, "install", RELEASE, str(CHART), "-n", NAMESPACE, "-f", values_file({**BASE, "port": "x"}), env=env
        )
        assert schema.returncode != 0 and "port" in schema.stderr, schema.stderr
        if major == 3:
            return  # Helm 3's client-side dry run still maps every kind on the server, which serves no Ingress
        # the other ways to finish the Slack setup (a client-side dry run: the sandbox serves no Ingress)
        ingress = helm(
            major, "install", RELEASE, str(CHART), "-n", NAMESPACE, "--dry-run=client", "--disable-openapi-validation",
            "-f", values_file(SWITCHES["ingress"]), env=env,
        )  # fmt: skip
        assert ingress.returncode == 0, ingress.stderr
        assert "https://bot.example.com/slack/events" in ingress.stdout.split("NOTES:", 1)[1]
        socket = helm(
            major, "install", RELEASE, str(CHART), "-n", NAMESPACE, "--dry-run=client", "--disable-openapi-validation",
            "-f", values_file(SWITCHES["socket-mode"]), env=env,
        )  # fmt: skip
        assert socket.returncode == 0, socket.stderr
        socket_notes = socket.stdout.split("NOTES:", 1)[1]
        assert "Socket Mode" in socket_notes and "slack-app-manifest-socket-mode.yaml" in socket_notes
        assert "connections:write" in socket_notes and "/slack/events" not in socket_notes
    finally:
        server.stop()


# --- the README's tables and the image --------------------------------------------------------


def _readme_section(title: str) -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return readme.split(f"\n### {title}\n", 1)[1].split("\n#", 1)[0]


def _leaves(values: Any, prefix: str = "") -> set[str]:
    if isinstance(values, dict) and values:
        return {leaf for k, v in values.items() for leaf in _leaves(v, f"{prefix}{k}.")}
    return {prefix.rstrip(".")}


def test_readme_lists_every_chart_value() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    leaves = _leaves(values) | {"operators"}  # operators is required, so only commented in values.yaml
    rows = [line for line in _readme_section("Chart values").splitlines() if line.startswith("| `")]
    documented = {name for row in rows for name in re.findall(r"`([A-Za-z][\w.*]*)`", row.split(" | ")[0])}
    assert len(documented) > 40, documented

    def covered(leaf: str) -> bool:
        parts = leaf.split(".")
        ancestors = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
        return bool(ancestors & documented) or any(d.endswith(".*") and leaf.startswith(d[:-1]) for d in documented)

    assert sorted(leaf for leaf in leaves if not covered(leaf)) == [], "values missing from the README's table"
    known = leaves | {p for leaf in leaves for p in (".".join(leaf.split(".")[:i]) for i in range(1, 4))}
    stale = sorted(d for d in documented if not d.endswith(".*") and d not in known)
    assert stale == [], "the README documents values the chart does not have"


def _rbac_rows(table: str) -> list[tuple[frozenset[str], frozenset[str], frozenset[str]]]:
    rows = []
    for line in table.strip().splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        groups, resources, verbs = ({x.strip('"') for x in re.findall(r"`([^`]*)`", c)} for c in cells[:3])
        rows.append((frozenset(groups), frozenset(resources), frozenset(verbs)))
    return rows


def test_readme_lists_every_rbac_rule_with_its_reason() -> None:
    section = _readme_section("RBAC")
    tables = re.findall(r"(\| apiGroup \|.*?)(?:\n\n|\Z)", section, flags=re.S)
    assert len(tables) == 2, section
    for table in tables:  # every rule with its reason
        for line in table.strip().splitlines()[2:]:
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            assert len(cells) == 4 and len(cells[3]) > 20, line
    docs = render(4, SWITCHES["default"])

    def rules(kind: str, namespace: str | None) -> list[tuple[frozenset[str], frozenset[str], frozenset[str]]]:
        role = next(d for d in docs if d["kind"] == kind and d["metadata"].get("namespace") == namespace)
        return [(frozenset(r["apiGroups"]), frozenset(r["resources"]), frozenset(r["verbs"])) for r in role["rules"]]

    assert sorted(_rbac_rows(tables[0]), key=str) == sorted(rules("ClusterRole", None), key=str)
    assert sorted(_rbac_rows(tables[1]), key=str) == sorted(rules("Role", TARGETS[0]), key=str)


def test_dockerfile_pins_checks_and_drops_root() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    lines = [line.strip() for line in dockerfile.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", "\n".join(lines), flags=re.M))
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", args["PYTHON_IMAGE"]), args["PYTHON_IMAGE"]
    froms = [line for line in lines if line.startswith("FROM ")]
    assert froms == ["FROM ${PYTHON_IMAGE} AS builder", "FROM ${PYTHON_IMAGE}"]
    # helm: the version the tests run as Helm 4, checked against a published sha256 before use
    tested = helm(4, "version", "--short").stdout.strip().split("+")[0]
    assert args["HELM_VERSION"] == tested
    assert re.fullmatch(r"[0-9a-f]{64}", args["HELM_SHA256"])
    assert 'echo "${HELM_SHA256}  helm.tar.gz" | sha256sum -c -' in dockerfile
    builder, runtime = dockerfile.split("\nFROM ${PYTHON_IMAGE}\n")
    assert "pip wheel" in builder and "--no-index" in runtime and "/wheels" in runtime
    # the runtime stage: no package manager run, no compiler, no sources, not root
    assert "apt-get" not in runtime and not re.search(r"\b(gcc|build-essential|make|curl)\b", runtime)
    assert "COPY --from=builder /out/helm /usr/local/bin/helm" in runtime
    assert re.search(r"^USER 10001(:10001)?$", runtime, flags=re.M)
    assert not re.search(r"^COPY (?!--from)", runtime, flags=re.M)
    assert "sandbox" not in "\n".join(line for line in lines if line.startswith("COPY"))
    ignore = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert ignore[0] == "*" and {line for line in ignore if line.startswith("!")} == {
        "!pyproject.toml",
        "!README.md",
        "!bot/",
        "!handlers/",
        "!state/",
    }
