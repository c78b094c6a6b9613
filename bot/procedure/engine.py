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

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from slack_sdk.errors import SlackApiError

from bot.cluster.helm import HelmCli, HelmError
from bot.cluster.kube import Kube, KubeError, get_milvus
from bot.cluster.milvus import MilvusClient, MilvusHttpError, base_urls
from bot.logs import redact
from bot.notify import Notifier
from bot.procedure import detect, flush, helm_path, operator_path, pods, verify, volumes
from bot.procedure.context import Ctx, Limits
from bot.procedure.outcome import Ask, Done, NotStartable, Outcome, Refusal, StepError, Temporary, Wait
from bot.settings import Settings, SettingsError
from handlers import views
from state import model
from state.model import (
    ABORTED,
    ACTIVE,
    APPROVED,
    BLOCKED,
    CHECKING,
    DONE,
    ERROR,
    FAILED,
    REJECTED,
    RUNNING,
    SUCCEEDED,
    SUPERSEDED,
    WAITING,
    Checkpoint,
    Upgrade,
)
from state.runner import Runner
from state.store import UpgradeStore

log = logging.getLogger(__name__)
JOB_REF = "bot.procedure.engine:run_job"
MAX_AUTO_RETRIES = 3
NOT_IN_CHANNEL = ("not_in_channel", "channel_not_found", "is_archived", "restricted_action")

StepFn = Callable[[Ctx], Outcome]
HELM_STEPS: list[tuple[str, StepFn]] = [
    ("detect", detect.detect),
    ("preflight", helm_path.preflight),
    ("flush", flush.flush),
    ("backup", helm_path.backup),
    ("uninstall", helm_path.uninstall),
    ("delete_pvcs", volumes.delete_pvcs),
    ("reinstall", helm_path.reinstall),
    ("wait", lambda ctx: pods.wait_ready(ctx, "pulsarv3", "wait")),
    ("verify", verify.verify),
]
OPERATOR_STEPS: list[tuple[str, StepFn]] = [
    ("detect", detect.detect),
    ("preflight", operator_path.preflight),
    ("flush", flush.flush),
    ("backup", operator_path.backup),
    ("delete_cr", operator_path.delete_cr),
    ("reinstall", operator_path.reinstall),
    ("wait", operator_path.wait_healthy),
    ("verify", verify.verify),
]
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


def steps_for(upgrade: Upgrade) -> list[tuple[str, StepFn]]:
    return OPERATOR_STEPS if upgrade.mode == "operator" else HELM_STEPS


def visible_steps(upgrade: Upgrade) -> list[str]:
    return [name for name, _ in steps_for(upgrade) if name != "detect"]


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
        )
        self.runner = Runner(
            store.redis, JOB_REF, on_leader=self.resume_all, lease_seconds=settings.runner_lease_seconds
        )
        self._guard = threading.Lock()
        self._running: set[str] = set()
        self._again: set[str] = set()
        self._http = kube.http_client()

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
            UpgradeStore.from_url(settings.redis_url),
            Notifier(settings.slack_bot_token, settings.slack_api_url),
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
        for upgrade_id in self.store.active_ids():
            upgrade = self.store.find(upgrade_id)
            if upgrade is not None and not upgrade.ended:
                self._refresh_root(upgrade)

    def stop(self) -> None:
        self.runner.stop()

    def resume_all(self) -> None:
        """On becoming the active runner: queue every upgrade that has not ended (lost jobs included)."""
        for upgrade_id in self.store.active_ids():
            self.runner.schedule(upgrade_id)

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
                return
            self._running.add(upgrade_id)
        try:
            while True:
                try:
                    self._advance(upgrade_id)
                except Exception:
                    log.exception("advancing the upgrade failed", extra={"upgrade_id": upgrade_id})
                    self.runner.schedule(upgrade_id, delay=5)
                with self._guard:
                    if upgrade_id not in self._again:
                        self._running.discard(upgrade_id)
                        return
                    self._again.discard(upgrade_id)
        finally:
            with self._guard:
                self._running.discard(upgrade_id)

    def _advance(self, upgrade_id: str) -> None:
        upgrade = self.store.find(upgrade_id)
        if upgrade is None:
            return
        while True:
            upgrade = self._sync_decisions(upgrade)
            if upgrade.ended:
                self._after_end(upgrade)
                return
            if self._abort_if_asked(upgrade):
                return
            if upgrade.state == BLOCKED or upgrade.open_checkpoint() is not None:
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
            _record=lambda change: self.store.update(upgrade.id, change)[0],
            _say=lambda key, text: self._say(upgrade.id, key, text),
            _upload=lambda key, name, content, title, comment: self._upload(
                upgrade.id, key, name, content, title, comment
            ),
        )

    def _run_current(self, upgrade: Upgrade) -> tuple[bool, Upgrade]:
        steps = dict(steps_for(upgrade))
        name = upgrade.step
        step = steps[name]

        def mark_running(u: Upgrade) -> None:
            st = u.step_state(name)
            if st.status != RUNNING:
                st.status, st.started_at = RUNNING, st.started_at or model.now()
            if u.state == CHECKING and name != "detect":
                u.state = ACTIVE

        upgrade, _ = self.store.update(upgrade.id, mark_running)
        self._refresh_root(upgrade)
        ctx = self._ctx(upgrade)
        try:
            outcome = step(ctx)
        except Exception as err:  # every failure is classified and recorded, never raised to the runner
            return self._on_error(ctx.upgrade, name, err)
        return self._on_outcome(ctx.upgrade, name, outcome)

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
        order = [n for n, _ in steps_for(upgrade)]
        nxt = order[order.index(name) + 1] if order.index(name) + 1 < len(order) else None

        def finish(u: Upgrade) -> None:
            st = u.step_state(name)
            st.status, st.ended_at, st.summary, st.error, st.attempts = (
                DONE,
                model.now(),
                outcome.summary,
                None,
                0,
            )
            u.facts.update(outcome.facts)
            if name == "detect":
                u.state = ACTIVE
            if nxt is None or (u.dry_run and name == "preflight"):
                u.state, u.ended_at = SUCCEEDED, model.now()
                u.reason = "Nothing was changed (dry run)." if u.dry_run else self._success_reason(u)
            else:
                u.step = nxt

        if name == "detect":
            try:
                self._post_root(upgrade)
            except SlackApiError as err:
                if err.response.get("error") not in NOT_IN_CHANNEL:
                    raise
                reason = "I cannot post in this channel. Invite me (`/invite @<bot name>`) and try again."
                return False, self._not_startable(upgrade, reason)
        upgrade, _ = self.store.update(upgrade.id, finish)
        if name == "preflight":
            path = operator_path if upgrade.mode == "operator" else helm_path
            self._say(upgrade.id, "plan", path.plan_text(upgrade.facts, upgrade.release, upgrade.namespace))
        if upgrade.ended:
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
            return cp

        upgrade, cp = self.store.update(upgrade.id, add)
        if cp.ts is None:
            text, blocks = views.checkpoint(upgrade, cp, checkpoint_body(cp))
            ts = self._post_thread(upgrade, text, blocks)
            upgrade, _ = self.store.update(upgrade.id, lambda u: setattr(u.checkpoint(cp.id), "ts", ts))
        self._refresh_root(upgrade)
        return upgrade

    def _on_error(self, upgrade: Upgrade, name: str, err: Exception) -> tuple[bool, Upgrade]:
        error = classify(err)
        if isinstance(error, NotStartable):
            return False, self._not_startable(upgrade, error.reason)
        attempts = upgrade.step_state(name).attempts
        if isinstance(error, Temporary) and attempts < MAX_AUTO_RETRIES:
            upgrade, _ = self.store.update(upgrade.id, lambda u: setattr(u.step_state(name), "attempts", attempts + 1))
            log.warning("temporary failure, retrying: %s", error.reason, extra={"upgrade_id": upgrade.id})
            self.runner.schedule(upgrade.id, delay=2 ** (attempts + 1))
            return False, upgrade
        if isinstance(error, Refusal) or name in ("detect", "preflight"):
            return False, self._fail(upgrade, name, error)
        return False, self._block(upgrade, name, error)

    def _block(self, upgrade: Upgrade, name: str, error: StepError) -> Upgrade:
        reason = redact(error.reason)

        def block(u: Upgrade) -> None:
            st = u.step_state(name)
            st.status, st.error, st.attempts = ERROR, reason, 0
            u.state = BLOCKED

        upgrade, _ = self.store.update(upgrade.id, block)
        key = f"err:{name}:{len(upgrade.facts.get('retries', []))}"
        text, blocks = views.error(upgrade, name, reason, redact(error.details))
        ts = self._post_thread(upgrade, text, blocks)
        upgrade, _ = self.store.update(
            upgrade.id,
            lambda u: u.facts.__setitem__("open_error", {"ts": ts, "step": name, "reason": reason, "key": key}),
        )
        self._refresh_root(upgrade)
        return upgrade

    def _fail(self, upgrade: Upgrade, name: str, error: StepError) -> Upgrade:
        reason = redact(error.reason)

        def fail(u: Upgrade) -> None:
            st = u.step_state(name)
            st.status, st.error = ERROR, reason
            u.state, u.ended_at = FAILED, model.now()
            u.reason = f"Preflight refused, nothing was changed: {reason}"

        upgrade, _ = self.store.update(upgrade.id, fail)
        if upgrade.root_ts is None:
            upgrade = self._post_root(upgrade)
        self._say(upgrade.id, "refused", f"🛑 Not upgrading `{upgrade.release}`: {reason}. Nothing was changed.")
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
        """Show every new decision on its checkpoint message (buttons gone, who and when)."""
        for cp in upgrade.checkpoints:
            key = f"decided:{cp.id}"
            if cp.decision is None or cp.ts is None or key in upgrade.posted:
                continue
            text, blocks = views.decided(upgrade, cp, checkpoint_body(cp))
            self._slack(self.notifier.update, upgrade.channel, cp.ts, text, blocks)
            upgrade, _ = self.store.update(upgrade.id, _mark_posted(key))
        open_error = upgrade.facts.get("open_error")
        if open_error and upgrade.state != BLOCKED:
            retry = (upgrade.facts.get("retries") or [{}])[-1]
            text, blocks = views.error_closed(
                open_error["step"], open_error["reason"], "Retry requested", retry.get("by")
            )
            self._slack(self.notifier.update, upgrade.channel, open_error["ts"], text, blocks)
            upgrade, _ = self.store.update(upgrade.id, lambda u: u.facts.pop("open_error", None))
        return upgrade

    def _abort_if_asked(self, upgrade: Upgrade) -> bool:
        rejected = next((c for c in upgrade.checkpoints if c.decision == REJECTED and c.kind != "restore"), None)
        asked = upgrade.facts.get("abort_requested") or {}
        if rejected is None and not asked:
            return False
        by = rejected.decided_by if rejected is not None else asked.get("by")
        self._abort(upgrade, by)
        return True

    def _abort(self, upgrade: Upgrade, by: str | None) -> None:
        open_error = upgrade.facts.get("open_error")
        if open_error:
            text, blocks = views.error_closed(open_error["step"], open_error["reason"], "Upgrade aborted", by)
            self._slack(self.notifier.update, upgrade.channel, open_error["ts"], text, blocks)
        restore_target = self._restore_offer(upgrade)
        where = self._abort_state(upgrade, restore_target is not None)

        def end(u: Upgrade) -> Checkpoint | None:
            u.facts.pop("open_error", None)
            u.state, u.ended_at = ABORTED, model.now()
            u.reason = f"Aborted by <@{by}>. {where}" if by else f"Aborted. {where}"
            st = u.step_state(u.step)
            if st.status in (RUNNING, WAITING, ERROR):
                st.status = "skipped"
            if restore_target is None:
                return None
            cp = Checkpoint(
                id="restore-1", kind="restore", step="restore", created_at=model.now(), target=restore_target
            )
            u.checkpoints.append(cp)
            return cp

        upgrade, cp = self.store.update(upgrade.id, end)
        self._refresh_root(upgrade)
        self._say(upgrade.id, "aborted", f"🛑 {upgrade.reason}")
        if cp is not None:
            text, blocks = views.checkpoint(upgrade, cp, checkpoint_body(cp))
            ts = self._post_thread(upgrade, text, blocks)
            self.store.update(upgrade.id, lambda u: setattr(u.checkpoint(cp.id), "ts", ts))

    def _restore_offer(self, upgrade: Upgrade) -> dict[str, Any] | None:
        if upgrade.mode == "operator":
            return self._restore_offer_operator(upgrade)
        if upgrade.saved is None or not upgrade.facts.get("uninstalled") or upgrade.facts.get("pvc_delete_started"):
            return None
        ctx = self._ctx(upgrade)
        try:
            release = detect.helm_release(ctx)
            pvcs, _ = volumes.list_volumes(ctx)
        except KubeError:
            return None
        if (release is not None and release.status == "deployed") or not pvcs:
            return None
        return {
            "release": upgrade.release,
            "namespace": upgrade.namespace,
            "chart_version": upgrade.saved.get("chart_version"),
            "pvcs": len(pvcs),
        }

    def _restore_offer_operator(self, upgrade: Upgrade) -> dict[str, Any] | None:
        """After the resource was deleted, offer to re-create the original manifest (Pulsar V2)."""
        if upgrade.saved is None or not upgrade.facts.get("cr_delete_started"):
            return None
        try:
            if get_milvus(self.kube, upgrade.namespace, upgrade.release) is not None:
                return None
        except KubeError:
            return None
        return {"release": upgrade.release, "namespace": upgrade.namespace, "operator": True}

    @staticmethod
    def _abort_state(upgrade: Upgrade, restorable: bool) -> str:
        cm = upgrade.facts.get("backup_configmap")
        if upgrade.mode == "operator":
            if not upgrade.facts.get("cr_delete_started"):
                return "The Milvus resource was not touched; nothing was deleted."
            if restorable:
                return (
                    f"The Milvus resource is deleted; its manifest is saved in ConfigMap `{cm}` and it can be "
                    "re-created as it was (Pulsar V2)."
                )
            return f"The Milvus resource's manifest is saved in ConfigMap `{cm}`."
        if not upgrade.facts.get("uninstalled"):
            return "Milvus was not stopped; nothing was deleted."
        if restorable:
            return "Milvus is uninstalled; the Pulsar V2 volumes still exist, so the previous release can be restored."
        return (
            f"Milvus is uninstalled. Its values are saved in ConfigMap `{cm}`; reinstall them with "
            "`helm install` (pulsar.enabled false, pulsarv3.enabled true) when ready."
        )

    def _after_end(self, upgrade: Upgrade) -> None:
        cp = upgrade.latest_checkpoint("restore")
        if cp is None or cp.decision != APPROVED or upgrade.facts.get("restore"):
            return
        ctx = self._ctx(upgrade)
        try:
            result = (operator_path if upgrade.mode == "operator" else helm_path).restore(ctx)
        except Exception as err:
            error = classify(err)
            self._say(upgrade.id, f"restore_error:{time.time()}", f"⚠️ Restore did not work: {redact(error.reason)}")
            return
        upgrade, _ = self.store.update(upgrade.id, lambda u: u.facts.__setitem__("restore", result))
        upgrade, _ = self.store.update(upgrade.id, lambda u: setattr(u, "reason", u.reason + f" Restored: {result}."))
        self._say(upgrade.id, "restored", f"↩️ Restored: {result}. The pods are starting.")
        log.info("restored", extra={"upgrade_id": upgrade.id})
        self._refresh_root(upgrade)

    # ------------------------------------------------------------------ Slack
    def _slack(self, call: Callable[..., Any], *args: Any) -> Any:
        try:
            return call(*args)
        except SlackApiError as err:
            log.warning("Slack call failed: %s", err.response.get("error"))
            return None

    def _post_root(self, upgrade: Upgrade) -> Upgrade:
        if upgrade.root_ts is not None:
            return upgrade
        text, blocks = views.root(upgrade, visible_steps(upgrade), time.time())
        ts = self.notifier.post(upgrade.channel, text, blocks)
        upgrade, _ = self.store.update(upgrade.id, lambda u: setattr(u, "root_ts", ts))
        return upgrade

    def _refresh_root(self, upgrade: Upgrade) -> None:
        if upgrade.root_ts is None:
            return
        text, blocks = views.root(upgrade, visible_steps(upgrade), time.time())
        self._slack(self.notifier.update, upgrade.channel, upgrade.root_ts, text, blocks)

    def _post_thread(self, upgrade: Upgrade, text: str, blocks: list[dict[str, Any]]) -> str:
        upgrade = self._post_root(upgrade)
        return self.notifier.post(upgrade.channel, text, blocks, thread_ts=upgrade.root_ts)

    def _say(self, upgrade_id: str, key: str, text: str) -> None:
        upgrade = self.store.get(upgrade_id)
        if key in upgrade.posted:
            return
        msg, blocks = views.note(text)
        ts = self._post_thread(upgrade, msg, blocks)
        self.store.update(upgrade_id, lambda u: u.posted.__setitem__(key, ts))

    def _upload(self, upgrade_id: str, key: str, filename: str, content: str, title: str, comment: str) -> None:
        upgrade = self._post_root(self.store.get(upgrade_id))
        if key in upgrade.posted:
            return
        self.notifier.upload(upgrade.channel, upgrade.root_ts or "", filename, content, title, comment)
        self.store.update(upgrade_id, lambda u: u.posted.__setitem__(key, "file"))


def _mark_posted(key: str) -> Callable[[Upgrade], None]:
    return lambda u: u.posted.__setitem__(key, "1")


def classify(err: Exception) -> StepError | NotStartable:
    """Map an adapter exception onto the engine's error classes (see ``outcome``)."""
    if isinstance(err, StepError | NotStartable):
        return err
    if isinstance(err, KubeError):
        cls = Temporary if err.temporary else StepError
        return cls(f"Kubernetes API: {err}")
    if isinstance(err, HelmError):
        return StepError(f"helm exited with code {err.exit_code}", err.stderr.strip())
    if isinstance(err, MilvusHttpError):
        return (Temporary if getattr(err, "retriable", False) else StepError)(f"Milvus: {err}")
    if isinstance(err, SlackApiError):
        return Temporary(f"Slack API: {err.response.get('error')}")
    log.error("unexpected error in a step", exc_info=err)
    return StepError(f"unexpected error ({type(err).__name__}); the bot's log has the details")


def checkpoint_body(cp: Checkpoint) -> str:
    t = cp.target
    note = f"*{t['note']}*\n" if t.get("note") else ""
    if cp.kind == "flush_done" and t.get("operator"):
        return (
            f"{note}Flushed every database of `{t['release']}`:\n{flush.flush_text(t.get('flush', {}))}\n"
            "Approving confirms that *all writers are stopped*, and lets me flush once more and save the Milvus "
            "resource's manifest; deleting the resource (and Pulsar V2 with it) waits for the next checkpoint."
        )
    if cp.kind == "flush_done":
        return (
            f"{note}Flushed every database of `{t['release']}`:\n{flush.flush_text(t.get('flush', {}))}\n"
            "Approving confirms that *all writers are stopped*, and lets me flush once more, save the values "
            "and *stop Milvus (helm uninstall) and delete Pulsar V2*."
        )
    if cp.kind == "pvc_list" and t.get("operator"):
        return (
            f"{note}milvus-operator will delete these Pulsar PVCs (labels `app=pulsar,release={t['release']}-pulsar`) "
            f"in namespace `{t['namespace']}` when the Milvus resource goes; I then delete the PVs left:\n"
            f"{volumes.volumes_text(t.get('pvcs', []), t.get('pvs', []))}\n"
            "Approving patches the resource (etcd and MinIO: Retain, PVCs kept; Pulsar: Delete with its PVCs) and "
            "deletes it. Before that I list the PVCs again; if the list grew, nothing is changed and I ask again."
        )
    if cp.kind == "pvc_list":
        return (
            f"{note}These PVCs (labels `app=pulsar`) in namespace `{t['namespace']}` and the PVs bound to them "
            f"will be deleted:\n{volumes.volumes_text(t.get('pvcs', []), t.get('pvs', []))}\n"
            "Before deleting, I list them again; if the list differs, nothing is deleted and I ask again."
        )
    if cp.kind == "reinstall" and t.get("operator"):
        diff = "\n".join(t.get("diff", [])) or "(no change)"
        return (
            f"{note}Create the Milvus resource `{t['release']}` again from the saved manifest (server-set fields "
            f"removed), with Pulsar V3. Manifest diff:\n```{diff}```"
        )
    if cp.kind == "restore" and t.get("operator"):
        return (
            f"The Milvus resource `{t['release']}` is deleted. Restore re-creates it from its saved manifest as it was "
            "(Pulsar V2, a fresh Pulsar; the flushed data is in object storage)."
        )
    if cp.kind == "reinstall":
        diff = "\n".join(t.get("diff", [])) or "(no change)"
        return (
            f"{note}Install `{t['release']}` with chart `{t.get('chart')}` *{t.get('version')}* "
            f"(Milvus {t.get('app_version')}); before: chart {t.get('previous_version')} "
            f"(Milvus {t.get('previous_app_version')}).\nValues diff:\n```{diff}```"
        )
    if cp.kind == "restore":
        return (
            f"`{t['release']}` is uninstalled and its {t.get('pvcs')} Pulsar V2 PVCs still exist. "
            f"Restore installs it again with its saved original values (chart {t.get('chart_version')}, Pulsar V2)."
        )
    return note


__all__ = ["Engine", "checkpoint_body", "classify", "run_job"]
