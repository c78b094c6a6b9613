"""The Slack Web API methods the bot uses, answered the way Slack answers them.

Why: slack_sdk's clients (and so slack-bolt) call ``<base_url><method>``; this module is the body of
each method once the simulator has authenticated the call. Each handler takes the parsed arguments
(strings from a form/query body, real JSON values from a JSON body) and returns the ``ok: true``
answer, or raises ``ApiError`` with Slack's error code for the same mistake:

- ``channel_not_found`` (unknown channel, or a private channel the bot is not in), ``not_in_channel``
  (the bot is not a member), ``no_text`` (no text, blocks or attachments), ``thread_not_found``
  (thread_ts is not an existing root), ``message_not_found``, ``cant_update_message`` /
  ``cant_delete_message`` (not the bot's message), ``invalid_blocks`` (with Slack-style
  ``response_metadata.messages``), ``invalid_blocks_format``, ``msg_too_long`` (> 40,000 chars),
  ``user_not_found``, ``user_not_in_channel``, ``no_such_subteam``, ``invalid_cursor``,
  ``invalid_arguments``, ``file_not_found``, ``invalid_trigger_id`` / ``expired_trigger_id`` /
  ``exchanged_trigger_id`` (trigger ids live 3 seconds and are single use), ``method_deprecated``
  (files.upload, retired by Slack in favour of the files_upload_v2 flow). ``apps.connections.open``
  answers a Socket Mode URL (its token rules are checked by the simulator before it runs).

``METHODS`` maps each method to the OAuth scope it needs and whether it accepts a JSON body (Slack
accepts JSON only for write methods; the arguments of a JSON body sent to a read method are ignored).
Handlers run under the simulator's lock and never block.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sandbox.slack.blocks import (
    MAX_VIEW_BLOCKS,
    BlocksFormatError,
    normalize_blocks,
    parse_blocks,
    validate_blocks,
)
from sandbox.slack.model import Channel, Ephemeral, Message, UploadedFile, Workspace

MAX_TEXT = 40_000


class ApiError(Exception):
    """An ``ok: false`` answer; ``extra`` is merged into the JSON body."""

    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


@dataclass(frozen=True)
class MethodSpec:
    handler: str  # name of the WebApi method
    scope: str | None  # OAuth scope needed (for conversations.*: the public-channel scope)
    accepts_json: bool = False


METHODS: dict[str, MethodSpec] = {
    "auth.test": MethodSpec("auth_test", None, True),
    "chat.postMessage": MethodSpec("chat_post_message", "chat:write", True),
    "chat.update": MethodSpec("chat_update", "chat:write", True),
    "chat.delete": MethodSpec("chat_delete", "chat:write", True),
    "chat.postEphemeral": MethodSpec("chat_post_ephemeral", "chat:write", True),
    "chat.getPermalink": MethodSpec("chat_get_permalink", None),
    "conversations.history": MethodSpec("conversations_history", "channels:history"),
    "conversations.replies": MethodSpec("conversations_replies", "channels:history"),
    "conversations.info": MethodSpec("conversations_info", "channels:read"),
    "users.info": MethodSpec("users_info", "users:read"),
    "usergroups.list": MethodSpec("usergroups_list", "usergroups:read"),
    "usergroups.users.list": MethodSpec("usergroups_users_list", "usergroups:read"),
    "files.getUploadURLExternal": MethodSpec("files_get_upload_url", "files:write"),
    "files.completeUploadExternal": MethodSpec("files_complete_upload", "files:write"),
    "files.upload": MethodSpec("files_upload", "files:write"),
    "views.open": MethodSpec("views_open", None, True),
    "apps.connections.open": MethodSpec("apps_connections_open", None, True),  # app-level token only
}
PRIVATE_SCOPES = {"channels:history": "groups:history", "channels:read": "groups:read"}


def truthy(value: Any) -> bool:
    """Slack's reading of a boolean argument (form bodies send "true"/"1")."""
    return value is True or (isinstance(value, (str, int)) and str(value).lower() in ("true", "1"))


def _json_arg(value: Any, error: str) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise ApiError(error) from None
    return value


def _arg(args: dict[str, Any], name: str) -> str | None:
    value = args.get(name)
    return None if value is None or value == "" else str(value)


def _int_arg(args: dict[str, Any], name: str, default: int) -> int:
    value = args.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ApiError(
            "invalid_arguments", response_metadata={"messages": [f"[ERROR] {name} must be an integer"]}
        ) from None


def _ts_arg(args: dict[str, Any], name: str, default: float) -> float:
    value = args.get(name)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ApiError("invalid_ts_" + name) from None


def _page(items: list[dict[str, Any]], args: dict[str, Any], default_limit: int) -> dict[str, Any]:
    limit = max(1, min(_int_arg(args, "limit", default_limit), 1000))
    offset = 0
    cursor = _arg(args, "cursor")
    if cursor:
        try:
            offset = int(base64.b64decode(cursor).decode().removeprefix("next_offset:"))
        except ValueError:
            raise ApiError("invalid_cursor") from None
    chunk = items[offset : offset + limit]
    has_more = offset + limit < len(items)
    answer: dict[str, Any] = {"messages": chunk, "has_more": has_more}
    if has_more:
        next_cursor = base64.b64encode(f"next_offset:{offset + limit}".encode()).decode()
        answer["response_metadata"] = {"next_cursor": next_cursor}
    return answer


@dataclass
class Content:
    text: str | None
    blocks: list[dict[str, Any]] | None
    attachments: list[dict[str, Any]] | None

    @property
    def empty(self) -> bool:
        return not self.text and not self.blocks and not self.attachments


def parse_content(args: dict[str, Any], *, max_blocks: int = 50) -> Content:
    """text/blocks/attachments of a message, validated like Slack (does not require any)."""
    text = None if args.get("text") is None else str(args["text"])
    if text is not None and len(text) > MAX_TEXT:
        raise ApiError("msg_too_long")
    try:
        blocks = parse_blocks(args.get("blocks"))
    except BlocksFormatError:
        raise ApiError("invalid_blocks_format") from None
    if blocks is not None:
        errors = validate_blocks(blocks, max_blocks=max_blocks)
        if errors:
            raise ApiError("invalid_blocks", response_metadata={"messages": errors})
        blocks = normalize_blocks(blocks)
    attachments = _json_arg(args.get("attachments"), "invalid_attachments")
    if attachments is not None and not (
        isinstance(attachments, list) and all(isinstance(a, dict) for a in attachments)
    ):
        raise ApiError("invalid_attachments")
    return Content(text, blocks, attachments)


@dataclass
class Trigger:
    user: str
    created: float
    used: bool = False


@dataclass
class WebApi:
    """Method handlers over one workspace; ``root_url`` is where upload URLs and permalinks point."""

    ws: Workspace
    root_url: str
    trigger_ttl: float = 3.0
    triggers: dict[str, Trigger] = field(default_factory=dict)
    views: list[dict[str, Any]] = field(default_factory=list)
    upload_secrets: dict[str, str] = field(default_factory=dict)  # secret -> file id
    team_name: str = "Sandbox"
    open_connection: Callable[[], str] | None = None  # a fresh Socket Mode URL (set by SlackSim)

    def call(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        handler: Callable[[dict[str, Any]], dict[str, Any]] = getattr(self, METHODS[method].handler)
        return {"ok": True, **handler(args)}

    def needed_scope(self, method: str, args: dict[str, Any]) -> str | None:
        scope = METHODS[method].scope
        channel = self.ws.channels.get(str(args.get("channel", "")))
        if scope in PRIVATE_SCOPES and channel is not None and channel.is_private:
            return PRIVATE_SCOPES[scope]
        return scope

    # -- helpers ---------------------------------------------------------------------------------

    def _channel(self, ref: str | None, *, need_member: bool) -> Channel:
        channel = self.ws.channel_by_ref(ref) if ref else None
        if channel is None or (channel.is_private and not channel.bot_member):
            raise ApiError("channel_not_found")
        if need_member and not channel.bot_member:
            raise ApiError("not_in_channel")
        return channel

    def _message(self, channel: Channel, ts: str | None) -> Message:
        msg = self.ws.find(channel.id, ts) if ts else None
        if msg is None:
            raise ApiError("message_not_found")
        return msg

    def _root(self, channel: Channel, thread_ts: str | None) -> str | None:
        if not thread_ts:
            return None
        root = self.ws.find(channel.id, thread_ts)
        if root is None or root.thread_ts is not None:
            raise ApiError("thread_not_found")
        return root.ts

    def _metadata(self, args: dict[str, Any]) -> dict[str, Any] | None:
        metadata = _json_arg(args.get("metadata"), "invalid_metadata_format")
        if metadata is None:
            return None
        if not isinstance(metadata, dict) or not isinstance(metadata.get("event_type"), str):
            raise ApiError("invalid_metadata_format")
        if not isinstance(metadata.get("event_payload", {}), dict):
            raise ApiError("invalid_metadata_schema")
        return metadata

    def post(self, channel: str, content: Content, *, thread_ts: str | None, **extra: Any) -> Message:
        """Store a new bot message (used by chat.postMessage, file shares and response_url)."""
        msg = Message(
            channel=channel,
            ts=self.ws.clock.next(),
            user=self.ws.bot_user_id,
            text=content.text or "",
            blocks=content.blocks or [],
            attachments=content.attachments or [],
            thread_ts=thread_ts,
            bot_id=self.ws.bot_id,
            app_id=self.ws.app_id,
            **extra,
        )
        return self.ws.add_message(msg)

    # -- methods ---------------------------------------------------------------------------------

    def auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        bot = self.ws.users[self.ws.bot_user_id]
        return {
            "url": f"{self.root_url}/",
            "team": self.team_name,
            "user": bot.name,
            "team_id": self.ws.team_id,
            "user_id": bot.id,
            "bot_id": self.ws.bot_id,
            "is_enterprise_install": False,
        }

    def chat_post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(_arg(args, "channel"), need_member=True)
        content = parse_content(args)
        if content.empty:
            raise ApiError("no_text")
        thread_ts = self._root(channel, _arg(args, "thread_ts"))
        msg = self.post(
            channel.id,
            content,
            thread_ts=thread_ts,
            metadata=self._metadata(args),
            reply_broadcast=thread_ts is not None and truthy(args.get("reply_broadcast")),
        )
        return {"channel": channel.id, "ts": msg.ts, "message": msg.to_api(self.ws.team_id)}

    def chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(_arg(args, "channel"), need_member=False)
        msg = self._message(channel, _arg(args, "ts"))
        if msg.user != self.ws.bot_user_id:
            raise ApiError("cant_update_message")
        content = parse_content(args)
        if content.text is None and content.blocks is None and content.attachments is None:
            raise ApiError("no_text")
        self.ws.edit(msg, text=content.text, blocks=content.blocks, attachments=content.attachments)
        metadata = self._metadata(args)
        if metadata is not None:
            msg.metadata = metadata
        return {"channel": channel.id, "ts": msg.ts, "text": msg.text, "message": msg.to_api(self.ws.team_id)}

    def chat_delete(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(_arg(args, "channel"), need_member=False)
        msg = self._message(channel, _arg(args, "ts"))
        if msg.user != self.ws.bot_user_id:
            raise ApiError("cant_delete_message")
        self.ws.delete(msg)
        return {"channel": channel.id, "ts": msg.ts}

    def chat_post_ephemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(_arg(args, "channel"), need_member=True)
        user = _arg(args, "user")
        if user is None or not self.ws.is_member(channel, user):
            raise ApiError("user_not_in_channel")
        content = parse_content(args)
        if content.empty:
            raise ApiError("no_text")
        ts = self.ws.clock.next()
        thread_ts = _arg(args, "thread_ts")
        self.ws.ephemerals.append(
            Ephemeral(
                channel=channel.id,
                user=user,
                text=content.text or "",
                blocks=content.blocks or [],
                attachments=content.attachments or [],
                thread_ts=thread_ts,
                source="chat.postEphemeral",
                message_ts=ts,
            )
        )
        return {"message_ts": ts}

    def chat_get_permalink(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(_arg(args, "channel"), need_member=False)
        msg = self._message(channel, _arg(args, "message_ts"))
        link = f"{self.root_url}/archives/{channel.id}/p{msg.ts.replace('.', '')}"
        if msg.thread_ts is not None:
            link += f"?thread_ts={msg.thread_ts}&cid={channel.id}"
        return {"channel": channel.id, "permalink": link}

    def conversations_history(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(_arg(args, "channel"), need_member=True)
        meta = truthy(args.get("include_all_metadata"))
        oldest, latest = _ts_arg(args, "oldest", 0.0), _ts_arg(args, "latest", float("inf"))
        inclusive = truthy(args.get("inclusive"))
        items = [
            self.ws.thread_json(m, meta) if m.thread_ts is None else m.to_api(self.ws.team_id, include_metadata=meta)
            for m in self.ws.messages.get(channel.id, {}).values()
            if not m.deleted
            and (m.thread_ts is None or m.reply_broadcast)
            and (oldest <= float(m.ts) <= latest if inclusive else oldest < float(m.ts) < latest)
        ]
        return _page(list(reversed(items)), args, 100)

    def conversations_replies(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(_arg(args, "channel"), need_member=True)
        ts = _arg(args, "ts")
        msg = self.ws.find(channel.id, ts) if ts else None
        if msg is None:
            raise ApiError("thread_not_found")
        root = self.ws.find(channel.id, msg.thread_ts) if msg.thread_ts else msg
        assert root is not None
        meta = truthy(args.get("include_all_metadata"))
        items = [self.ws.thread_json(root, meta)]
        items += [r.to_api(self.ws.team_id, include_metadata=meta) for r in self.ws.replies(channel.id, root.ts)]
        return _page(items, args, 1000)

    def conversations_info(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"channel": self._channel(_arg(args, "channel"), need_member=False).to_api()}

    def users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user = self.ws.users.get(_arg(args, "user") or "")
        if user is None:
            raise ApiError("user_not_found")
        return {"user": user.to_api(self.ws.team_id)}

    def usergroups_list(self, args: dict[str, Any]) -> dict[str, Any]:
        include = truthy(args.get("include_users"))
        return {"usergroups": [g.to_api(self.ws.team_id, include) for g in self.ws.groups.values()]}

    def usergroups_users_list(self, args: dict[str, Any]) -> dict[str, Any]:
        group = self.ws.groups.get(_arg(args, "usergroup") or "")
        if group is None:
            raise ApiError("no_such_subteam")
        return {"users": list(group.members)}

    def files_get_upload_url(self, args: dict[str, Any]) -> dict[str, Any]:
        filename = _arg(args, "filename")
        length = _int_arg(args, "length", 0)
        if filename is None or length <= 0:
            missing = "filename" if filename is None else "length"
            raise ApiError(
                "invalid_arguments",
                response_metadata={"messages": [f"[ERROR] missing required field: {missing}"]},
            )
        file_id = "F" + secrets.token_hex(5).upper()
        secret = secrets.token_urlsafe(12)
        self.upload_secrets[secret] = file_id
        self.ws.files[file_id] = UploadedFile(
            id=file_id,
            name=filename,
            length=length,
            user=self.ws.bot_user_id,
            alt_txt=_arg(args, "alt_txt"),
            snippet_type=_arg(args, "snippet_type"),
        )
        return {"upload_url": f"{self.root_url}/upload/v1/{secret}", "file_id": file_id}

    def _uploaded(self, args: dict[str, Any]) -> list[tuple[UploadedFile, str | None]]:
        items = _json_arg(args.get("files"), "invalid_arguments")
        if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
            raise ApiError("invalid_arguments", response_metadata={"messages": ["[ERROR] files must be an array"]})
        result = []
        for item in items:
            upload = self.ws.files.get(str(item.get("id")))
            if upload is None or upload.content is None or upload.shared:
                raise ApiError("file_not_found")
            result.append((upload, item.get("title")))
        return result

    def files_complete_upload(self, args: dict[str, Any]) -> dict[str, Any]:
        uploads = self._uploaded(args)
        channel_ref = _arg(args, "channel_id") or (_arg(args, "channels") or "").split(",")[0] or None
        channel = self._channel(channel_ref, need_member=True) if channel_ref else None
        thread_ts = self._root(channel, _arg(args, "thread_ts")) if channel else None
        comment = _arg(args, "initial_comment")
        for upload, title in uploads:
            upload.title = str(title) if title else upload.name
            upload.shared = True
            if channel is not None:
                upload.channel, upload.thread_ts, upload.initial_comment = channel.id, thread_ts, comment
        if channel is not None:
            content = Content(comment or "", None, None)
            self.post(channel.id, content, thread_ts=thread_ts, files=[u.to_api() for u, _ in uploads])
        return {"files": [u.to_api() for u, _ in uploads]}

    def files_upload(self, args: dict[str, Any]) -> dict[str, Any]:
        raise ApiError("method_deprecated")

    def apps_connections_open(self, args: dict[str, Any]) -> dict[str, Any]:
        if self.open_connection is None:
            raise ApiError("internal_error")
        return {"url": self.open_connection()}

    def new_trigger(self, user: str) -> str:
        trigger_id = f"{secrets.randbelow(10**10)}.{secrets.randbelow(10**9)}.{secrets.token_hex(16)}"
        self.triggers[trigger_id] = Trigger(user=user, created=time.monotonic())
        return trigger_id

    def _use_trigger(self, trigger_id: str | None) -> Trigger:
        trigger = self.triggers.get(trigger_id or "")
        if trigger is None:
            raise ApiError("invalid_trigger_id")
        if trigger.used:
            raise ApiError("exchanged_trigger_id")
        if time.monotonic() - trigger.created > self.trigger_ttl:
            raise ApiError("expired_trigger_id")
        trigger.used = True
        return trigger

    def _check_view(self, view: Any) -> dict[str, Any]:
        if not isinstance(view, dict) or view.get("type") != "modal":
            raise ApiError("invalid_arguments", response_metadata={"messages": ["[ERROR] view.type must be modal"]})
        errors = (
            []
            if isinstance(view.get("blocks"), list)
            else ["[ERROR] must provide an array [json-pointer:/view/blocks]"]
        )
        if not errors:
            errors = validate_blocks(view["blocks"], max_blocks=MAX_VIEW_BLOCKS)
        for key in ("title", "submit", "close"):
            title = view.get(key)
            if (key == "title" or title is not None) and not (
                isinstance(title, dict)
                and title.get("type") == "plain_text"
                and 0 < len(str(title.get("text", ""))) <= 24
            ):
                errors.append(f"[ERROR] must be plain_text of 1..24 characters [json-pointer:/view/{key}]")
        if errors:
            raise ApiError("invalid_arguments", response_metadata={"messages": errors})
        return view

    def views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        view = self._check_view(_json_arg(args.get("view"), "invalid_arguments"))
        trigger = self._use_trigger(_arg(args, "trigger_id"))
        view_id = "V" + secrets.token_hex(5).upper()
        stored = {
            **view,
            "blocks": normalize_blocks(view["blocks"]),
            "id": view_id,
            "team_id": self.ws.team_id,
            "state": {"values": {}},
            "hash": f"{int(time.time())}.{secrets.token_hex(4)}",
            "root_view_id": view_id,
            "previous_view_id": None,
            "app_id": self.ws.app_id,
            "bot_id": self.ws.bot_id,
        }
        self.views.append({"user": trigger.user, "view": stored})
        return {"view": stored}
