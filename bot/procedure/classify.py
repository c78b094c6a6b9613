"""How the engine reads an adapter's exception: which ``outcome`` error class it is.

Kubernetes          KubeTemporary (no answer, 429, 5xx) → Temporary; any other KubeError → StepError
helm                non-zero exit → StepError with helm's stderr as the details
Milvus              retriable (no answer, 429, 5xx, the proxy not ready) → Temporary; else StepError
Slack               Temporary (the reconciler shows the record later in any case)
anything else       StepError saying the log has the details (logged with its traceback)

Steps raise ``outcome`` errors themselves when they know better (Refusal, NotStartable).
"""

from __future__ import annotations

import logging

from slack_sdk.errors import SlackApiError

from bot.cluster.helm import HelmError
from bot.cluster.kube import KubeError, KubeTemporary
from bot.cluster.milvus import MilvusHttpError
from bot.procedure.outcome import NotStartable, StepError, Temporary

log = logging.getLogger(__name__)


def classify(err: Exception) -> StepError | NotStartable:
    """Map an adapter exception onto the engine's error classes (see ``outcome``)."""
    if isinstance(err, StepError | NotStartable):
        return err
    if isinstance(err, KubeTemporary):
        return Temporary(f"Kubernetes API: {err}", retry_after=err.retry_after)
    if isinstance(err, KubeError):
        return StepError(f"Kubernetes API: {err}")
    if isinstance(err, HelmError):
        return StepError(f"helm exited with code {err.exit_code}", err.stderr.strip())
    if isinstance(err, MilvusHttpError):
        if err.retriable:
            return Temporary(f"Milvus: {err}", retry_after=err.retry_after)
        return StepError(f"Milvus: {err}")
    if isinstance(err, SlackApiError):
        return Temporary(f"Slack API: {err.response.get('error')}")
    log.error("unexpected error in a step", exc_info=err)
    return StepError(f"unexpected error ({type(err).__name__}); the bot's log has the details")


MAX_RETRY_AFTER = 300.0  # a server asking for more than this is not waited for longer


def retry_delay(error: Temporary, attempts: int) -> float:
    """Seconds before the ``attempts``-th automatic retry: 2, 4, 8 ..., or the server's
    Retry-After when it asked for longer (bounded by MAX_RETRY_AFTER)."""
    backoff = float(2 ** (attempts + 1))
    if error.retry_after is None:
        return backoff
    return max(backoff, min(error.retry_after, MAX_RETRY_AFTER))
