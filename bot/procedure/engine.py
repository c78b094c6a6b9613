"""The engine: runs an upgrade's steps in order, records every outcome, keeps Slack current.

``run_job(upgrade_id)`` is what the Redis-stored APScheduler jobs call. One call advances an
upgrade as far as it can go without waiting: it stops at an open checkpoint, at a step error
(Retry/Abort), at the end, or when a step asks to be run again later (``Wait``).

Order of effects, always: write the record to Redis, then act (cluster or Slack). A crash at
any point leaves a record that says what was about to happen, and every step looks at the
world before acting, so running again is harmless. Within one process a per-upgrade guard
makes sure one run at a time touches an upgrade; a run requested meanwhile is not lost, it
runs right after.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from slack_sdk.errors import SlackApiError

from bot import audit, logs, metrics, reports, scan, views
from bot.cluster.helm import HelmCli
from bot.cluster.kube import Kube, KubeError
from bot.cluster.milvus import MilvusClient, base_urls
from bot.jobs import JOB_REF
from bot.logs import redact
from bot.notify import ChannelPace, Notifier
from bot.procedure import checkpoints
from bot.procedure.classify import classify, retry_delay
from bot.procedure.context import Ctx, Limits
from bot.procedure.outcome import Ask, DataLost, Done, NotStartable, Outcome, Refusal, StepError, Temporary, Wait
from bot.procedure.paths import path_for, visible_steps
from bot.procedure.thread import Thread
from bot.settings import Settings, SettingsError
from state import model
from state.model import (
    ABORTED,
    ACTIVE,
    APPROVED,
    BLOCKED,
    CHECKING,
    DONE,
    ERROR,
    EXPIRED,
    FAILED,
    REJECTED,
    RUNNING,
    SUCCEEDED,
    SUPERSEDED,
    WAITING,
    Checkpoint,
    Post,
    Upgrade,
)
from state.runner import Runner
from state.store import LeaseLost, UpgradeStore

log = logging.getLogger(__name__)
MAX_AUTO_RETRIES = 3
MAX_ENGINE_ATTEMPTS = 6  # unexpected failures of the engine itself before the upgrade stops with Retry
ENGINE_RETRY_SECONDS = 5.0  # first backoff after such a failure (then 10, 20, 40, ...)
RESTORE_WATCHDOG_SECONDS = 10.0  # a durable run queued this far ahead resumes a restore whose process died
METRICS_RECENT = 100  # upgrades /metrics looks at besides the active ones
RESUME_ENDED = 50  # the most recent upgrades a new runner looks at for unfinished work after their end
NOT_IN_CHANNEL = ("not_in_channel", "channel_not_found", "is_archived", "restricted_action")

_engine: Engine | None = None


def run_job(upgrade_id: str) -> None:
    """APScheduler entry point (referenced by its import path in the Redis job store)."""
    if _engine is None:
        log.error("no engine in this process; cannot run %s", upgrade_id)
        return
    _engine.advance(upgrade_id)


def refresh_roots() -> None:
    """APScheduler interval job: keep elapsed time and downtime current on every active root message."""
    if _engine is not None:
        _engine.refresh_active()


class Engine:
    def __init__(
        self,
        settings: Settings,
        store: UpgradeStore,
        notifier: Notifier,
        kube: Kube,
        helm: HelmCli,
        limits: Limits | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.notifier = notifier
        self.kube = kube
        self.helm = helm
        self.limits = limits or Limits(
            flush_timeout=settings.flush_timeout_seconds,
            pvc_gone_timeout=settings.pvc_timeout_seconds,
            pods_timeout=settings.pods_timeout_seconds,
            load_timeout=settings.load_timeout_seconds,
        )
        self.runner = Runner(
            store.redis,
            JOB_REF,
            on_leader=self.resume_all,
            lease_seconds=settings.runner_lease_seconds,
            workers=settings.runner_workers,
        )
        self._guard = threading.Lock()
        self._idle = threading.Condition(self._guard)  # notified whenever an upgrade's run ends
        self._stopping = False
        self._running: set[str] = set()
        self._again: set[str] = set()
        self._failures: dict[str, int] = {}
        self._restoring: set[str] = set()
        self.thread = Thread(store, notifier, visible_steps)
        kube.request_timeout = settings.kube_request_timeout_seconds
        self._http = kube.http_client(timeout=settings.kube_request_timeout_seconds)

    @classmethod
    def from_settings(cls, settings: Settings, limits: Limits | None = None) -> Engine:
        try:
            kube = Kube.connect(settings.kubeconfig, settings.kube_context)
        except Exception as err:
            raise SettingsError(
                "KUBECONFIG",
                f"must name a readable kubeconfig (or run in a pod): {type(err).__name__}: {err}",
            ) from None
        return cls(
            settings,
            UpgradeStore.from_url(settings.redis_url, settings.audit_retention_days * 86400),
            Notifier(settings.slack_bot_token, settings.slack_api_url, ChannelPace(posts=settings.slack_pace)),
            kube,
            HelmCli(settings.helm_bin, kubeconfig=settings.kubeconfig, context=settings.kube_context),
            limits,
        )

    def start(self) -> None:
        global _engine
        _engine = self
        self.runner.start()
        self.runner.scheduler.add_job(
            "bot.procedure.engine:refresh_roots", "interval", seconds=60, id="refresh-roots", replace_existing=True
        )

    def refresh_active(self) -> None:
        """Every minute on the active runner: keep each active root current, and queue a run for an
        active upgrade that has none queued (its run was lost, e.g. Redis went away just as it
        tried to queue it): a safety net, so no upgrade waits for a leadership change to go on."""
        for upgrade_id in self.store.active_ids():
            upgrade = self.store.find(upgrade_id)
            if upgrade is not None and not upgrade.ended:
                self._refresh_root(upgrade)
                if not self.runner.has_queued(upgrade_id) and upgrade_id not in self._running:
                    log.info("no run queued for an active upgrade: queuing one", extra={"upgrade_id": upgrade_id})
                    self.runner.schedule(upgrade_id)

    def stop(self, grace: float = 0.0) -> bool:
        """Stop taking new work, let the steps under way end (up to ``grace`` seconds), then release
        the runner lease so another process takes over at once. True when nothing was cut short."""
        with self._guard:
            self._stopping = True
        with contextlib.suppress(Exception):
            self.runner.scheduler.pause()  # queued runs stay in Redis for the next runner
        with self._idle:
            drained = self._idle.wait_for(lambda: not self._running, timeout=grace)
        if not drained:
            log.warning("stopping with steps still under way: %s", ", ".join(sorted(self._running)))
        self.runner.stop()
        return drained

    @property
    def stopping(self) -> bool:
        return self._stopping

    def metrics_rows(self) -> list[tuple[str, float | None]]:
        """(state word, creation time of its waiting checkpoint) of every active and recent upgrade."""
        rows = []
        for upgrade in self.store.recent(METRICS_RECENT):
            cp = upgrade.open_checkpoint() if not upgrade.ended else None
            rows.append((reports.state_word(upgrade), cp.created_at if cp is not None else None))
        return rows

    def resume_all(self) -> None:
        """On becoming the active runner: queue every upgrade that has not ended (lost jobs included),
        and every recently ended one that still owes work: Slack output the record wants but Slack
        does not have yet, or an approved restore not yet done. Such an upgrade's own queued run
        is gone when the process died while running it (APScheduler removes a one-off job from the
        store as it starts it)."""
        for upgrade_id in self.store.active_ids():
            self.runner.schedule(upgrade_id)
        for upgrade_id in self.store.recent_ids(RESUME_ENDED):
            upgrade = self.store.find(upgrade_id)
            if upgrade is not None and upgrade.ended and (self.thread.owes(upgrade) or _restore_due(upgrade)):
                self.runner.schedule(upgrade_id)

    def scan(self, namespace: str | None, command: str) -> str:
        """The answer to ``scan``: every Milvus in ``namespace``, or in every namespace (read-only);
        ``command`` is the slash command, for the "start it with" hints."""
        try:
            if namespace:
                namespaces = [namespace]
            elif self.settings.namespaces:  # BOT_NAMESPACES: where the bot has rights (the chart's targetNamespaces)
                namespaces = list(self.settings.namespaces)
            else:
                namespaces = self.kube.list_namespaces()
        except KubeError as err:
            return f"I cannot list the namespaces ({err.message}); name one: `scan --namespace NS`."
        findings, problems = scan.scan(self.kube, namespaces)
        return reports.scan_text(findings, problems, namespace, len(namespaces), command)

    def milvus(self, release: str, namespace: str) -> MilvusClient:
        mgmt, rest = base_urls(
            self.settings.milvus_mgmt_url,
            self.settings.milvus_url,
            release=release,
            namespace=namespace,
            kube_host=self.kube.host,
        )
        return MilvusClient(mgmt, rest, http=self._http, token=self.settings.milvus_token)

    # ------------------------------------------------------------------ running
    def advance(self, upgrade_id: str) -> None:
        with self._guard:
            if upgrade_id in self._running:
                self._again.add(upgrade_id)
                if upgrade_id in self._restoring:  # keep a durable run queued while the restore runs
                    self.runner.schedule(upgrade_id, delay=RESTORE_WATCHDOG_SECONDS)
                return
            if self._stopping:  # shutting down: the queued run is for the next runner
                self.runner.schedule(upgrade_id)
                return
            self._running.add(upgrade_id)
        try:
            while True:
                try:
                    self._advance(upgrade_id)
                except LeaseLost:
                    # Another runner holds the lease now and re-queues every unfinished upgrade: stop quietly.
                    log.warning(
                        "lost the runner lease; leaving the upgrade to the new runner", extra={"upgrade_id": upgrade_id}
                    )
                    return
                except Exception as err:
                    self._on_engine_error(upgrade_id, err)
                else:
                    self._failures.pop(upgrade_id, None)
                self._catch_up(upgrade_id)
                with self._guard:
                    if upgrade_id not in self._again:
                        self._running.discard(upgrade_id)
                        return
                    self._again.discard(upgrade_id)
        finally:
            with self._guard:
                self._running.discard(upgrade_id)
                self._idle.notify_all()

    def _on_engine_error(self, upgrade_id: str, err: Exception) -> None:
        """An exception outside any step: run again with backoff; after a bound, stop with Retry."""
        attempts = self._failures.get(upgrade_id, 0) + 1
        self._failures[upgrade_id] = attempts
        if attempts < MAX_ENGINE_ATTEMPTS:
            delay = ENGINE_RETRY_SECONDS * 2 ** (attempts - 1)
            log.error(
                "advancing the upgrade failed (attempt %d of %d); again in %ss",
                attempts,
                MAX_ENGINE_ATTEMPTS,
                delay,
                exc_info=err,
                extra={"upgrade_id": upgrade_id},
            )
            try:
                self.runner.schedule(upgrade_id, delay=delay)
            except Exception as sched_err:  # Redis away too: the minute's safety net queues it again
                log.warning("cannot queue the retry: %s", type(sched_err).__name__, extra={"upgrade_id": upgrade_id})
            return
        log.error(
            "advancing the upgrade failed %d times; stopping it with Retry",
            attempts,
            exc_info=err,
            extra={"upgrade_id": upgrade_id},
        )
        self._failures.pop(upgrade_id, None)
        reason = (
            f"the bot failed {attempts} times in a row outside any step ({type(err).__name__}); "
            "the bot's log has the details"
        )
        try:
            upgrade = self.store.get(upgrade_id)
            if upgrade.ended:
                self._say(upgrade_id, f"engine_error:{time.time()}", f"⚠️ Stopped: {reason}.")
            elif upgrade.state != BLOCKED:
                self._block(upgrade, upgrade.step, StepError(reason))
        except Exception:
            log.exception("cannot even record the error", extra={"upgrade_id": upgrade_id})

    def _catch_up(self, upgrade_id: str) -> None:
        """Show in Slack what the record says; if some of it could not be shown, run again soon."""
        try:
            upgrade = self.store.find(upgrade_id)
            if upgrade is None:
                return
            _, complete = self.thread.reconcile(upgrade)
        except Exception:
            log.exception("reconciling the thread failed", extra={"upgrade_id": upgrade_id})
            complete = False
        if not complete:
            self.runner.schedule(upgrade_id, delay=self.thread.retry_in())

    def _advance(self, upgrade_id: str) -> None:
        upgrade = self.store.find(upgrade_id)
        if upgrade is None:
            return
        while True:
            if self._stopping:  # the step that ran has ended and is recorded: stop before the next one
                self.runner.schedule(upgrade.id)
                return
            upgrade = self._sync_decisions(upgrade)
            if upgrade.ended:
                self._after_end(upgrade)
                return
            if self._abort_if_asked(upgrade):
                return
            if upgrade.paused or upgrade.state == BLOCKED:
                return
            if upgrade.open_checkpoint() is not None:
                self._checkpoint_timers(upgrade)
                return
            keep_going, upgrade = self._run_current(upgrade)
            if not keep_going:
                return

    def _ctx(self, upgrade: Upgrade) -> Ctx:
        return Ctx(
            upgrade=upgrade,
            settings=self.settings,
            kube=self.kube,
            helm=self.helm,
            milvus=self.milvus,
            limits=self.limits,
            path=path_for(upgrade),
            _record=lambda change: self.store.update(upgrade.id, change)[0],
            _say=lambda key, text: self._say(upgrade.id, key, text),
            _upload=lambda key, name, content, title, comment: self._upload(
                upgrade.id, key, name, content, title, comment
            ),
        )

    def _run_current(self, upgrade: Upgrade) -> tuple[bool, Upgrade]:
        name = upgrade.step
        step = path_for(upgrade).step(name)

        def mark_running(u: Upgrade) -> None:
            st = u.step_state(name)
            if st.status != RUNNING:
                st.status, st.started_at = RUNNING, st.started_at or model.now()
            if u.state == CHECKING and name != "detect":
                u.state = ACTIVE

        before = upgrade.step_state(name).status
        upgrade, _ = self.store.update(upgrade.id, mark_running)
        if before != RUNNING:
            self._audit(upgrade.id, "step_started", step=name)
        self._refresh_root(upgrade)
        ctx = self._ctx(upgrade)
        try:
            with self._recording(upgrade.id), logs.context(upgrade_id=upgrade.id, step=name):
                outcome = step(ctx)
        except Exception as err:  # every failure is classified and recorded, never raised to the runner
            return self._on_error(ctx.upgrade, name, err)
        return self._on_outcome(ctx.upgrade, name, outcome)

    # ------------------------------------------------------------------ audit trail
    def _audit(self, upgrade_id: str, event: str, user: str | None = None, **data: Any) -> None:
        """One event of the upgrade's audit trail (a failure to write it is logged, never raised)."""
        try:
            self.store.audit(upgrade_id, event, user=user or "bot", **data)
        except Exception as err:
            log.warning("could not write the audit trail: %s", type(err).__name__, extra={"upgrade_id": upgrade_id})

    def _recording(self, upgrade_id: str) -> contextlib.AbstractContextManager[None]:
        """Every mutating call the adapters make inside goes into this upgrade's audit trail."""
        return audit.recording(lambda event, fields: self.store.audit(upgrade_id, event, user="bot", **fields))

    def _on_outcome(self, upgrade: Upgrade, name: str, outcome: Outcome) -> tuple[bool, Upgrade]:
        if isinstance(outcome, Wait):
            upgrade, _ = self.store.update(
                upgrade.id, lambda u: setattr(u.step_state(name), "summary", outcome.summary)
            )
            self._refresh_root(upgrade)
            self.runner.schedule(upgrade.id, delay=outcome.seconds)
            return False, upgrade
        if isinstance(outcome, Ask):
            return False, self._ask(upgrade, name, outcome)
        return self._done(upgrade, name, outcome)

    def _done(self, upgrade: Upgrade, name: str, outcome: Done) -> tuple[bool, Upgrade]:
        nxt = path_for(upgrade).step_after(name)
        self._audit(upgrade.id, "step_done", step=name, summary=outcome.summary)
        started = upgrade.step_state(name).started_at
        if started is not None:
            metrics.step_done(path_for(upgrade).name, name, time.time() - started)

        def finish(u: Upgrade) -> None:
            st = u.step_state(name)
            st.status, st.ended_at, st.summary, st.error, st.attempts = (
                DONE,
                model.now(),
                outcome.summary,
                None,
                0,
            )
            if name == "detect":
                u.state, u.root_wanted = ACTIVE, True
            if nxt is None or (u.dry_run and name == "preflight"):
                u.state, u.ended_at = SUCCEEDED, model.now()
                u.reason = "Nothing was changed (dry run)." if u.dry_run else self._success_reason(u)
            else:
                u.step = nxt

        if name == "detect":
            try:
                upgrade = self._post_root(upgrade)
            except SlackApiError as err:
                if err.response.get("error") in NOT_IN_CHANNEL:
                    reason = "I cannot post in this channel. Invite me (`/invite @<bot name>`) and try again."
                    return False, self._not_startable(upgrade, reason)
                log.warning("cannot post the root message yet", extra={"upgrade_id": upgrade.id})
            except Exception as err:  # Slack unreachable: the reconciler posts the root later
                log.warning("cannot post the root message yet: %s", err, extra={"upgrade_id": upgrade.id})
        upgrade, _ = self.store.update(upgrade.id, finish)
        if name == "preflight":
            self._say(upgrade.id, "plan", path_for(upgrade).plan_text(upgrade))
        if upgrade.ended:
            self._audit(upgrade.id, "upgrade_ended", state=upgrade.state, reason=upgrade.reason)
            self._refresh_root(upgrade)
            self._say(upgrade.id, "end", f"🎉 {views.status_line(upgrade)}. {upgrade.reason}")
            return False, upgrade
        return True, upgrade

    @staticmethod
    def _success_reason(u: Upgrade) -> str:
        return (
            f"Total time {views.duration(u.elapsed())}, downtime {views.duration(u.downtime())}. "
            "Milvus runs on Pulsar V3."
        )

    def _ask(self, upgrade: Upgrade, name: str, ask: Ask) -> Upgrade:
        def add(u: Upgrade) -> Checkpoint:
            prev = u.latest_checkpoint(ask.kind)
            if prev is not None and prev.open:
                return prev
            if prev is not None and prev.decision == APPROVED:
                prev.decision = SUPERSEDED
            cp = Checkpoint(
                id=f"{ask.kind}-{sum(1 for c in u.checkpoints if c.kind == ask.kind) + 1}",
                kind=ask.kind,
                step=name,
                created_at=model.now(),
                target={**ask.target, "note": ask.note},
            )
            u.checkpoints.append(cp)
            u.step_state(name).status = WAITING
            checkpoints.want(u, cp)
            return cp

        upgrade, cp = self.store.update(upgrade.id, add)
        self._audit(upgrade.id, "checkpoint_asked", checkpoint=cp.id, kind=cp.kind, step=name, **_named(cp.target))
        upgrade, _ = self.thread.reconcile(upgrade)
        self._refresh_root(upgrade)
        self._checkpoint_timers(upgrade)  # the reminder and expiry timer of the new checkpoint
        return upgrade

    def _checkpoint_timers(self, upgrade: Upgrade) -> None:
        """While a checkpoint waits: remind every BOT_REMINDER_SECONDS, expire after BOT_APPROVAL_TTL_SECONDS.

        The timer is this upgrade's next run, a job in the Redis job store (it survives restarts);
        a reminder is a thread message recorded once per checkpoint and interval, and the expiry a
        compare-and-set on the record, so neither happens twice whoever runs it."""
        cp = upgrade.open_checkpoint()
        if cp is None:
            return
        at = time.time()
        ttl, every = self.settings.approval_ttl_seconds, self.settings.reminder_seconds
        age = at - cp.created_at
        if age >= ttl:
            self._expire(upgrade, cp.id, ttl)
            return
        due = int(age // every)
        if due > 0 and upgrade.post(f"note:remind:{cp.id}:{due}") is None:
            self._say(upgrade.id, f"remind:{cp.id}:{due}", self._reminder(upgrade, cp, age))
        next_at = min(cp.created_at + ttl, cp.created_at + (due + 1) * every)
        self.runner.schedule(upgrade.id, delay=max(0.0, next_at - at))
        # A click (answered by the Slack edge, another process) records its decision, then queues
        # a run for now; that run may have been replaced just now by this timer. Look again: a
        # decision recorded before the timer was queued is seen here, and then runs now.
        latest = self.store.find(upgrade.id)
        again = latest.checkpoint(cp.id) if latest is not None else None
        if again is not None and not again.open:
            self.runner.schedule(upgrade.id)

    def _reminder(self, upgrade: Upgrade, cp: Checkpoint, age: float) -> str:
        who = ", ".join(f"<!subteam^{o}>" if o.startswith("S") else f"<@{o}>" for o in sorted(self.settings.operators))
        if self.settings.require_second_approver and cp.kind in checkpoints.DESTRUCTIVE:
            who += f" (not <@{upgrade.started_by}>, who started it: a second approver is required)"
        left = views.duration(cp.created_at + self.settings.approval_ttl_seconds - time.time())
        return (
            f"⏰ <@{upgrade.started_by}>: *{checkpoints.TITLES.get(cp.kind, cp.kind)}* has waited "
            f"{views.duration(age)} for a decision. It may be approved by {who}. It expires in {left}; "
            "nothing is approved without a click."
        )

    def _expire(self, upgrade: Upgrade, checkpoint_id: str, ttl: float) -> None:
        def expire(u: Upgrade) -> bool:
            cp = u.checkpoint(checkpoint_id)
            if cp is None or not cp.open:
                return False
            cp.decision, cp.decided_at = EXPIRED, model.now()
            u.paused = True
            u.want(
                Post(
                    key=f"note:expired:{cp.id}",
                    kind="note",
                    text=(
                        f"⌛ *{checkpoints.TITLES.get(cp.kind, cp.kind)}* waited {views.duration(ttl)} without a "
                        "decision and expired: nothing was approved, and the upgrade is paused. An operator can "
                        "click *Ask again* on it for a fresh checkpoint built from the cluster as it is then."
                    ),
                )
            )
            return True

        upgrade, expired = self.store.update(upgrade.id, expire)
        if expired:
            self._audit(upgrade.id, "checkpoint_expired", checkpoint=checkpoint_id)
            log.info("checkpoint expired; upgrade paused", extra={"upgrade_id": upgrade.id})
        self.thread.reconcile(upgrade)
        self._refresh_root(upgrade)

    def _on_error(self, upgrade: Upgrade, name: str, err: Exception) -> tuple[bool, Upgrade]:
        error = classify(err)
        self._audit(upgrade.id, "step_error", step=name, kind=type(error).__name__, reason=redact(error.reason))
        if isinstance(error, NotStartable):
            return False, self._not_startable(upgrade, error.reason)
        if isinstance(error, DataLost):
            return False, self._data_lost(upgrade, name, error)
        attempts = upgrade.step_state(name).attempts
        if isinstance(error, Temporary) and attempts < MAX_AUTO_RETRIES:
            upgrade, _ = self.store.update(upgrade.id, lambda u: setattr(u.step_state(name), "attempts", attempts + 1))
            log.warning("temporary failure, retrying: %s", error.reason, extra={"upgrade_id": upgrade.id})
            self.runner.schedule(upgrade.id, delay=retry_delay(error, attempts))
            return False, upgrade
        passing = isinstance(error, Temporary)  # out of automatic retries: Retry, not a refusal
        if isinstance(error, Refusal) or name == "detect" or (name == "preflight" and not passing):
            return False, self._fail(upgrade, name, error)
        return False, self._block(upgrade, name, error)

    def _block(self, upgrade: Upgrade, name: str, error: StepError) -> Upgrade:
        reason, details = redact(error.reason), redact(error.details)

        def block(u: Upgrade) -> None:
            st = u.step_state(name)
            st.status, st.error, st.attempts = ERROR, reason, 0
            u.state = BLOCKED
            key = f"err:{name}:{len(u.facts.retries)}"
            data = {"step": name, "reason": reason, "details": details, "block_id": key}
            u.want(Post(key=key, kind="error", data=data))
            u.facts.open_error = {"step": name, "reason": reason, "key": key}

        upgrade, _ = self.store.update(upgrade.id, block)
        upgrade, _ = self.thread.reconcile(upgrade)
        self._refresh_root(upgrade)
        return upgrade

    def _fail(self, upgrade: Upgrade, name: str, error: StepError) -> Upgrade:
        reason = redact(error.reason)
        return self._end_failed(
            upgrade,
            name,
            reason,
            f"Preflight refused, nothing was changed: {reason}",
            "refused",
            f"🛑 Not upgrading `{upgrade.release}`: {reason}. Nothing was changed.",
        )

    def _data_lost(self, upgrade: Upgrade, name: str, error: DataLost) -> Upgrade:
        """Verification found rows missing: the upgrade ends failed, with the table; nothing more is done."""
        reason = redact(error.reason)
        return self._end_failed(
            upgrade,
            name,
            reason,
            f"Verification failed: {reason}. Nothing more was changed; see the rows table in the thread.",
            "data_lost",
            f"🛑 *Upgrade failed: data is missing.* {reason}.\n{error.details}\nNothing more was changed. The saved "
            f"configuration is in Secret `{upgrade.facts.backup_secret}`; the flushed data is in object storage.",
        )

    def _end_failed(self, upgrade: Upgrade, name: str, reason: str, summary: str, key: str, note: str) -> Upgrade:
        """End the upgrade "failed" at step ``name``: record it, then say ``note`` once in the thread."""

        def fail(u: Upgrade) -> None:
            st = u.step_state(name)
            st.status, st.error = ERROR, reason
            u.state, u.ended_at = FAILED, model.now()
            u.reason = summary
            u.root_wanted = True

        upgrade, _ = self.store.update(upgrade.id, fail)
        self._audit(upgrade.id, "upgrade_ended", state=upgrade.state, reason=upgrade.reason)
        self._say(upgrade.id, key, note)
        self._refresh_root(upgrade)
        return upgrade

    def _not_startable(self, upgrade: Upgrade, reason: str) -> Upgrade:
        if upgrade.response_url:
            self.notifier.respond(upgrade.response_url, f"Not started: {reason}")
        else:
            self.notifier.ephemeral(upgrade.channel, upgrade.started_by, f"Not started: {reason}")
        self.store.discard(upgrade.id)
        return upgrade

    # ------------------------------------------------------------------ decisions, abort, restore
    def _sync_decisions(self, upgrade: Upgrade) -> Upgrade:
        """Record that a retried error is closed, then show every decision (buttons gone, who and when)."""
        open_error = upgrade.facts.open_error
        if open_error and upgrade.state != BLOCKED:

            def close(u: Upgrade) -> None:
                retry = (u.facts.retries or [{}])[-1]
                _close_error(u, "Retry requested", retry.get("by"))

            upgrade, _ = self.store.update(upgrade.id, close)
        upgrade, _ = self.thread.reconcile(upgrade)
        return upgrade

    def _abort_if_asked(self, upgrade: Upgrade) -> bool:
        rejected = next((c for c in upgrade.checkpoints if c.decision == REJECTED and c.kind != "restore"), None)
        asked = upgrade.facts.abort_requested or {}
        if rejected is None and not asked:
            return False
        cancel = asked.get("via") == "cancel"
        if rejected is None and cancel and self._mid_destructive_step(upgrade):
            log.info("cancel asked: waiting for the destructive step to end", extra={"upgrade_id": upgrade.id})
            return False  # a destructive step under way ends first; the cancel takes effect right after
        by = rejected.decided_by if rejected is not None else asked.get("by")
        self._abort(upgrade, by, cancelled=cancel)
        return True

    @staticmethod
    def _mid_destructive_step(upgrade: Upgrade) -> bool:
        st = upgrade.steps.get(upgrade.step)
        return upgrade.step in path_for(upgrade).destructive_steps and st is not None and st.status == RUNNING

    def _abort(self, upgrade: Upgrade, by: str | None, cancelled: bool = False) -> None:
        restore_target = self._restore_offer(upgrade)
        where = self._abort_state(upgrade, restore_target is not None)

        def end(u: Upgrade) -> None:
            _close_error(u, "Upgrade aborted", by)
            u.state, u.ended_at = ABORTED, model.now()
            if cancelled:
                u.reason = f"Aborted: cancelled by <@{by}> with `cancel`. {where}"
            else:
                u.reason = f"Aborted by <@{by}>. {where}" if by else f"Aborted. {where}"
            st = u.step_state(u.step)
            if st.status in (RUNNING, WAITING, ERROR):
                st.status = "skipped"
            u.want(Post(key="note:aborted", kind="note", text=f"🛑 {u.reason}"))
            if restore_target is not None and u.checkpoint("restore-1") is None:
                cp = Checkpoint(
                    id="restore-1", kind="restore", step="restore", created_at=model.now(), target=restore_target
                )
                u.checkpoints.append(cp)
                checkpoints.want(u, cp)

        upgrade, _ = self.store.update(upgrade.id, end)
        self._audit(upgrade.id, "upgrade_ended", by, state=upgrade.state, reason=upgrade.reason)
        self._refresh_root(upgrade)
        self.thread.reconcile(upgrade)

    def _restore_offer(self, upgrade: Upgrade) -> dict[str, Any] | None:
        return path_for(upgrade).restore_offer(self._ctx(upgrade))

    @staticmethod
    def _abort_state(upgrade: Upgrade, restorable: bool) -> str:
        return path_for(upgrade).abort_state(upgrade, restorable)

    def _after_end(self, upgrade: Upgrade) -> None:
        """The recorded "restore" step of an aborted upgrade, once its checkpoint is approved.

        Recorded as running before it acts, with a durable job queued to run the upgrade again
        (a crash mid-restore is resumed by whichever runner is active then); restore itself looks
        at the world first, so running it again is harmless."""
        cp = upgrade.latest_checkpoint("restore")
        if cp is None or not _restore_due(upgrade):
            return

        def start(u: Upgrade) -> None:
            st = u.step_state("restore")
            st.status, st.started_at, st.error = RUNNING, st.started_at or model.now(), None

        upgrade, _ = self.store.update(upgrade.id, start)
        self.runner.schedule(upgrade.id, delay=RESTORE_WATCHDOG_SECONDS)
        with self._guard:
            self._restoring.add(upgrade.id)
        try:
            self._audit(upgrade.id, "step_started", step="restore")
            with self._recording(upgrade.id):
                result = path_for(upgrade).restore(self._ctx(upgrade))
        except Exception as err:
            self._restore_failed(upgrade, cp, classify(err))
            return
        finally:
            with self._guard:
                self._restoring.discard(upgrade.id)

        def done(u: Upgrade) -> None:
            st = u.step_state("restore")
            st.status, st.ended_at, st.summary = DONE, model.now(), result
            u.facts.restore = result
            u.reason += f" Restored: {result}."

        upgrade, _ = self.store.update(upgrade.id, done)
        self._audit(upgrade.id, "step_done", step="restore", summary=result)
        self._say(upgrade.id, "restored", f"↩️ Restored: {result}. The pods are starting.")
        log.info("restored", extra={"upgrade_id": upgrade.id})
        self._refresh_root(upgrade)

    def _restore_failed(self, upgrade: Upgrade, cp: Checkpoint, error: StepError | NotStartable) -> None:
        """A passing failure is retried with backoff; any other is shown with a new Restore button."""
        reason = redact(error.reason)
        attempts = upgrade.step_state("restore").attempts
        if isinstance(error, Temporary) and attempts < MAX_AUTO_RETRIES:
            self.store.update(upgrade.id, lambda u: setattr(u.step_state("restore"), "attempts", attempts + 1))
            log.warning("restore: temporary failure, retrying: %s", reason, extra={"upgrade_id": upgrade.id})
            self.runner.schedule(upgrade.id, delay=retry_delay(error, attempts))
            return
        log.warning("restore did not work: %s", reason, extra={"upgrade_id": upgrade.id})

        def fail(u: Upgrade) -> None:
            st = u.step_state("restore")
            st.status, st.error, st.attempts = ERROR, cp.id, 0
            again = Checkpoint(
                id=f"restore-{sum(1 for c in u.checkpoints if c.kind == 'restore') + 1}",
                kind="restore",
                step="restore",
                created_at=model.now(),
                target={**cp.target, "note": f"The last restore did not work: {reason}"},
            )
            u.checkpoints.append(again)
            u.want(Post(key=f"note:restore_error:{cp.id}", kind="note", text=f"⚠️ Restore did not work: {reason}"))
            checkpoints.want(u, again)

        upgrade, _ = self.store.update(upgrade.id, fail)
        self.thread.reconcile(upgrade)

    # ------------------------------------------------------------------ Slack
    def _slack(self, call: Callable[..., Any], *args: Any) -> Any:
        try:
            return call(*args)
        except SlackApiError as err:
            log.warning("Slack call failed: %s", err.response.get("error"))
        except Exception as err:  # Slack unreachable; the next refresh tries again
            log.warning("Slack call failed: %s: %s", type(err).__name__, err)
        return None

    def _post_root(self, upgrade: Upgrade) -> Upgrade:
        """Post the root now (detect needs to know at once whether the bot may post in the channel)."""
        if upgrade.root_ts is not None:
            return upgrade
        text, blocks = views.root(upgrade, visible_steps(upgrade), time.time())
        ts = self.notifier.post(upgrade.channel, text, blocks)

        def record(u: Upgrade) -> None:
            u.root_ts, u.root_wanted = ts, True

        upgrade, _ = self.store.update(upgrade.id, record)
        return upgrade

    def _refresh_root(self, upgrade: Upgrade) -> None:
        if upgrade.root_ts is None:
            return
        text, blocks = views.root(upgrade, visible_steps(upgrade), time.time())
        self._slack(self.notifier.update, upgrade.channel, upgrade.root_ts, text, blocks)

    def _say(self, upgrade_id: str, key: str, text: str) -> None:
        """Record a note the thread must show once for ``key``, then show it (now, or on a later reconcile)."""
        upgrade, _ = self.store.update(upgrade_id, lambda u: u.want(Post(key=f"note:{key}", kind="note", text=text)))
        self.thread.reconcile(upgrade)

    def _upload(self, upgrade_id: str, key: str, filename: str, content: str, title: str, comment: str) -> None:
        data = {"filename": filename, "content": content, "title": title}
        upgrade, _ = self.store.update(
            upgrade_id, lambda u: u.want(Post(key=f"file:{key}", kind="file", text=comment, data=data))
        )
        self.thread.reconcile(upgrade)


def _named(target: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint names for the audit trail: the PVC and PV names it would destroy."""
    named: dict[str, Any] = {}
    if target.get("pvcs") and isinstance(target["pvcs"], list):
        named["pvcs"] = [p.get("name") for p in target["pvcs"] if isinstance(p, dict)]
    if target.get("pvs") and isinstance(target["pvs"], list):
        named["pvs"] = [p.get("name") for p in target["pvs"] if isinstance(p, dict)]
    return named


def _restore_due(u: Upgrade) -> bool:
    """An aborted upgrade whose latest restore checkpoint is approved and whose restore has not run to its end."""
    cp = u.latest_checkpoint("restore")
    return cp is not None and cp.decision == APPROVED and not u.facts.restore


def _close_error(u: Upgrade, outcome: str, by: str | None) -> None:
    """Record that the open error message must show ``outcome`` instead of its buttons."""
    open_error, u.facts.open_error = u.facts.open_error, None
    post = u.post(open_error["key"]) if open_error else None
    if post is not None and "closed" not in post.data:
        post.data["closed"] = {"outcome": outcome, "by": by}


__all__ = ["Engine", "classify", "run_job"]
