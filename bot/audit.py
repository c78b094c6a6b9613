"""The audit trail's door for the adapters: who changed what in the cluster, and with what result.

The engine opens ``recording(sink)`` around everything it runs for one upgrade; the adapters
(``bot.cluster``) call ``record`` for every mutating call they make (each Kubernetes write with
its object, each helm command with its verb, each Milvus flush) and know nothing else. Outside a
recording (the read-only commands, the sandbox's own tests) ``record`` does nothing. Nothing
secret is recorded: objects by kind and name, helm by verb, release, chart and version (never
values), Milvus by database and collection names.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

log = logging.getLogger(__name__)
Sink = Callable[[str, dict[str, Any]], None]
_sink: ContextVar[Sink | None] = ContextVar("audit_sink", default=None)


@contextlib.contextmanager
def recording(sink: Sink) -> Iterator[None]:
    token = _sink.set(sink)
    try:
        yield
    finally:
        _sink.reset(token)


def record(event: str, **fields: Any) -> None:
    """Append ``event`` to the current upgrade's audit trail (nothing outside a recording)."""
    sink = _sink.get()
    if sink is None:
        return
    try:
        sink(event, fields)
    except Exception as err:  # the trail must never break the step it describes
        log.warning("could not write the audit trail: %s: %s", type(err).__name__, err)
