"""``sandbox-helm``: a helm v3.16 CLI simulator, usable wherever the bot expects ``HELM_BIN``.

It talks to the Kubernetes API only over HTTP with the kubeconfig's server and bearer token,
stores releases exactly as Helm 3 does (Secrets ``sh.helm.release.v1.*``), renders the milvus
chart of the one repository it knows (zilliztech/milvus-helm, see ``charts.py``) and is as strict
as real helm about the command line: unknown commands and flags, flags of the wrong command
(``helm install --reset-values``), missing arguments, invalid values: all fail with helm's
message on stderr, prefixed ``Error: ``, exit code 1.

``run(argv, env)`` runs one command in-process and returns ``(exit code, stdout, stderr)``;
``main()`` is the console script. Knob for tests: ``SANDBOX_HELM_POLL_INTERVAL`` (seconds
between ``--wait`` polls, default 0.25; real helm polls every 2 s).
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable, Mapping

from sandbox.helm import release_cmds as rel
from sandbox.helm import repo_cmds as repo
from sandbox.helm.flags import (
    CliError,
    Command,
    Flag,
    HelpRequested,
    find_command,
    help_text,
    parse_flags,
    require_exact,
    require_min,
    require_none,
)
from sandbox.helm.kubeclient import permission_warnings
from sandbox.helm.session import Session

FIVE_MINUTES = 300.0


def _global_flags() -> list[Flag]:
    return [
        Flag("namespace", shorthand="n"),
        Flag("kube-context"),
        Flag("kubeconfig"),
        Flag("kube-token"),
        Flag("kube-as-user"),
        Flag("kube-as-group", "string_array"),
        Flag("kube-apiserver"),
        Flag("kube-ca-file"),
        Flag("kube-tls-server-name"),
        Flag("kube-insecure-skip-tls-verify", "bool"),
        Flag("debug", "bool"),
        Flag("registry-config"),
        Flag("repository-config"),
        Flag("repository-cache"),
        Flag("burst-limit", "int", default=100),
        Flag("qps"),
    ]


def _output_flag() -> Flag:
    return Flag("output", "output", "o", default="table")


def _chart_path_flags() -> list[Flag]:
    return [
        Flag("version"),
        Flag("verify", "bool"),
        Flag("keyring"),
        Flag("repo"),
        Flag("username"),
        Flag("password"),
        Flag("cert-file"),
        Flag("key-file"),
        Flag("ca-file"),
        Flag("insecure-skip-tls-verify", "bool"),
        Flag("plain-http", "bool"),
        Flag("pass-credentials", "bool"),
        Flag("devel", "bool"),
    ]


def _values_flags() -> list[Flag]:
    return [
        Flag("values", "string_slice", "f"),
        Flag("set", "string_array"),
        Flag("set-string", "string_array"),
        Flag("set-file", "string_array"),
        Flag("set-json", "string_array"),
        Flag("set-literal", "string_array"),
    ]


def _deploy_flags() -> list[Flag]:
    """Flags install and upgrade share."""
    names_bool = [
        "create-namespace",
        "force",
        "no-hooks",
        "wait",
        "wait-for-jobs",
        "atomic",
        "skip-crds",
        "render-subchart-notes",
        "dependency-update",
        "disable-openapi-validation",
        "enable-dns",
        "hide-notes",
        "skip-schema-validation",
    ]
    return [
        *[Flag(n, "bool") for n in names_bool],
        Flag("dry-run", default="none", no_opt_default="client"),
        Flag("timeout", "duration", default=FIVE_MINUTES),
        Flag("description"),
        Flag("labels"),
        Flag("post-renderer"),
        Flag("post-renderer-args", "string_array"),
        _output_flag(),
        *_chart_path_flags(),
        *_values_flags(),
    ]


def _release_commands() -> list[Command]:
    install = Command(
        "install [NAME] [CHART]",
        [
            *_deploy_flags(),
            Flag("replace", "bool"),
            Flag("generate-name", "bool", "g"),
            Flag("name-template"),
            Flag("hide-secret", "bool"),
        ],
        require_min(1),
        rel.cmd_install,
        short="install a chart",
    )
    upgrade = Command(
        "upgrade [RELEASE] [CHART]",
        [
            *_deploy_flags(),
            Flag("install", "bool", "i"),
            Flag("reuse-values", "bool"),
            Flag("reset-values", "bool"),
            Flag("reset-then-reuse-values", "bool"),
            Flag("history-max", "int", default=10),
            Flag("cleanup-on-fail", "bool"),
        ],
        require_exact(2),
        rel.cmd_upgrade,
        short="upgrade a release",
    )
    uninstall = Command(
        "uninstall RELEASE_NAME [...]",
        [
            Flag("dry-run", "bool"),
            Flag("no-hooks", "bool"),
            Flag("ignore-not-found", "bool"),
            Flag("keep-history", "bool"),
            Flag("wait", "bool"),
            Flag("cascade", default="background"),
            Flag("timeout", "duration", default=FIVE_MINUTES),
            Flag("description"),
        ],
        require_min(1),
        rel.cmd_uninstall,
        aliases=("un", "delete", "del"),
        short="uninstall a release",
    )
    status = Command(
        "status RELEASE_NAME",
        [Flag("revision", "int"), Flag("show-desc", "bool"), Flag("show-resources", "bool"), _output_flag()],
        require_exact(1),
        rel.cmd_status,
        short="display the status of the named release",
    )
    history = Command(
        "history RELEASE_NAME",
        [Flag("max", "int", default=256), _output_flag()],
        require_exact(1),
        rel.cmd_history,
        aliases=("hist",),
        short="fetch release history",
    )
    list_flags = [
        Flag("all", "bool", "a"),
        Flag("all-namespaces", "bool", "A"),
        Flag("date", "bool", "d"),
        Flag("reverse", "bool", "r"),
        Flag("max", "int", "m", default=256),
        Flag("offset", "int"),
        Flag("filter", shorthand="f"),
        Flag("short", "bool", "q"),
        Flag("no-headers", "bool"),
        Flag("time-format"),
        Flag("selector", shorthand="l"),
        _output_flag(),
        *[Flag(n, "bool") for n in ("uninstalled", "superseded", "deployed", "failed", "pending", "uninstalling")],
    ]
    listing = Command("list", list_flags, require_none, rel.cmd_list, aliases=("ls",), short="list releases")
    get_values = Command(
        "values RELEASE_NAME",
        [Flag("revision", "int"), Flag("all", "bool", "a"), _output_flag()],
        require_exact(1),
        rel.cmd_get_values,
        short="download the values file for a named release",
    )
    get = Command("get", [], require_none, None, subcommands=[get_values], short="download extended information")
    return [install, upgrade, uninstall, status, history, listing, get]


def _other_commands() -> list[Command]:
    repo_cmds = [
        Command(
            "add [NAME] [URL]",
            [
                Flag("force-update", "bool"),
                Flag("no-update", "bool"),
                Flag("username"),
                Flag("password"),
                Flag("password-stdin", "bool"),
                Flag("pass-credentials", "bool"),
                Flag("cert-file"),
                Flag("key-file"),
                Flag("ca-file"),
                Flag("insecure-skip-tls-verify", "bool"),
                Flag("allow-deprecated-repos", "bool"),
                Flag("timeout", "duration", default=120.0),
            ],
            require_exact(2),
            repo.cmd_repo_add,
            short="add a chart repository",
        ),
        Command(
            "update [REPO1 [REPO2 ...]]",
            [Flag("fail-on-repo-update-fail", "bool")],
            None,
            repo.cmd_repo_update,
            aliases=("up",),
            short="update information of available charts",
        ),
        Command(
            "list",
            [_output_flag()],
            require_none,
            repo.cmd_repo_list,
            aliases=("ls",),
            short="list chart repositories",
        ),
        Command(
            "remove [REPO1 [REPO2 ...]]",
            [],
            require_min(1),
            repo.cmd_repo_remove,
            aliases=("rm",),
            short="remove one or more chart repositories",
        ),
    ]
    show_cmds = [
        Command(
            "chart [CHART]",
            _chart_path_flags(),
            require_exact(1),
            repo.cmd_show_chart,
            short="show the chart's definition",
        ),
        Command(
            "values [CHART]",
            [*_chart_path_flags(), Flag("jsonpath")],
            require_exact(1),
            repo.cmd_show_values,
            short="show the chart's values",
        ),
    ]
    return [
        Command(
            "repo add|remove|list|index|update [ARGS]",
            [],
            require_none,
            None,
            subcommands=repo_cmds,
            short="add, list, remove, update, and index chart repositories",
        ),
        Command(
            "show",
            [],
            require_none,
            None,
            subcommands=show_cmds,
            aliases=("inspect",),
            short="show information of a chart",
        ),
        Command(
            "version",
            [Flag("short", "bool"), Flag("template"), Flag("client", "bool", "c")],
            require_none,
            repo.cmd_version,
            short="print the client version information",
        ),
    ]


def build_root() -> Command:
    return Command(
        "helm",
        _global_flags(),
        None,
        None,
        subcommands=[*_release_commands(), *_other_commands()],
        short="The Kubernetes package manager",
    )


def _prescan_kubeconfig(argv: list[str]) -> str | None:
    """The --kubeconfig value, read before parsing (helm parses root flags leniently first)."""
    for i, word in enumerate(argv):
        if word == "--":
            break
        if word.startswith("--kubeconfig="):
            return word.split("=", 1)[1]
        if word == "--kubeconfig" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _execute(argv: list[str], env: Mapping[str, str], out: io.StringIO, err: io.StringIO, stdin: str) -> int:
    root = build_root()
    for line in permission_warnings(_prescan_kubeconfig(argv), env):
        err.write(line + "\n")
    try:
        cmd, rest = find_command(root, argv)
    except CliError as exc:
        err.write(f"Error: {exc}\nRun 'helm --help' for usage.\n")
        return 1
    try:
        parsed = parse_flags(cmd, rest)
        if cmd.run is None:
            if parsed.args and cmd.args is not None:
                cmd.args(cmd, parsed.args)
            out.write(help_text(cmd))
            return 0
        if cmd.args is not None:
            cmd.args(cmd, parsed.args)
        session = Session(parsed, env, out, err, stdin)
        runner: Callable[[Session], None] = cmd.run
        try:
            runner(session)
        finally:
            session.close()
    except HelpRequested:
        out.write(help_text(cmd))
        return 0
    except CliError as exc:
        err.write(f"Error: {exc}\n")
        return 1
    return 0


def run(argv: list[str], env: Mapping[str, str], stdin: str = "") -> tuple[int, str, str]:
    """Run one helm command in-process: ``(exit code, stdout, stderr)``."""
    out, err = io.StringIO(), io.StringIO()
    try:
        code = _execute(list(argv), env, out, err, stdin)
    except Exception as exc:  # helm never shows a stack trace; neither do we
        err.write(f"Error: {exc}\n")
        code = 1
    return code, out.getvalue(), err.getvalue()


def main() -> None:
    argv = sys.argv[1:]
    stdin = sys.stdin.read() if ("-" in argv and not sys.stdin.isatty()) else ""
    code, stdout, stderr = run(argv, os.environ, stdin)
    sys.stdout.write(stdout)
    sys.stdout.flush()
    sys.stderr.write(stderr)
    sys.stderr.flush()
    sys.exit(code)


if __name__ == "__main__":
    main()
