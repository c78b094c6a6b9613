"""Who may start upgrades and approve checkpoints.

BOT_OPERATORS lists Slack user IDs and user-group IDs. Group membership is read with
``usergroups.users.list`` and cached briefly, so a click is answered within Slack's three
seconds even when several people click at once. A Slack error while reading a group denies
(fail closed) and says so.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""


@dataclass
class Authorizer:
    users: frozenset[str]
    groups: frozenset[str]
    cache_seconds: float = 60.0
    _cache: dict[str, tuple[float, frozenset[str]]] = field(default_factory=dict)

    async def _members(self, client: AsyncWebClient, group: str) -> frozenset[str]:
        cached = self._cache.get(group)
        now = time.monotonic()
        if cached and now - cached[0] < self.cache_seconds:
            return cached[1]
        response = await client.usergroups_users_list(usergroup=group)
        members = frozenset(response.get("users") or [])
        self._cache[group] = (now, members)
        return members

    async def check(self, client: AsyncWebClient, user: str) -> Decision:
        if user in self.users:
            return Decision(True)
        failed = []
        for group in sorted(self.groups):
            try:
                if user in await self._members(client, group):
                    return Decision(True)
            except SlackApiError as err:
                log.warning("cannot read user group %s: %s", group, err.response.get("error"))
                failed.append(group)
        if failed:
            return Decision(False, f"I could not check membership of {', '.join(failed)}, so I must refuse.")
        return Decision(False, "You are not in BOT_OPERATORS, the list of people allowed to run upgrades.")
