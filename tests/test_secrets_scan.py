"""No secret leaves the bot: a full Helm-path upgrade, then a scan of everything it left behind.

Covers: with a Milvus that requires a token (reached directly, MILVUS_URL/MILVUS_MGMT_URL),
a distinctive Kubernetes bearer token and a release whose values carry MinIO keys, one whole
upgrade (start, the three approvals, succeeded) leaves none of SLACK_BOT_TOKEN,
SLACK_SIGNING_SECRET, MILVUS_TOKEN (or its password), the kubeconfig's token or the MinIO keys
(plain or base64) in any line of the bot's log, any Slack message (text, blocks, attachments,
earlier versions), uploaded file, ephemeral, response_url post or Web API call, or any
ConfigMap or Event the bot wrote (Secrets are where the whole backup belongs, so they are not
scanned; the chart's own rendered ConfigMaps are not the bot's doing). The JSON log formatter
keeps every line valid JSON whatever its fields are named or hold (a numeric fencing token
stays a number; a text field named like a secret is redacted), and drops registered secrets
from field values and names.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bot import logs
from sandbox.botproc import BotProcess
from sandbox.world import BOT_TOKEN, CHANNEL, MINIO_ACCESS_KEY, MINIO_SECRET_KEY, SIGNING_SECRET, World
from tests.conftest import person

MILVUS_PASSWORD = "Milvus-scan-pw-5Hq2Zr"
MILVUS_TOKEN = f"root:{MILVUS_PASSWORD}"
KUBE_TOKEN = "kube-scan-bearer-3Wd8Lp0e"


def _forms(secrets: dict[str, str]) -> dict[str, str]:
    """Each secret as it is and base64-encoded (as a ConfigMap's binaryData or a header would hold it)."""
    forms = dict(secrets)
    for name, value in secrets.items():
        forms[f"{name} (base64)"] = base64.b64encode(value.encode()).decode()
    return forms


def _slack_places(world: World) -> Iterator[tuple[str, str]]:
    for root in world.slack.messages(CHANNEL):
        for msg in world.slack.thread(CHANNEL, root.ts):
            where = f"Slack message {msg.ts}"
            yield where, msg.text
            yield f"{where} blocks", json.dumps(msg.blocks)
            yield f"{where} attachments", json.dumps(msg.attachments)
            yield f"{where} files", json.dumps(msg.files)
            for i, edit in enumerate(msg.edits):
                yield f"{where} version {i}", json.dumps(edit)
    for f in world.slack.files():
        yield f"uploaded file {f.name!r}", (f.content or b"").decode("utf-8", "replace")
        yield f"uploaded file {f.name!r} comment/title", json.dumps([f.title, f.initial_comment, f.alt_txt])
    for e in world.slack.ephemerals():
        yield f"ephemeral to {e.user} ({e.source})", e.text + json.dumps(e.blocks) + json.dumps(e.attachments)
    for post in world.slack.responses:
        yield f"response_url post {post.url}", json.dumps(post.body)
    for call in world.slack.calls:
        yield f"Slack Web API call {call.method}", json.dumps(call.args, default=str)
    for view in world.slack.views:
        yield "Slack view", json.dumps(view)


def _places(world: World, bot: BotProcess) -> Iterator[tuple[str, str]]:
    """(where, text) for everything the bot wrote that a person or another program can read."""
    for n, line in enumerate(bot.log().splitlines(), 1):
        yield f"bot log line {n}", line
    yield from _slack_places(world)
    chart_rendered = {
        (c["metadata"]["namespace"], c["metadata"]["name"])
        for c in world.store.list("configmaps")
        if c["metadata"].get("labels", {}).get("app.kubernetes.io/managed-by") == "Helm"
    }
    for cm in world.store.list("configmaps"):
        key = (cm["metadata"]["namespace"], cm["metadata"]["name"])
        if key not in chart_rendered:
            yield f"ConfigMap {key[0]}/{key[1]}", json.dumps(cm)
    for ev in world.store.list("events"):
        yield f"Event {ev['metadata']['namespace']}/{ev['metadata']['name']}", json.dumps(ev)


def test_a_whole_upgrade_leaks_no_secret(make_world: Callable[..., World], make_bot: Callable[..., BotProcess]) -> None:
    world = make_world(milvus_token=MILVUS_TOKEN)
    # A kubeconfig token no other test uses, so that finding it means the bot leaked it.
    world.kube.token = KUBE_TOKEN
    world.kube.write_kubeconfig(world.kubeconfig)
    mgmt, rest = world.milvus_direct_urls("my-release")
    bot = make_bot(world, MILVUS_URL=rest, MILVUS_MGMT_URL=mgmt, MILVUS_TOKEN=MILVUS_TOKEN)
    values = world.releases[("default", "my-release")].values
    assert values["minio"]["accessKey"] == MINIO_ACCESS_KEY and values["minio"]["secretKey"] == MINIO_SECRET_KEY

    alice = person(world, bot)
    alice.type("start my-release")
    for checkpoint in ("flush_done", "pvc_list", "reinstall"):
        alice.approve(checkpoint)
    assert alice.outcome(timeout=120) == "succeeded"
    # The scan must see what it scans: a log, a thread, the backup file, a Milvus that was asked with the token.
    assert bot.log() and len(alice.thread()) > 3 and world.slack.files()
    assert any(r.authorization == f"Bearer {MILVUS_TOKEN}" for r in world.milvus("my-release").requests)
    assert any(r.path.startswith("/api/") for r in world.kube.requests)
    # The MinIO keys were there to leak: the whole backup holds them, in a Secret (not scanned).
    backup = world.store.get("secrets", "default", "my-release-pulsar-upgrade-backup")
    decoded = "".join(base64.b64decode(v).decode() for v in backup["data"].values())
    assert MINIO_SECRET_KEY in decoded and MINIO_ACCESS_KEY in decoded

    secrets = _forms(
        {
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "MILVUS_TOKEN": MILVUS_TOKEN,
            "MILVUS_TOKEN's password": MILVUS_PASSWORD,
            "the kubeconfig's token": KUBE_TOKEN,
            "minio.accessKey": MINIO_ACCESS_KEY,
            "minio.secretKey": MINIO_SECRET_KEY,
        }
    )
    leaks = [
        f"{name} in {where}: …{text[max(0, text.find(value) - 80) : text.find(value) + len(value) + 40]}…"
        for where, text in _places(world, bot)
        for name, value in secrets.items()
        if value in text
    ]
    assert not leaks, "secrets leaked:\n" + "\n".join(leaks)


# -- the JSON log formatter ----------------------------------------------------------------------


def _format(logger_name: str, message: str, extra: dict[str, Any]) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.RedactingFilter())
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning(message, extra=extra)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def test_a_numeric_token_field_keeps_the_line_valid_json() -> None:
    line = _format("test.fence", "lease renewed", {"fencing_token": 42, "runner_token": "abc-uuid", "n": 1.5})
    entry = json.loads(line)
    assert entry["fencing_token"] == 42 and entry["n"] == 1.5
    assert entry["runner_token"] == "[REDACTED]"
    assert entry["message"] == "lease renewed"


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3),
    max_leaves=10,
)
FIELD_NAMES = st.one_of(
    st.sampled_from(["token", "fence_token", "password", "secret", "Authorization", "api_token", "upgrade_id"]),
    st.text(min_size=1, max_size=12),
).filter(lambda k: k not in vars(logging.LogRecord("", 0, "", 0, "", None, None)) and not k.startswith("_"))
SECRET = "scan-registered-secret-8Kd"


@settings(max_examples=300, deadline=None)
@given(
    extra=st.dictionaries(FIELD_NAMES, JSON_VALUES | st.just(SECRET) | st.just(f'x"token": {SECRET}'), max_size=5),
    message=st.one_of(st.text(max_size=60), st.just('{"token": 7, "password": "p"}'), st.just(f"key={SECRET}")),
)
def test_every_log_line_is_valid_json_without_registered_secrets(extra: dict[str, Any], message: str) -> None:
    logs.register_secrets([SECRET])
    extra = {k: v for k, v in extra.items() if k not in ("message", "asctime")}
    line = _format("test.anyfield", message, extra)
    assert line.endswith("\n") and "\n" not in line[:-1]
    entry = json.loads(line)  # valid JSON, one object
    assert isinstance(entry, dict) and entry["logger"] == "test.anyfield"
    assert SECRET not in line
    for key, value in extra.items():
        if isinstance(value, bool | int) and not isinstance(value, str):
            assert entry[logs.redact(key)] == value  # numbers and booleans are values, kept as they are
