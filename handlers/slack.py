"""The Slack edge: the slash command and the buttons, registered on a Bolt ``AsyncApp``.

Every listener acks first (Slack wants an answer within three seconds, whatever the cluster
is doing), then authorizes, records in Redis and schedules the runner. Nothing here talks to
Kubernetes, helm or Milvus. Answers to the person alone go through ``respond`` (the
interaction's response_url, ephemeral). Unexpected errors are logged and answered with a
short sentence: no stack trace ever reaches Slack.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import redis
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot import reports
from bot.logs import redact
from bot.procedure import checkpoints
from handlers.auth import Authorizer
from handlers.commands import (
    COMMAND,
    HELP,
    OPERATOR_ONLY,
    AuditCommand,
    CancelCommand,
    Command,
    HelpCommand,
    ListCommand,
    ScanCommand,
    StartCommand,
    StatusCommand,
    UsageError,
    parse,
)
from state import decisions
from state.model import Upgrade
from state.store import NotFound, UpgradeStore

log = logging.getLogger(__name__)
SORRY = "Something went wrong on my side; nothing was changed. The bot's logs have the details."
STATE_DOWN = (
    "The state store (Redis) is unavailable, so nothing was started or changed. "
    "Running upgrades carry on once it is back; try again in a minute."
)


class Scheduler(Protocol):
    def schedule(self, upgrade_id: str, delay: float = 0.0) -> None: ...


@dataclass
class Deps:
    store: UpgradeStore
    runner: Scheduler
    authorizer: Authorizer
    second_approver: bool
    channels: frozenset[str] = frozenset()  # BOT_CHANNELS; empty: every channel
    scan: Callable[[str | None], str] | None = None  # the answer to ``scan`` (reads the cluster; slow)
    recent: SharedRead | None = None  # made on first use: the recent upgrades, one read shared


class SharedRead:
    """One read of the recent upgrades at a time, shared by every ``status`` and ``list`` asked
    while it is under way (and reused for ``ttl`` seconds, none by default: a ``status`` right
    after a ``start`` shows it): 50 of them at once were 50 reads of up to 500 records each,
    decoded in this process (the edge), with their memory and GIL time."""

    def __init__(self, store: UpgradeStore, limit: int, ttl: float = 0.0) -> None:
        self.store, self.limit, self.ttl = store, limit, ttl
        self._value: list[Upgrade] | None = None
        self._at = 0.0
        self._pending: asyncio.Future[list[Upgrade]] | None = None

    async def get(self) -> list[Upgrade]:
        if self._value is not None and time.monotonic() - self._at < self.ttl:
            return self._value
        if self._pending is None:
            self._pending = asyncio.ensure_future(asyncio.to_thread(self.store.recent, self.limit))
            self._pending.add_done_callback(self._done)
        return await asyncio.shield(self._pending)

    def _done(self, future: asyncio.Future[list[Upgrade]]) -> None:
        self._pending = None
        if not future.cancelled() and future.exception() is None:
            self._value, self._at = future.result(), time.monotonic()


def _guarded(
    fn: Callable[..., Awaitable[None]],
) -> Callable[..., Awaitable[None]]:
    """Run a listener body; any exception becomes a log line and a one-sentence ephemeral answer
    (Redis being unreachable gets its own: nothing was started, running upgrades carry on)."""

    @functools.wraps(fn)  # Bolt injects arguments by the names of the wrapped function
    async def wrapper(respond: AsyncRespond, **kwargs: Any) -> None:
        try:
            await fn(respond=respond, **kwargs)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as err:
            log.error("listener %s: Redis is unavailable: %s", fn.__name__, type(err).__name__)
            await _tell(respond, STATE_DOWN)
        except Exception:
            log.exception("listener %s failed", fn.__name__)
            await _tell(respond, SORRY)

    return wrapper


async def _tell(respond: AsyncRespond | None, text: str) -> None:
    """Answer the person alone through the interaction's response_url, if it has a usable one."""
    if respond is None:  # no response_url in the request: nobody to answer
        log.warning("cannot answer: the request has no response_url")
        return
    try:
        await respond(text=text, response_type="ephemeral", replace_original=False)
    except Exception as err:  # a dead or foreign response_url: the person cannot be told
        log.warning("could not answer the person: %s", type(err).__name__)


def _user_of(body: dict[str, Any]) -> str:
    user = body.get("user")
    user_id = user.get("id") if isinstance(user, dict) else None
    return user_id if isinstance(user_id, str) else ""


def _button_value(action: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(upgrade id, value) of one of the bot's buttons, or None when the value is not one of ours."""
    raw = action.get("value")
    if not isinstance(raw, str) or len(raw) > 2000:  # the bot's values are tiny JSON objects
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("u"), str) or not value["u"]:
        return None
    return value["u"], value


def register(app: AsyncApp, deps: Deps) -> None:
    app.command(COMMAND)(_command_listener(deps))
    for action_id in ("upgrade_approve", "upgrade_abort", "upgrade_retry", "upgrade_reask"):
        app.action(action_id)(_guarded(_button_listener(deps)))


def _command_listener(deps: Deps) -> Callable[..., Awaitable[None]]:
    async def start(
        respond: AsyncRespond, command: dict[str, Any], client: AsyncWebClient, cmd: StartCommand, upgrade_id: str
    ) -> None:
        user, channel = str(command.get("user_id") or ""), str(command.get("channel_id") or "")
        decision = await deps.authorizer.check(client, user)
        if not decision.allowed:
            await _tell(respond, f"Not started: {decision.reason}")
            await _audit(deps, None, "command", user, text=command.get("text"), allowed=False, reason=decision.reason)
            return
        if not channel:
            await _tell(respond, "Not started: Slack did not say which channel this is in.")
            return
        upgrade = Upgrade(
            id=upgrade_id,
            release=cmd.release,
            namespace=cmd.namespace,
            channel=channel,
            started_by=user,
            mode=cmd.mode,
            dry_run=cmd.dry_run,
            response_url=command.get("response_url"),
        )
        holder = await asyncio.to_thread(deps.store.create, upgrade)
        if holder is not None:
            text = await asyncio.to_thread(_already_running, deps.store, holder, cmd)
            await _tell(respond, text)
            await _audit(deps, holder, "command", user, text=command.get("text"), allowed=False, reason=text)
            return
        await _audit(deps, upgrade.id, "command", user, text=command.get("text"), channel=channel, allowed=True)
        log.info("upgrade requested", extra={"upgrade_id": upgrade.id, "release": cmd.release, "user": user})
        await asyncio.to_thread(deps.runner.schedule, upgrade.id)

    @_guarded
    async def on_command(respond: AsyncRespond, ack: AsyncAck, command: dict[str, Any], client: AsyncWebClient) -> None:
        text = str(command.get("text") or "")
        user, channel = str(command.get("user_id") or ""), str(command.get("channel_id") or "")
        try:
            cmd = parse(text)
        except UsageError as err:
            await ack(text=str(err))
            await _audit(deps, None, "command", user, text=text, channel=channel, allowed=False, reason=str(err))
            return
        about = getattr(cmd, "upgrade_id", None)
        if isinstance(cmd, HelpCommand):
            await ack(text=HELP + _where(deps))
            return
        if deps.channels and channel not in deps.channels:
            refusal = f"Nothing was done: commands are taken only in {_channel_list(deps)}."
            await ack(text=refusal)
            await _audit(deps, about, "command", user, text=text, channel=channel, allowed=False, reason=refusal)
            return
        if isinstance(cmd, StartCommand):
            upgrade_id = Upgrade.new_id()
            await ack(text=f"Checking `{cmd.release}` in namespace `{cmd.namespace}`… (upgrade `{upgrade_id}`)")
            await start(respond=respond, command=command, client=client, cmd=cmd, upgrade_id=upgrade_id)
            return
        await ack()
        if isinstance(cmd, OPERATOR_ONLY):
            decision = await deps.authorizer.check(client, user)
            if not decision.allowed:
                await _audit(deps, about, "command", user, text=text, allowed=False, reason=decision.reason)
                await _tell(respond, f"Not allowed: {decision.reason} Nothing was changed.")
                return
        await _audit(deps, about, "command", user, text=text, channel=channel, allowed=True)
        await _tell(respond, await _answer(deps, client, cmd, channel, user))

    return on_command


async def _audit(deps: Deps, upgrade_id: str | None, event: str, user: str, **data: Any) -> None:
    """One audit event (for the upgrade when there is one, and in the global stream); never raises."""
    if "text" in data:
        data["text"] = redact(str(data["text"] or ""))
    try:
        await asyncio.to_thread(deps.store.audit, upgrade_id, event, user, **data)
    except Exception as err:
        log.warning("could not write the audit trail: %s", type(err).__name__)


def _channel_list(deps: Deps) -> str:
    return ", ".join(f"<#{c}>" for c in sorted(deps.channels))


def _where(deps: Deps) -> str:
    return f"\nCommands are taken in {_channel_list(deps)}." if deps.channels else ""


async def _permalink(deps: Deps, client: AsyncWebClient, upgrade: Upgrade) -> str | None:
    """The root message's permalink: asked of Slack once, then kept in the record."""
    if upgrade.permalink or upgrade.root_ts is None:
        return upgrade.permalink
    try:
        answer = await client.chat_getPermalink(channel=upgrade.channel, message_ts=upgrade.root_ts)
    except Exception as err:  # no link is better than no answer
        log.warning("chat.getPermalink failed: %s", type(err).__name__, extra={"upgrade_id": upgrade.id})
        return None
    link = answer.get("permalink")
    if isinstance(link, str) and link:
        await asyncio.to_thread(deps.store.update, upgrade.id, lambda u: setattr(u, "permalink", link))
        return link
    return None


async def _with_links(deps: Deps, client: AsyncWebClient, upgrades: list[Upgrade]) -> list[tuple[Upgrade, str | None]]:
    return [(u, await _permalink(deps, client, u)) for u in upgrades]


LIST_ENDED = 20  # ``list``: the last this many ended upgrades
LOOK_BACK = 500  # how many of the most recent upgrades ``status`` and ``list`` read at most


async def _answer(deps: Deps, client: AsyncWebClient, cmd: Command, channel: str, user: str) -> str:
    now = time.time()
    if isinstance(cmd, StatusCommand) and cmd.upgrade_id:
        upgrade = await asyncio.to_thread(deps.store.find, cmd.upgrade_id)
        if upgrade is None:
            return f"I have no upgrade `{cmd.upgrade_id}`. `{COMMAND} list` shows them."
        return reports.status_text(upgrade, await _permalink(deps, client, upgrade), now)
    if isinstance(cmd, StatusCommand):
        recent = await _recent(deps)
        here = [u for u in recent if u.channel == channel]
        if not here:
            return f"No upgrade was started in this channel. `{COMMAND} list` shows every upgrade."
        here.sort(key=lambda u: (u.ended, -u.started_at))  # active first, newest first
        texts = [reports.status_text(u, link, now) for u, link in await _with_links(deps, client, here[:10])]
        more = f"\n…and {len(here) - 10} older ones (`{COMMAND} list`)." if len(here) > 10 else ""
        return "\n\n".join(texts) + more
    if isinstance(cmd, ListCommand):
        recent = await _recent(deps)
        active = [u for u in recent if not u.ended]
        ended = [u for u in recent if u.ended][:LIST_ENDED]
        return reports.list_text(await _with_links(deps, client, active), await _with_links(deps, client, ended), now)
    if isinstance(cmd, CancelCommand):
        return await _cancel(deps, cmd.upgrade_id, user)
    if isinstance(cmd, AuditCommand):
        return await _attach_audit(deps, client, cmd.upgrade_id)
    if isinstance(cmd, ScanCommand) and deps.scan is not None:
        return await asyncio.to_thread(deps.scan, cmd.namespace)
    return f"`{COMMAND} {type(cmd).__name__.removesuffix('Command').lower()}` is not available yet."


async def _recent(deps: Deps) -> list[Upgrade]:
    """The most recent upgrades, newest first, plus any active one older than that."""
    if deps.recent is None:
        deps.recent = SharedRead(deps.store, LOOK_BACK)
    return await deps.recent.get()


async def _attach_audit(deps: Deps, client: AsyncWebClient, upgrade_id: str) -> str:
    """``audit ID``: the trail as a JSON-lines file in the upgrade's thread, with a one-paragraph summary."""
    upgrade = await asyncio.to_thread(deps.store.find, upgrade_id)
    if upgrade is None:
        return f"I have no upgrade `{upgrade_id}`. `{COMMAND} list` shows them."
    events = await asyncio.to_thread(deps.store.audit_trail, upgrade_id)
    summary = reports.audit_summary(upgrade, events)
    if upgrade.root_ts is None:
        return f"{summary}\nUpgrade `{upgrade_id}` has no thread to attach the file to."
    await client.files_upload_v2(
        channel=upgrade.channel,
        thread_ts=upgrade.root_ts,
        content=reports.audit_lines(events),
        filename=f"audit-{upgrade_id}.jsonl",
        title=f"Audit trail of upgrade {upgrade_id}",
        initial_comment=summary,
    )
    link = await _permalink(deps, client, upgrade)
    where = f"<{link}|its thread>" if link else "its thread"
    return f"Attached the audit trail of upgrade `{upgrade_id}` ({len(events)} events) to {where}."


async def _cancel(deps: Deps, upgrade_id: str, user: str) -> str:
    try:
        before, problem = await asyncio.to_thread(
            deps.store.update, upgrade_id, lambda u: decisions.request_cancel(u, user)
        )
    except NotFound:
        return f"I have no upgrade `{upgrade_id}`. `{COMMAND} list` shows them."
    if problem:
        return f"Nothing changed: {problem}"
    await asyncio.to_thread(deps.runner.schedule, upgrade_id)
    log.info("cancel requested", extra={"upgrade_id": upgrade_id, "user": user})
    return (
        f"Cancelling upgrade `{upgrade_id}` (`{before.release}` in `{before.namespace}`): it stops before its next "
        "step (a destructive step under way finishes first), and the thread offers the same way back as Abort."
    )


def _button_listener(deps: Deps) -> Callable[..., Awaitable[None]]:
    async def on_button(
        respond: AsyncRespond,
        ack: AsyncAck,
        body: dict[str, Any],
        action: dict[str, Any],
        client: AsyncWebClient,
    ) -> None:
        await ack()
        user = _user_of(body)
        action_id = str(action.get("action_id", ""))
        found = _button_value(action)
        upgrade_id, value = found if found is not None else (None, {})
        decision = await deps.authorizer.check(client, user)
        if not decision.allowed:
            await _audit(deps, upgrade_id, "click", user, action=action_id, allowed=False, reason=decision.reason)
            await _tell(respond, f"Nothing changed: {decision.reason}")  # the answer last: all is recorded by then
            return
        if upgrade_id is None:
            await _tell(respond, "That button is not one of mine.")
            return
        change = _change_for(action_id, value, user, deps.second_approver)
        try:
            _, problem = await asyncio.to_thread(deps.store.update, upgrade_id, change)
        except NotFound:
            problem = "I have no record of that upgrade."
        checkpoint = value.get("c")
        if problem:
            await _audit(
                deps, upgrade_id, "click", user, action=action_id, checkpoint=checkpoint, allowed=False, reason=problem
            )
            await _tell(respond, f"Nothing changed: {problem}")
            return
        await _audit(deps, upgrade_id, "click", user, action=action_id, checkpoint=checkpoint, allowed=True)
        if checkpoint and action_id in ("upgrade_approve", "upgrade_abort"):
            decided = "approved" if action_id == "upgrade_approve" else "rejected"
            await _audit(deps, upgrade_id, "checkpoint_decided", user, checkpoint=checkpoint, decision=decided)
        await asyncio.to_thread(deps.runner.schedule, upgrade_id)

    return on_button


def _change_for(action_id: str, value: dict[str, Any], user: str, second: bool) -> Callable[[Upgrade], str | None]:
    checkpoint = value.get("c")
    step = str(value.get("s", ""))

    def change(upgrade: Upgrade) -> str | None:
        if action_id == "upgrade_retry":
            return decisions.request_retry(upgrade, step, user)
        if checkpoint is None and action_id == "upgrade_abort":
            return decisions.request_abort(upgrade, user)
        if checkpoint is None:
            return "That button is not one of mine."
        if action_id == "upgrade_reask":
            return decisions.reask(upgrade, str(checkpoint), user)
        kinds = checkpoints.DESTRUCTIVE if second else ()
        return decisions.decide(upgrade, str(checkpoint), user, action_id == "upgrade_approve", kinds)

    return change


def _already_running(store: UpgradeStore, holder: str, cmd: StartCommand) -> str:
    other = store.find(holder)
    where = ""
    if other is not None and other.root_ts:
        where = f" (started by <@{other.started_by}>, see its thread in <#{other.channel}>)"
    return (
        f"Not started: an upgrade of `{cmd.release}` in `{cmd.namespace}` is already running{where}. "
        "One upgrade per release at a time."
    )
