"""``SlackClient``: plays Slack's side of slash commands and button clicks toward the bot.

Why: the bot's HTTP endpoint (slack-bolt's AsyncApp) must only trust requests signed with the app's
signing secret, and must answer within Slack's 3 seconds. This client sends exactly what Slack sends:

- slash commands as ``application/x-www-form-urlencoded`` with token, team_id, team_domain,
  channel_id, channel_name, user_id, user_name, command, text, api_app_id, is_enterprise_install,
  response_url and trigger_id (both registered in the simulator, so ``respond()`` and ``views.open``
  work against it);
- button clicks as a form field ``payload=<json>`` holding a ``block_actions`` payload built from the
  message as the simulator holds it now (its current blocks), with the button's block_id, text,
  value and style; a button with a ``confirm`` dialog is clicked after "confirming" and the dialog's
  texts are kept in ``last_confirm``;
- ``X-Slack-Request-Timestamp`` and ``X-Slack-Signature: v0=hmac_sha256(secret, "v0:<ts>:<body>")``.

Like Slack, it waits at most ``ack_timeout`` (3 s) for the answer (``AckTimeoutError`` after that),
and shows the synchronous answer to a slash command the way Slack does: a JSON body with text or
blocks becomes an ephemeral (or a channel message for ``response_type: in_channel``), a plain-text
body an ephemeral, a non-200 status the ``dispatch_failed`` notice. Clicking a button the message
does not have raises ``LookupError`` (a test mistake, not a Slack behaviour).

``SocketModeClient`` does the same over Socket Mode, for a bot started with SLACK_APP_TOKEN: the
same payloads are delivered as ``slash_commands`` / ``interactive`` envelopes on the WebSocket the
bot opened (``SlackSim.deliver``), and nothing is sent over HTTP.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import urlencode

import httpx

from sandbox.slack.blocks import find_button, iter_elements, text_of
from sandbox.slack.server import SlackSim
from sandbox.slack.socket_mode import SocketEnvelope

SLACK_USER_AGENT = "Slackbot 1.0 (+https://api.slack.com/robots)"
FORM = "application/x-www-form-urlencoded"


class AckTimeoutError(Exception):
    """The bot did not answer within Slack's time limit (Slack shows the user an error)."""


class SlackClient:
    """Sends signed slash commands and block_actions to the bot at ``bot_url``."""

    def __init__(
        self,
        sim: SlackSim,
        bot_url: str,
        signing_secret: str,
        *,
        verification_token: str = "sandbox-verification-token",
        team_domain: str = "sandbox",
        ack_timeout: float = 3.0,
    ) -> None:
        self.sim = sim
        self.bot_url = bot_url
        self.signing_secret = signing_secret
        self.verification_token = verification_token
        self.team_domain = team_domain
        self.ack_timeout = ack_timeout
        self.last_confirm: dict[str, str] | None = None

    # -- wire ------------------------------------------------------------------------------------

    def sign(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        """Slack's request-signing headers for ``body``."""
        ts = str(int(time.time()) if timestamp is None else timestamp)
        base = b"v0:" + ts.encode() + b":" + body
        digest = hmac.new(self.signing_secret.encode(), base, hashlib.sha256).hexdigest()
        return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}

    def post_raw(self, body: bytes, headers: dict[str, str], content_type: str) -> httpx.Response:
        """POST ``body`` to the bot with exactly ``headers`` (for forged, stale or unsigned requests)."""
        all_headers = {"Content-Type": content_type, "User-Agent": SLACK_USER_AGENT, **headers}
        try:
            return httpx.post(self.bot_url, content=body, headers=all_headers, timeout=self.ack_timeout)
        except httpx.TimeoutException as exc:
            raise AckTimeoutError(f"the bot did not answer within {self.ack_timeout}s") from exc

    def _send_form(self, fields: dict[str, str]) -> httpx.Response:
        body = urlencode(fields).encode()
        return self.post_raw(body, self.sign(body), FORM)

    # -- slash commands --------------------------------------------------------------------------

    def slash_fields(self, user: str, channel: str, command: str, text: str) -> dict[str, str]:
        """The form fields Slack sends for ``command text`` typed by ``user`` in ``channel``."""
        return {
            "token": self.verification_token,
            "team_id": self.sim.team_id,
            "team_domain": self.team_domain,
            "channel_id": channel,
            "channel_name": self.sim.channel_name(channel),
            "user_id": user,
            "user_name": self.sim.user(user).name,
            "command": command,
            "text": text,
            "api_app_id": self.sim.ws.app_id,
            "is_enterprise_install": "false",
            "response_url": self.sim.new_response_url(channel=channel, user=user, kind="commands"),
            "trigger_id": self.sim.new_trigger_id(user),
        }

    def slash(self, user: str, channel: str, command: str, text: str) -> httpx.Response:
        """Type ``command text``; the bot's synchronous answer is shown like Slack shows it."""
        try:
            response = self._send_form(self.slash_fields(user, channel, command, text))
        except AckTimeoutError:
            self.sim.show_response(
                channel, user, {"text": f'{command} failed with the error "operation_timeout"'}, "slack"
            )
            raise
        self._show_ack(user, channel, command, response)
        return response

    def _show_ack(self, user: str, channel: str, command: str, response: httpx.Response) -> None:
        if response.status_code != 200:
            notice = {"text": f'{command} failed with the error "dispatch_failed"'}
            self.sim.show_response(channel, user, notice, "slack")
            return
        if not response.content.strip():
            return
        if response.headers.get("content-type", "").startswith("application/json"):
            body = response.json()
            if isinstance(body, dict) and (body.get("text") or body.get("blocks") or body.get("attachments")):
                self.sim.show_response(channel, user, body, "slash_ack")
            return
        self.sim.show_response(channel, user, {"text": response.text}, "slash_ack")

    # -- button clicks ---------------------------------------------------------------------------

    def click_payload(self, user: str, channel: str, message_ts: str, action_id: str) -> dict[str, Any]:
        """The block_actions payload for clicking the button ``action_id`` of a message."""
        message = self.sim.message_json(channel, message_ts)
        found = find_button(message.get("blocks") or [], action_id)
        if found is None:
            present = [el.get("action_id") for _, el in iter_elements(message.get("blocks") or [])]
            raise LookupError(f"message {message_ts} in {channel} has no button {action_id!r} (it has {present})")
        block_id, button = found
        self.last_confirm = _confirm_texts(button.get("confirm"))
        person = self.sim.user(user)
        container: dict[str, Any] = {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel,
            "is_ephemeral": False,
        }
        thread_ts = message.get("thread_ts") if message.get("thread_ts") != message_ts else None
        if thread_ts:
            container["thread_ts"] = thread_ts
        return {
            "type": "block_actions",
            "user": {"id": user, "username": person.name, "name": person.name, "team_id": self.sim.team_id},
            "api_app_id": self.sim.ws.app_id,
            "token": self.verification_token,
            "container": container,
            "trigger_id": self.sim.new_trigger_id(user),
            "team": {"id": self.sim.team_id, "domain": self.team_domain},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel, "name": self.sim.channel_name(channel)},
            "message": message,
            "state": {"values": {}},
            "response_url": self.sim.new_response_url(
                channel=channel, user=user, kind="actions", message_ts=message_ts, thread_ts=thread_ts
            ),
            "actions": [_action(block_id, button)],
        }

    def click(self, user: str, channel: str, message_ts: str, action_id: str) -> httpx.Response:
        """Click a button of a channel message (after confirming its dialog, if it has one)."""
        payload = self.click_payload(user, channel, message_ts, action_id)
        return self._send_form({"payload": json.dumps(payload)})


class SocketModeClient(SlackClient):
    """``SlackClient``'s ``slash`` and ``click`` over Socket Mode, for ``tests.scenario.Person`` as is.

    Each call delivers an envelope on the bot's open connection and waits until it is acknowledged
    or its deadline (the simulator's ``socket_ack_timeout``, Slack's 3 s) passed. The answer is
    given as the HTTP answer would be, so that callers need not know the transport: a 200
    ``httpx.Response`` whose JSON body is the ack's payload (empty when the ack had none). A slash
    command's payload is shown to the person by the simulator when the ack arrives, as Slack shows
    it; an envelope not acknowledged in time raises ``AckTimeoutError`` (the simulator records it in
    ``socket_mode_failures`` and, for a slash command, shows the ``operation_timeout`` notice).
    ``NotConnectedError`` when the bot has no connection open.
    """

    def __init__(
        self,
        sim: SlackSim,
        *,
        verification_token: str = "sandbox-verification-token",
        team_domain: str = "sandbox",
    ) -> None:
        super().__init__(
            sim,
            bot_url="",
            signing_secret="",
            verification_token=verification_token,
            team_domain=team_domain,
            ack_timeout=sim.socket_ack_timeout,
        )
        self.last_envelope: SocketEnvelope | None = None

    def post_raw(self, body: bytes, headers: dict[str, str], content_type: str) -> httpx.Response:
        raise TypeError("a Socket Mode app is sent nothing over HTTP: use slash() or click()")

    def slash(self, user: str, channel: str, command: str, text: str) -> httpx.Response:
        """Type ``command text``: a ``slash_commands`` envelope, which accepts a response payload."""
        envelope = self.sim.deliver(
            "slash_commands", self.slash_fields(user, channel, command, text), accepts_response_payload=True
        )
        return self._answer(envelope)

    def click(self, user: str, channel: str, message_ts: str, action_id: str) -> httpx.Response:
        """Click a button: an ``interactive`` envelope with the ``block_actions`` payload."""
        payload = self.click_payload(user, channel, message_ts, action_id)
        return self._answer(self.sim.deliver("interactive", payload, accepts_response_payload=False))

    def _answer(self, sent: SocketEnvelope) -> httpx.Response:
        envelope = self.sim.wait_acked(sent.envelope_id)
        self.last_envelope = envelope
        if envelope.timed_out:
            raise AckTimeoutError(
                f"the bot did not acknowledge envelope {envelope.envelope_id} within {self.ack_timeout:g}s"
            )
        if envelope.ack_payload is None:
            return httpx.Response(200)
        return httpx.Response(200, json=envelope.ack_payload)


def _action(block_id: str, button: dict[str, Any]) -> dict[str, Any]:
    action: dict[str, Any] = {
        "action_id": button["action_id"],
        "block_id": block_id,
        "text": button["text"],
        "type": "button",
        "action_ts": f"{time.time():.6f}",
    }
    for key in ("value", "style", "url"):
        if key in button:
            action[key] = button[key]
    return action


def _confirm_texts(confirm: Any) -> dict[str, str] | None:
    if not isinstance(confirm, dict):
        return None
    return {key: text_of(confirm.get(key)) for key in ("title", "text", "confirm", "deny")}
