"""``helm version``, ``helm repo add|update|list|remove`` and ``helm show chart|values``.

Messages and files as helm v3.16 writes them (cmd/helm/repo_*.go, show.go): the
repositories file is rewritten with mode 0600, ``repo add`` is idempotent for an identical
entry and refuses a different one without ``--force-update``, and ``show`` resolves charts the
same way install does (so ``zilliztech/milvus`` needs ``repo add`` + a cached index).
"""

from __future__ import annotations

import os

import yaml

from sandbox.helm import charts
from sandbox.helm.flags import CliError
from sandbox.helm.output import encode, go_yaml, table
from sandbox.helm.repos import (
    fetch_index,
    find_entry,
    index_paths,
    load_repo_file,
    locate_chart,
    new_entry,
    write_index,
    write_repo_file,
)
from sandbox.helm.session import Session

VERSION = "v3.16.2"
GIT_COMMIT = "13654a52f7c70a143b1dd51416d633e1071faffb"
GO_VERSION = "go1.22.7"


def cmd_version(s: Session) -> None:
    fields = {"Version": VERSION, "GitCommit": GIT_COMMIT, "GitTreeState": "clean", "GoVersion": GO_VERSION}
    template = s.flag("template")
    if template:
        text = template
        for name, value in fields.items():
            text = text.replace("{{.%s}}" % name, value).replace("{{ .%s }}" % name, value)  # noqa: UP031
        s.out.write(text + "\n")
        return
    if s.flag("short"):
        s.out.write(f"{VERSION}+g{GIT_COMMIT[:7]}\n")
        return
    inner = ", ".join(f'{k}:"{v}"' for k, v in fields.items())
    s.out.write(f"version.BuildInfo{{{inner}}}\n")


def cmd_repo_add(s: Session) -> None:
    name, url = s.parsed.args
    paths = s.paths
    if "/" in name:
        raise CliError(f"repository name ({name}) contains '/', please specify a different name without '/'")
    doc = load_repo_file(paths.repository_config)
    entry = new_entry(name, url)
    existing = find_entry(doc, name)
    if not s.flag("force-update") and existing is not None:
        if existing != entry:
            raise CliError(f"repository name ({name}) already exists, please specify a different name")
        s.out.write(f'"{name}" already exists with the same configuration, skipping\n')
        return
    index = fetch_index(url)
    write_index(paths.repository_cache, name, index)
    doc["repositories"] = [e for e in doc["repositories"] if e.get("name") != name] + [entry]
    write_repo_file(paths.repository_config, doc)
    s.out.write(f'"{name}" has been added to your repositories\n')


def cmd_repo_update(s: Session) -> None:
    paths = s.paths
    doc = load_repo_file(paths.repository_config)
    repos = doc["repositories"]
    if not repos:
        raise CliError("no repositories found. You must add one before updating")
    wanted = s.parsed.args
    for name in wanted:
        if find_entry(doc, name) is None:
            raise CliError(f"no repositories found matching '{name}'.  Nothing will be updated")
    selected = [r for r in repos if not wanted or r.get("name") in wanted]
    s.out.write("Hang tight while we grab the latest from your chart repositories...\n")
    failed = []
    for repo in selected:
        try:
            index = fetch_index(str(repo.get("url", "")))
        except CliError as exc:
            s.out.write(
                f'...Unable to get an update from the "{repo["name"]}" chart repository ({repo["url"]}):\n\t{exc}\n'
            )
            failed.append(str(repo.get("url", "")))
            continue
        write_index(paths.repository_cache, str(repo["name"]), index)
        s.out.write(f'...Successfully got an update from the "{repo["name"]}" chart repository\n')
    if failed and s.flag("fail-on-repo-update-fail"):
        raise CliError(f"Failed to update the following repositories: [{' '.join(failed)}]")
    s.out.write("Update Complete. ⎈Happy Helming!⎈\n")


def cmd_repo_list(s: Session) -> None:
    doc = load_repo_file(s.paths.repository_config)
    if not doc["repositories"]:
        raise CliError("no repositories to show")
    items = [{"name": r.get("name", ""), "url": r.get("url", "")} for r in doc["repositories"]]
    rows = [["NAME", "URL"]] + [[i["name"], i["url"]] for i in items]
    s.out.write(encode(s.flag("output"), items, table(rows)))


def cmd_repo_remove(s: Session) -> None:
    paths = s.paths
    doc = load_repo_file(paths.repository_config)
    if not doc["repositories"]:
        raise CliError("no repositories configured")
    for name in s.parsed.args:
        if find_entry(doc, name) is None:
            raise CliError(f'no repo named "{name}" found')
        doc["repositories"] = [e for e in doc["repositories"] if e.get("name") != name]
        write_repo_file(paths.repository_config, doc)
        for path in index_paths(paths.repository_cache, name):
            if os.path.exists(path):
                os.remove(path)
        s.out.write(f'"{name}" has been removed from your repositories\n')


def _locate(s: Session) -> charts.ChartVersion:
    version = s.flag("version")
    if not version and s.flag("devel"):
        version = ">0.0.0-0"
    return locate_chart(s.parsed.args[0], version, s.flag("repo"), s.paths).version


def cmd_show_chart(s: Session) -> None:
    cv = _locate(s)
    s.out.write(go_yaml(charts.chart_metadata(cv)) + "\n")


def cmd_show_values(s: Session) -> None:
    cv = _locate(s)
    text = yaml.safe_dump(charts.chart_values(cv), sort_keys=False, default_flow_style=False)
    s.out.write(text + "\n")
