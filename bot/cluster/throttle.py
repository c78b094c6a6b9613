"""One policy for a 429 from the Kubernetes API or Milvus: the call was not executed, so it is
sent again after its Retry-After (1 s when none), up to THROTTLED_TRIES times in all and only
for waits of THROTTLED_MAX_WAIT seconds or less, as client-go does; beyond that it is an error
the engine retries later."""

from __future__ import annotations

THROTTLED_TRIES = 5
THROTTLED_MAX_WAIT = 10.0


def resend_after(status: int, attempt: int, retry_after: float | None) -> float | None:
    """Seconds to wait before sending the ``attempt``-th call again, or None: do not resend."""
    wait = 1.0 if retry_after is None else retry_after
    if status != 429 or attempt >= THROTTLED_TRIES or wait > THROTTLED_MAX_WAIT:
        return None
    return wait
