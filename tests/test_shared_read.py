"""``status`` and ``list`` asked at once share one read of the recent upgrades (handlers/slack.py).

Behaviours covered: ten asked while a read is under way get that one read's records (one read of
the store); one asked after it ended reads again (nothing is reused: a ``status`` right after a
``start`` shows it); a read that fails fails the ones waiting for it, and the next reads again.
Against a real Redis, through UpgradeStore.
"""

from __future__ import annotations

import asyncio
import threading

from handlers.slack import SharedRead
from state.model import Upgrade
from state.store import UpgradeStore


class _Counted(UpgradeStore):
    """The real store, counting its reads of the recent upgrades and holding them until let go."""

    def __init__(self, url: str) -> None:
        real = UpgradeStore.from_url(url)
        super().__init__(real.redis)
        self.reads = 0
        self.go = threading.Event()
        self.fail = False

    def recent(self, limit: int) -> list[Upgrade]:
        self.reads += 1
        self.go.wait(10)
        if self.fail:
            raise ConnectionError("Redis went away")
        return super().recent(limit)


def _upgrade(store: UpgradeStore, release: str) -> str:
    u = Upgrade(id=Upgrade.new_id(), release=release, namespace="default", channel="C1", started_by="U1")
    assert store.create(u) is None
    return u.id


def test_reads_asked_meanwhile_share_one(redis_url: str) -> None:
    store = _Counted(redis_url)
    first = _upgrade(store, "one")
    shared = SharedRead(store, 500)

    async def main() -> None:
        waiting = [asyncio.ensure_future(shared.get()) for _ in range(10)]
        await asyncio.sleep(0)  # let them all start waiting
        store.go.set()
        answers = await asyncio.gather(*waiting)
        assert store.reads == 1
        assert all([u.id for u in a] == [first] for a in answers)
        second = _upgrade(store, "two")
        again = await shared.get()  # asked after the read ended: a new read, which sees the new one
        assert store.reads == 2 and {u.id for u in again} == {first, second}

    asyncio.run(main())


def test_a_failed_read_fails_its_waiters_and_the_next_reads_again(redis_url: str) -> None:
    store = _Counted(redis_url)
    shared = SharedRead(store, 500)

    async def main() -> None:
        store.fail = True
        waiting = [asyncio.ensure_future(shared.get()) for _ in range(3)]
        await asyncio.sleep(0)
        store.go.set()
        results = await asyncio.gather(*waiting, return_exceptions=True)
        assert store.reads == 1 and all(isinstance(r, ConnectionError) for r in results)
        store.fail = False
        assert await shared.get() == [] and store.reads == 2

    asyncio.run(main())
