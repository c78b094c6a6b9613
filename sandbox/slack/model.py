"""What the simulated Slack workspace holds: users, groups, channels, messages, ephemerals, files.

Why: the Web API handlers, the response_url endpoint and the test helpers all read and change the
same workspace; keeping it in one place, as plain dataclasses, lets tests assert on exactly what a
person in Slack would see. The dataclasses are the public shapes returned by ``SlackSim``.

Guarantees: message timestamps are unique and strictly increasing (``"1764000000.000100"`` form,
seconds and six digits); a message's ``edits`` keep every earlier version, oldest first; a
message's JSON (``to_api``) has the fields Slack returns for a bot message (type, user, bot_id,
app_id, team, ts, text, blocks, thread_ts/reply_count for threads, ``edited`` after an update).
The workspace is not locked here: ``SlackSim`` serialises all access with one lock.
"""

from __future__ import annotations

import mimetypes
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class User:
    id: str
    name: str
    is_bot: bool = False

    def to_api(self, team_id: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "team_id": team_id,
            "name": self.name,
            "real_name": self.name,
            "deleted": False,
            "is_bot": self.is_bot,
            "is_admin": False,
            "tz": "UTC",
            "profile": {"real_name": self.name, "display_name": self.name, "team": team_id},
        }


@dataclass
class UserGroup:
    id: str
    handle: str
    members: list[str]

    def to_api(self, team_id: str, include_users: bool) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "team_id": team_id,
            "is_usergroup": True,
            "name": self.handle,
            "handle": self.handle,
            "user_count": len(self.members),
            "date_delete": 0,
        }
        if include_users:
            data["users"] = list(self.members)
        return data


@dataclass
class Channel:
    id: str
    name: str
    bot_member: bool = True
    is_private: bool = False
    members: list[str] | None = None  # None: every user of the workspace

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "is_channel": not self.is_private,
            "is_group": self.is_private,
            "is_im": False,
            "is_private": self.is_private,
            "is_archived": False,
            "is_member": self.bot_member,
            "created": 1700000000,
        }


@dataclass
class Message:
    """A channel message as Slack stores it (root when ``thread_ts`` is None)."""

    channel: str
    ts: str
    user: str
    text: str = ""
    blocks: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[dict[str, Any]] = field(default_factory=list)
    thread_ts: str | None = None
    metadata: dict[str, Any] | None = None
    files: list[dict[str, Any]] = field(default_factory=list)
    edits: list[dict[str, Any]] = field(default_factory=list)  # earlier versions, oldest first
    reply_count: int = 0
    bot_id: str | None = None
    app_id: str | None = None
    reply_broadcast: bool = False
    deleted: bool = False
    edited_ts: str | None = None

    @property
    def edit_count(self) -> int:
        return len(self.edits)

    def snapshot(self) -> dict[str, Any]:
        return {"text": self.text, "blocks": list(self.blocks), "attachments": list(self.attachments)}

    def to_api(self, team_id: str, *, include_metadata: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {"type": "message", "user": self.user, "ts": self.ts, "text": self.text}
        if self.bot_id:
            data.update(bot_id=self.bot_id, app_id=self.app_id)
        data["team"] = team_id
        if self.blocks:
            data["blocks"] = self.blocks
        if self.attachments:
            data["attachments"] = self.attachments
        if self.files:
            data.update(files=self.files, upload=True)
        if self.edited_ts:
            data["edited"] = {"user": self.user, "ts": self.edited_ts}
        if self.metadata and include_metadata:
            data["metadata"] = self.metadata
        if self.thread_ts is not None:
            data["thread_ts"] = self.thread_ts
            if self.reply_broadcast:
                data["subtype"] = "thread_broadcast"
        return data


@dataclass
class Ephemeral:
    """A message only ``user`` sees: chat.postEphemeral, a response_url post, or a slash ack."""

    channel: str
    user: str
    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[dict[str, Any]] = field(default_factory=list)
    thread_ts: str | None = None
    source: str = "chat.postEphemeral"  # or "response_url", "slash_ack", "slack"
    message_ts: str = ""


@dataclass
class UploadedFile:
    id: str
    name: str
    length: int
    user: str
    title: str | None = None
    content: bytes | None = None  # None until the bytes are POSTed to the upload URL
    channel: str | None = None
    thread_ts: str | None = None
    initial_comment: str | None = None
    alt_txt: str | None = None
    snippet_type: str | None = None
    shared: bool = False
    created: int = field(default_factory=lambda: int(time.time()))

    def to_api(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "created": self.created,
            "timestamp": self.created,
            "name": self.name,
            "title": self.title or self.name,
            "mimetype": mimetypes.guess_type(self.name)[0] or "application/octet-stream",
            "filetype": self.name.rsplit(".", 1)[-1] if "." in self.name else "binary",
            "user": self.user,
            "size": len(self.content or b""),
            "mode": "hosted",
            "is_public": False,
        }
        if self.shared and self.channel:
            data["channels"] = [self.channel]
        return data


@dataclass
class ApiCall:
    """One Web API request as the simulator received it."""

    method: str
    args: dict[str, Any]
    token: str | None
    at: float  # time.monotonic()
    http_method: str = "POST"
    status: int = 200
    error: str | None = None  # the "error" of an ok:false answer


@dataclass
class ResponseUrl:
    url: str
    kind: str  # "commands" or "actions"
    channel: str
    user: str
    message_ts: str | None
    thread_ts: str | None
    created: float
    uses: int = 0


@dataclass
class ResponseUrlPost:
    """One POST to a response_url, and how the simulator answered it."""

    url: str
    body: dict[str, Any]
    at: float
    status: int
    answer: str


class TsClock:
    """Strictly increasing Slack timestamps derived from the wall clock."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> str:
        now = int(time.time() * 1_000_000)
        self._last = max(now, self._last + 1)
        return f"{self._last // 1_000_000}.{self._last % 1_000_000:06d}"


@dataclass
class Workspace:
    team_id: str
    bot_user_id: str
    bot_id: str
    app_id: str
    users: dict[str, User] = field(default_factory=dict)
    groups: dict[str, UserGroup] = field(default_factory=dict)
    channels: dict[str, Channel] = field(default_factory=dict)
    messages: dict[str, dict[str, Message]] = field(default_factory=dict)  # channel -> ts -> message
    ephemerals: list[Ephemeral] = field(default_factory=list)
    files: dict[str, UploadedFile] = field(default_factory=dict)
    clock: TsClock = field(default_factory=TsClock)

    def channel_by_ref(self, ref: str) -> Channel | None:
        """A channel by id, or by name with or without '#' (chat.postMessage accepts both)."""
        if ref in self.channels:
            return self.channels[ref]
        name = ref.removeprefix("#")
        return next((c for c in self.channels.values() if c.name == name), None)

    def is_member(self, channel: Channel, user: str) -> bool:
        if user == self.bot_user_id:
            return channel.bot_member
        if channel.members is None:
            return user in self.users
        return user in channel.members

    def find(self, channel: str, ts: str) -> Message | None:
        msg = self.messages.get(channel, {}).get(ts)
        return None if msg is None or msg.deleted else msg

    def roots(self, channel: str) -> list[Message]:
        return [m for m in self.messages.get(channel, {}).values() if m.thread_ts is None and not m.deleted]

    def replies(self, channel: str, root_ts: str) -> list[Message]:
        return [m for m in self.messages.get(channel, {}).values() if m.thread_ts == root_ts and not m.deleted]

    def add_message(self, msg: Message) -> Message:
        self.messages.setdefault(msg.channel, {})[msg.ts] = msg
        if msg.thread_ts is not None:
            root = self.messages[msg.channel][msg.thread_ts]
            root.reply_count += 1
        return msg

    def edit(self, msg: Message, *, text: str | None, blocks: Any, attachments: Any) -> None:
        """Apply an update, keeping the previous version in ``edits``."""
        msg.edits.append(msg.snapshot())
        if text is not None:
            msg.text = text
        if blocks is not None:
            msg.blocks = blocks
        if attachments is not None:
            msg.attachments = attachments
        msg.edited_ts = self.clock.next()

    def delete(self, msg: Message) -> None:
        msg.deleted = True
        if msg.thread_ts is not None:
            self.messages[msg.channel][msg.thread_ts].reply_count -= 1

    def thread_json(self, root: Message, include_metadata: bool) -> dict[str, Any]:
        data = root.to_api(self.team_id, include_metadata=include_metadata)
        replies = self.replies(root.channel, root.ts)
        if replies:
            data.update(
                thread_ts=root.ts,
                reply_count=len(replies),
                reply_users=sorted({r.user for r in replies}),
                reply_users_count=len({r.user for r in replies}),
                latest_reply=replies[-1].ts,
            )
        return data
