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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import redis
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot.procedure import checkpoints
from handlers.auth import Authorizer
from handlers.commands import COMMAND, HELP, HelpCommand, StartCommand, UsageError, parse
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
    for action_id in ("upgrade_approve", "upgrade_abort", "upgrade_retry"):
        app.action(action_id)(_guarded(_button_listener(deps)))


def _command_listener(deps: Deps) -> Callable[..., Awaitable[None]]:
    async def start(respond: AsyncRespond, command: dict[str, Any], client: AsyncWebClient, cmd: StartCommand) -> None:
        user, channel = str(command.get("user_id") or ""), str(command.get("channel_id") or "")
        decision = await deps.authorizer.check(client, user)
        if not decision.allowed:
            await _tell(respond, f"Not started: {decision.reason}")
            return
        if not channel:
            await _tell(respond, "Not started: Slack did not say which channel this is in.")
            return
        upgrade = Upgrade(
            id=Upgrade.new_id(),
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
            return
        await asyncio.to_thread(deps.store.audit, upgrade.id, "requested", user=user, text=command.get("text"))
        log.info("upgrade requested", extra={"upgrade_id": upgrade.id, "release": cmd.release, "user": user})
        await asyncio.to_thread(deps.runner.schedule, upgrade.id)

    @_guarded
    async def on_command(respond: AsyncRespond, ack: AsyncAck, command: dict[str, Any], client: AsyncWebClient) -> None:
        try:
            cmd = parse(str(command.get("text") or ""))
        except UsageError as err:
            await ack(text=str(err))
            return
        if isinstance(cmd, HelpCommand):
            await ack(text=HELP)
            return
        await ack(text=f"Checking `{cmd.release}` in namespace `{cmd.namespace}`…")
        await start(respond=respond, command=command, client=client, cmd=cmd)

    return on_command


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
        decision = await deps.authorizer.check(client, user)
        if not decision.allowed:
            await _tell(respond, f"Nothing changed: {decision.reason}")
            return
        found = _button_value(action)
        if found is None:
            await _tell(respond, "That button is not one of mine.")
            return
        upgrade_id, value = found
        change = _change_for(action.get("action_id", ""), value, user, deps.second_approver)
        try:
            _, problem = await asyncio.to_thread(deps.store.update, upgrade_id, change)
        except NotFound:
            problem = "I have no record of that upgrade."
        if problem:
            await _tell(respond, f"Nothing changed: {problem}")
            return
        await asyncio.to_thread(deps.store.audit, upgrade_id, action.get("action_id", ""), user=user, value=value)
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
