"""``helm install|upgrade|uninstall|status|list|history|get values``, as helm v3.16 runs them.

The order of checks, what is stored when, and the error wording follow helm's pkg/action and
cmd/helm (install: reachability, name in use, render, ownership of existing objects, store
``pending-install``, create, ``--wait``, store ``deployed``; upgrade: ``has no deployed
releases``, value reuse rules, new revision ``pending-upgrade``, update/create/delete, previous
revision ``superseded``; uninstall: ``uninstalling``, delete all but ``keep`` objects, then purge
or keep history). Errors of install/upgrade are prefixed ``INSTALLATION FAILED:`` /
``UPGRADE FAILED:`` exactly where helm wraps them.
"""

from __future__ import annotations

import contextlib
import re
import time
from typing import Any

import yaml

from sandbox.helm import apply, charts
from sandbox.helm.flags import CliError
from sandbox.helm.kubeclient import KubeApiError
from sandbox.helm.output import ansic, encode, go_json, go_yaml, list_time, status_block, table
from sandbox.helm.render import RenderError, manifest_text, parse_manifest, render
from sandbox.helm.repos import locate_chart
from sandbox.helm.session import Session
from sandbox.helm.storage import (
    NoDeployedReleases,
    Release,
    ReleaseNotFound,
    StorageError,
    new_release,
    now_rfc3339,
    set_status,
)
from sandbox.helm.values import ValuesError, coalesce, merge_maps, merge_tables, parse_set, sort_maps

NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
INVALID_NAME = f"invalid release name, must match regex {NAME_RE.pattern} and the length must not be longer than 53"
DRY_RUN_VALUES = ("false", "true", "none", "client", "server")


def valid_name(name: str) -> bool:
    return bool(NAME_RE.match(name)) and len(name) <= 53


def poll_interval(s: Session) -> float:
    try:
        return float(s.env.get("SANDBOX_HELM_POLL_INTERVAL", "0.25"))
    except ValueError:
        return 0.25


# --- values -------------------------------------------------------------------------------------
def _read_values_file(s: Session, path: str) -> dict[str, Any]:
    try:
        if path == "-":
            text = s.stdin
        else:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
    except FileNotFoundError:
        raise CliError(f"open {path}: no such file or directory") from None
    except OSError as exc:
        raise CliError(f"open {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CliError(f"failed to parse {path}: error converting YAML to JSON: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        kind = "array" if isinstance(data, list) else "string"
        raise CliError(
            f"failed to parse {path}: error unmarshaling JSON: while decoding JSON: "
            f"json: cannot unmarshal {kind} into Go value of type map[string]interface {{}}"
        )
    return data


def user_values(s: Session) -> dict[str, Any]:
    """values.Options.MergeValues: -f files, then --set-json, --set, --set-string, --set-file."""
    base: dict[str, Any] = {}
    for path in s.flag("values"):
        base = merge_maps(base, _read_values_file(s, path))
    stages = [("set-json", {"as_json": True}), ("set", {}), ("set-string", {"as_string": True})]
    for flag, kwargs in stages:
        for expression in s.flag(flag):
            try:
                parse_set(expression, base, **kwargs)
            except ValuesError as exc:
                raise CliError(f"failed parsing --{flag} data: {exc}") from None
    for expression in s.flag("set-file"):
        key, _, path = expression.partition("=")
        try:
            with open(path, encoding="utf-8") as fh:
                content = fh.read()
        except OSError:
            raise CliError(f"failed parsing --set-file data: open {path}: no such file or directory") from None
        holder: dict[str, Any] = {}
        parse_set(f"{key}=x", holder, as_string=True)
        _replace_leaf(holder, content)
        base = merge_maps(base, holder)
    return base


def _replace_leaf(tree: dict[str, Any], value: str) -> None:
    for k, v in tree.items():
        if isinstance(v, dict):
            _replace_leaf(v, value)
        else:
            tree[k] = value


# --- chart and release records ------------------------------------------------------------------
def chart_record(cv: charts.ChartVersion, values: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``chart`` object of a stored release (Go struct field order)."""
    meta = charts.chart_metadata(cv)
    order = [
        "name",
        "home",
        "sources",
        "version",
        "description",
        "keywords",
        "maintainers",
        "icon",
        "apiVersion",
        "appVersion",
        "kubeVersion",
        "dependencies",
    ]
    dep_order = ["name", "version", "repository", "condition", "alias"]
    meta["dependencies"] = [{k: d[k] for k in dep_order if k in d} for d in meta["dependencies"]]
    return {
        "metadata": {k: meta[k] for k in order if k in meta},
        "lock": None,
        "templates": [],
        "values": sort_maps(values if values is not None else charts.chart_values(cv)),
        "schema": None,
        "files": [],
    }


def _version_of(release: Release) -> charts.ChartVersion:
    version = str(((release.get("chart") or {}).get("metadata") or {}).get("version", ""))
    found = charts.find_version(version)
    if found is None:
        raise CliError(f"chart version {version} of release {release.get('name')} is unknown to the simulator")
    return found


def _render(name: str, namespace: str, cv: charts.ChartVersion, defaults: dict[str, Any], vals: dict[str, Any]) -> str:
    try:
        return manifest_text(render(name, namespace, cv, coalesce(defaults, vals)))
    except RenderError as exc:
        raise CliError(str(exc)) from None


def _targets(release: Release) -> list[dict[str, Any]]:
    return [
        apply.with_ownership(o, release["name"], release["namespace"])
        for o in parse_manifest(release.get("manifest", ""))
    ]


def _wait_or_fail(s: Session, targets: list[dict[str, Any]], namespace: str) -> None:
    if s.flag("wait"):
        apply.wait_ready(s.kube, targets, namespace, s.flag("timeout"), poll_interval(s))


# --- install ------------------------------------------------------------------------------------
def _name_and_chart(s: Session, args: list[str]) -> tuple[str, str]:
    generate = bool(s.parsed.values.get("generate-name", False))
    if len(args) > 2:
        raise CliError(f"expected at most two arguments, unexpected arguments: {', '.join(args[2:])}")
    if len(args) == 2:
        if generate:
            raise CliError("cannot set --generate-name and also specify a name")
        return args[0], args[1]
    if not generate:
        raise CliError("must either provide a name or specify --generate-name")
    return f"{charts.CHART_NAME}-{int(time.time())}", args[0]


def _dry_run(s: Session) -> bool:
    if s.flag("atomic"):  # accepted by real helm; refusing is better than silently not rolling back
        raise CliError("the helm simulator does not implement --atomic")
    option = s.flag("dry-run")
    if option not in DRY_RUN_VALUES:
        raise CliError("Invalid dry-run flag. Flag must one of the following: false, true, none, client, server")
    return option not in ("none", "false")


def _check_name_available(s: Session, name: str, replace: bool, dry_run: bool) -> None:
    if not valid_name(name):
        raise CliError(f'release name "{name}": {INVALID_NAME}')
    if dry_run:
        return
    try:
        history = s.storage.history(name)
    except StorageError:
        return
    last = history[-1]
    if replace and last["info"]["status"] in ("uninstalled", "failed"):
        return
    raise CliError("cannot re-use a name that is still in use")


def _fail(s: Session, release: Release, message: str, prefix: str) -> CliError:
    set_status(release, "failed", f'{prefix} "{release["name"]}" failed: {message}')
    try:
        s.storage.update(release)
    except StorageError as exc:
        s.err.write(f"warning: {exc}\n")
    return CliError(message)


def run_install(s: Session, args: list[str], replace: bool) -> Release:
    """runInstall + Install.RunWithContext; errors are returned unprefixed."""
    name, chart_ref = _name_and_chart(s, args)
    cv = locate_chart(chart_ref, s.flag("version"), s.flag("repo"), s.paths).version
    vals = user_values(s)
    namespace = s.namespace
    dry_run = _dry_run(s)
    s.reachable()
    _check_name_available(s, name, replace, dry_run)
    defaults = charts.chart_values(cv)
    manifest = _render(name, namespace, cv, defaults, vals)
    release = new_release(
        name,
        namespace,
        1,
        chart_record(cv, defaults),
        vals,
        manifest,
        "pending-install",
        "Initial install underway",
    )
    targets = _targets(release)
    try:
        adopt = apply.existing_conflicts(s.kube, targets, name, namespace)
    except RuntimeError as exc:
        raise CliError(f"Unable to continue with install: {exc}") from None
    if dry_run:
        release["info"]["description"] = "Dry run complete"
        return release
    if s.flag("create-namespace"):
        _create_namespace(s, namespace)
    if replace:
        _supersede_last(s, release)
    try:
        s.storage.create(release)
    except StorageError as exc:
        raise CliError(str(exc)) from None
    try:
        if adopt:
            apply.update_all(s.kube, adopt, targets, namespace)
        else:
            apply.create_all(s.kube, targets, namespace)
        _wait_or_fail(s, targets, namespace)
    except (RuntimeError, apply.WaitTimeout) as exc:
        raise _fail(s, release, str(exc), "Release") from None
    set_status(release, "deployed", s.flag("description") or "Install complete")
    s.storage.update(release)
    return release


def _create_namespace(s: Session, namespace: str) -> None:
    obj = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": namespace, "labels": {"name": namespace}},
    }
    try:
        if s.kube.get("v1", "Namespace", None, namespace) is None:
            s.kube.create(obj, None)
    except KubeApiError as err:
        if not err.conflict:
            raise CliError(err.message) from None


def _supersede_last(s: Session, release: Release) -> None:
    try:
        last = s.storage.last(release["name"])
    except StorageError:
        return
    release["version"] = int(last["version"]) + 1
    last["info"]["status"] = "superseded"
    s.storage.update(last)


def _print_release(s: Session, release: Release) -> None:
    s.out.write(encode(s.flag("output"), release, status_block(release, debug=s.debug)))


def cmd_install(s: Session) -> None:
    try:
        release = run_install(s, s.parsed.args, replace=bool(s.flag("replace")))
    except (CliError, StorageError) as exc:
        raise CliError(f"INSTALLATION FAILED: {exc}") from None
    _print_release(s, release)


# --- upgrade ------------------------------------------------------------------------------------
def _upgrade_values(
    s: Session, current: Release, vals: dict[str, Any], defaults: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Upgrade.reuseValues: returns (user values to store, chart defaults to render with)."""
    old_config = current.get("config") or {}
    if s.flag("reset-values"):
        return vals, defaults
    if s.flag("reuse-values"):
        old_chart_values = (current.get("chart") or {}).get("values") or {}
        return merge_tables(vals, old_config), coalesce(old_chart_values, old_config)
    if s.flag("reset-then-reuse-values"):
        return merge_tables(vals, old_config), defaults
    if not vals and old_config:
        return old_config, defaults
    return vals, defaults


def _current_release(s: Session, name: str) -> tuple[Release, Release]:
    try:
        last = s.storage.last(name)
    except ReleaseNotFound:
        raise NoDeployedReleases(name) from None
    status = last["info"]["status"]
    if status.startswith("pending-"):
        raise CliError("another operation (install/upgrade/rollback) is in progress")
    if status == "deployed":
        return last, last
    try:
        return last, s.storage.deployed(name)
    except NoDeployedReleases:
        if status in ("failed", "superseded"):
            return last, last
        raise


def _prune_history(s: Session, name: str) -> None:
    """storage.Create with MaxHistory: make room for one more revision (never the deployed one)."""
    limit = int(s.flag("history-max")) - 1
    if limit < 0:
        return
    history = s.storage.history(name)
    try:
        deployed = s.storage.deployed(name)["version"]
    except NoDeployedReleases:
        deployed = None
    removable = [r for r in history if r["version"] != deployed]
    while len(history) > limit and removable:
        victim = removable.pop(0)
        s.storage.delete(victim)
        history.remove(victim)


def run_upgrade(s: Session, name: str, cv: charts.ChartVersion, vals: dict[str, Any]) -> Release:
    s.reachable()
    if not valid_name(name):
        raise CliError(f"release name is invalid: {name}")
    dry_run = _dry_run(s)
    last, current = _current_release(s, name)
    config, defaults = _upgrade_values(s, current, vals, charts.chart_values(cv))
    namespace = s.namespace
    manifest = _render(name, namespace, cv, defaults, config)
    release = new_release(
        name,
        namespace,
        int(last["version"]) + 1,
        chart_record(cv, defaults),
        config,
        manifest,
        "pending-upgrade",
        "Preparing upgrade",
    )
    release["info"]["first_deployed"] = current["info"].get("first_deployed", release["info"]["first_deployed"])
    original = _targets(current)
    targets = _targets(release)
    original_keys = {apply.key(o) for o in original}
    new_objects = [t for t in targets if apply.key(t) not in original_keys]
    try:
        adopted = apply.existing_conflicts(s.kube, new_objects, name, namespace)
    except RuntimeError as exc:
        raise CliError(f"Unable to continue with update: {exc}") from None
    if dry_run:
        release["info"]["description"] = "Dry run complete"
        return release
    _prune_history(s, name)
    s.storage.create(release)
    try:
        apply.update_all(s.kube, original + adopted, targets, namespace)
        _wait_or_fail(s, targets, namespace)
    except (RuntimeError, apply.WaitTimeout) as exc:
        raise _fail(s, release, str(exc), "Upgrade") from None
    set_status(current, "superseded", current["info"].get("description", ""))
    s.storage.update(current)
    set_status(release, "deployed", s.flag("description") or "Upgrade complete")
    s.storage.update(release)
    return release


def cmd_upgrade(s: Session) -> None:
    name, chart_ref = s.parsed.args
    fmt = s.flag("output")
    if s.flag("install"):
        s.reachable()
        try:
            history: list[Release] | None = s.storage.history(name)
        except ReleaseNotFound:
            history = None
        except StorageError as exc:
            raise CliError(str(exc)) from None
        if history is None or history[-1]["info"]["status"] == "uninstalled":
            if fmt == "table":
                s.out.write(f'Release "{name}" does not exist. Installing it now.\n')
            try:
                release = run_install(s, [name, chart_ref], replace=history is not None)
            except StorageError as exc:
                raise CliError(str(exc)) from None
            _print_release(s, release)
            return
    version = s.flag("version") or (">0.0.0-0" if s.flag("devel") else "")
    cv = locate_chart(chart_ref, version, s.flag("repo"), s.paths).version
    vals = user_values(s)
    try:
        release = run_upgrade(s, name, cv, vals)
    except (CliError, StorageError) as exc:
        raise CliError(f"UPGRADE FAILED: {exc}") from None
    if fmt == "table":
        s.out.write(f'Release "{name}" has been upgraded. Happy Helming!\n')
    _print_release(s, release)


# --- uninstall ----------------------------------------------------------------------------------
def _delete_resources(s: Session, release: Release, propagation: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Uninstall.deleteRelease (+ --wait): returns (kept objects, error messages)."""
    objects = parse_manifest(release.get("manifest", ""))
    kept = [o for o in objects if apply.kept(o)]
    doomed = [o for o in objects if not apply.kept(o)]
    deleted, errors = apply.delete_all(s.kube, doomed, s.namespace, propagation)
    if s.flag("wait"):
        problem = apply.wait_deleted(s.kube, deleted, s.namespace, s.flag("timeout"), poll_interval(s))
        if problem:
            errors.append(problem)
    return kept, errors


def _record_uninstalled(s: Session, release: Release, history: list[Release], errors: list[str]) -> None:
    set_status(release, "uninstalled", s.flag("description") or "Uninstallation complete")
    if s.flag("keep-history"):
        try:
            s.storage.update(release)
        except StorageError as exc:
            errors.append(f"uninstall: Failed to update release: {exc}")
        return
    for rel in history:
        try:
            s.storage.delete(rel)
        except StorageError as exc:
            errors.append(f"uninstall: Failed to purge the release: {exc}")


def _uninstall_one(s: Session, name: str, propagation: str) -> str:
    """Uninstall.Run; returns the 'kept resources' note (may be empty)."""
    if s.flag("dry-run"):
        _release_content(s, name, 0)
        return ""
    try:
        history = s.storage.history(name)
    except StorageError as exc:
        if s.flag("ignore-not-found"):
            return ""
        raise CliError(f"uninstall: Release not loaded: {name}: {exc}") from None
    release = history[-1]
    if release["info"]["status"] == "uninstalled":
        if s.flag("keep-history"):
            raise CliError(f'the release named "{name}" is already deleted')
        for rel in history:
            s.storage.delete(rel)
        return ""
    set_status(release, "uninstalling", "Deletion in progress (or silently failed)")
    release["info"]["deleted"] = now_rfc3339()
    with contextlib.suppress(StorageError):
        s.storage.update(release)
    kept, errors = _delete_resources(s, release, propagation)
    _record_uninstalled(s, release, history, errors)
    if errors:
        raise CliError(f"uninstallation completed with {len(errors)} error(s): {'; '.join(errors)}")
    if not kept:
        return ""
    listing = "".join(f"[{o['kind']}] {o['metadata']['name']}\n" for o in kept)
    return "These resources were kept due to the resource policy:\n" + listing


def cmd_uninstall(s: Session) -> None:
    cascade = s.flag("cascade")
    if cascade not in ("background", "foreground", "orphan"):
        raise CliError(f'invalid cascade value ({cascade}). Must be "background", "foreground", or "orphan"')
    s.reachable()
    for name in s.parsed.args:
        note = _uninstall_one(s, name, cascade.capitalize())
        if note:
            s.out.write(note + "\n")
        s.out.write(f'release "{name}" uninstalled\n')


# --- read-only commands -------------------------------------------------------------------------
def _release_content(s: Session, name: str, revision: int) -> Release:
    if not valid_name(name):
        raise CliError(f"releaseContent: Release name is invalid: {name}")
    try:
        return s.storage.get(name, revision) if revision > 0 else s.storage.last(name)
    except StorageError as exc:
        raise CliError(str(exc)) from None


def cmd_get_values(s: Session) -> None:
    release = _release_content(s, s.parsed.args[0], int(s.flag("revision")))
    values: Any = release.get("config") or None
    if s.flag("all"):
        values = sort_maps(coalesce(((release.get("chart") or {}).get("values")) or {}, release.get("config") or {}))
    fmt = s.flag("output")
    if fmt == "json":
        s.out.write(go_json(values))
    elif fmt == "yaml":
        s.out.write(go_yaml(values))
    else:
        title = "COMPUTED VALUES:" if s.flag("all") else "USER-SUPPLIED VALUES:"
        s.out.write(f"{title}\n{go_yaml(values)}")


def cmd_status(s: Session) -> None:
    s.reachable()
    release = _release_content(s, s.parsed.args[0], int(s.flag("revision")))
    text = status_block(release, show_desc=bool(s.flag("show-desc")), debug=s.debug)
    s.out.write(encode(s.flag("output"), release, text))


def _chart_label(release: Release) -> tuple[str, str]:
    meta = (release.get("chart") or {}).get("metadata") or {}
    return f"{meta.get('name', '')}-{meta.get('version', '')}", str(meta.get("appVersion", ""))


def cmd_history(s: Session) -> None:
    name = s.parsed.args[0]
    s.reachable()
    if not valid_name(name):
        raise CliError(f"release name is invalid: {name}")
    try:
        history = s.storage.history(name)
    except StorageError as exc:
        raise CliError(str(exc)) from None
    history = history[-int(s.flag("max")) :] if int(s.flag("max")) > 0 else history
    items = []
    for rel in history:
        chart, app = _chart_label(rel)
        items.append(
            {
                "revision": rel["version"],
                "updated": rel["info"].get("last_deployed", ""),
                "status": rel["info"]["status"],
                "chart": chart,
                "app_version": app,
                "description": rel["info"].get("description", ""),
            }
        )
    rows = [["REVISION", "UPDATED", "STATUS", "CHART", "APP VERSION", "DESCRIPTION"]]
    rows += [
        [str(i["revision"]), ansic(i["updated"]), i["status"], i["chart"], i["app_version"], i["description"]]
        for i in items
    ]
    s.out.write(encode(s.flag("output"), items, table(rows)))


def _state_mask(s: Session) -> set[str] | None:
    if s.flag("all"):
        return None
    states: set[str] = set()
    for flag, names in (
        ("deployed", ["deployed"]),
        ("uninstalled", ["uninstalled"]),
        ("uninstalling", ["uninstalling"]),
        ("pending", ["pending-install", "pending-upgrade", "pending-rollback"]),
        ("failed", ["failed"]),
        ("superseded", ["superseded"]),
    ):
        if s.flag(flag):
            states.update(names)
    return states or {"deployed", "failed"}


def cmd_list(s: Session) -> None:
    s.reachable()
    try:
        releases = s.storage.list_all(bool(s.flag("all-namespaces")))
    except StorageError as exc:
        raise CliError(str(exc)) from None
    if s.flag("filter"):
        pattern = re.compile(s.flag("filter"))
        releases = [r for r in releases if pattern.search(r["name"])]
    mask = _state_mask(s)
    if mask != {"superseded"}:
        latest: dict[tuple[str, str], Release] = {}
        for rel in releases:
            k = (rel["namespace"], rel["name"])
            if k not in latest or rel["version"] > latest[k]["version"]:
                latest[k] = rel
        releases = list(latest.values())
    if mask is not None:
        releases = [r for r in releases if r["info"]["status"] in mask]
    releases.sort(key=lambda r: r["info"].get("last_deployed", "") if s.flag("date") else r["name"])
    if s.flag("reverse"):
        releases.reverse()
    releases = releases[int(s.flag("offset")) :][: int(s.flag("max")) or None]
    _write_list(s, releases)


def _write_list(s: Session, releases: list[Release]) -> None:
    if s.flag("short"):
        names = [r["name"] for r in releases]
        s.out.write(encode(s.flag("output"), names, "".join(f"{n}\n" for n in names)))
        return
    items = []
    for rel in releases:
        chart, app = _chart_label(rel)
        items.append(
            {
                "name": rel["name"],
                "namespace": rel["namespace"],
                "revision": str(rel["version"]),
                "updated": list_time(rel["info"].get("last_deployed", "")),
                "status": rel["info"]["status"],
                "chart": chart,
                "app_version": app,
            }
        )
    rows = (
        [] if s.flag("no-headers") else [["NAME", "NAMESPACE", "REVISION", "UPDATED", "STATUS", "CHART", "APP VERSION"]]
    )
    rows += [
        [i["name"], i["namespace"], i["revision"], i["updated"], i["status"], i["chart"], i["app_version"]]
        for i in items
    ]
    s.out.write(encode(s.flag("output"), items, table(rows)))
