"""Command line: ``milvus-pulsar-upgrade-bot serve|demo`` (also ``python -m bot``).

``runner`` (not listed) is the child process ``serve`` starts: the engine and the runner.

A configuration error prints one line naming the variable and exits with status 2; no
traceback ever reaches the terminal for a mistake the user can fix.
"""

from __future__ import annotations

import argparse
import os
import sys

from bot import settings as settings_mod


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="milvus-pulsar-upgrade-bot",
        description="Slack ChatOps bot for the Milvus 2.5 Pulsar V2 -> V3 upgrade.",
    )
    sub = parser.add_subparsers(dest="command", metavar="{serve,demo,bench}")
    sub.required = True
    serve = sub.add_parser(
        "serve",
        help="run the bot (configuration from the environment; see the README's table)",
        description="Run the bot: Slack over HTTP on $PORT (or Socket Mode with SLACK_APP_TOKEN), "
        "the Redis-backed runner, and the health endpoints.",
    )
    runner = sub.add_parser("runner", help=argparse.SUPPRESS)  # serve's child process, not for people
    runner.add_argument("--control", required=True, help=argparse.SUPPRESS)
    runner.add_argument("--parent", type=int, required=True, help=argparse.SUPPRESS)
    for cmd in (serve, runner):
        cmd.add_argument("--log-format", choices=["json", "text"], default=None, help="log line format (LOG_FORMAT)")
        cmd.add_argument("--log-level", default=None, help="logging level (LOG_LEVEL, default INFO)")
    demo = sub.add_parser(
        "demo",
        help="offline rehearsal: the real bot against the sandbox cluster, Slack and a private Redis",
        description="Start the sandbox (Kubernetes API and controllers, Milvus and Slack simulators, the "
        "real helm and Milvus charts), a private redis-server and the real bot, then play a person in "
        "Slack and print the thread.",
    )
    demo.add_argument("--interactive", action="store_true", help="ask on the terminal before each click")
    demo.add_argument(
        "--mode",
        choices=["helm", "operator"],
        default="helm",
        help="rehearse a Helm-installed Milvus (default) or one managed by milvus-operator",
    )
    demo.add_argument(
        "--helm",
        type=int,
        choices=[3, 4],
        default=4,
        help="rehearse with the pinned real Helm 4 (default, v4.1.4) or Helm 3 (v3.17.3)",
    )
    demo.add_argument("--verbose", action="store_true", help="also print the bot's own log")
    sub.add_parser(
        "bench",
        help="benchmark against the sandbox (from a source checkout; writes BENCHMARKS.md)",
        add_help=False,
    )
    return parser


_M_ARENA_MAX = -8  # glibc's mallopt() parameter number (malloc.h)
MALLOC_ARENAS = 2


def _few_malloc_arenas() -> None:
    """glibc gives each thread that allocates at once its own malloc arena, up to 8 per core, and
    an arena keeps what was freed in it. The runner's worker threads each build and drop an
    upgrade's large objects (helm output, manifests, Kubernetes responses) at the same moments,
    so its memory grew by arenas holding freed space. Two arenas, as MALLOC_ARENA_MAX=2 would
    set (an explicit MALLOC_ARENA_MAX wins). Must run before the process starts any thread."""
    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        return
    import ctypes

    try:
        ctypes.CDLL(None).mallopt(_M_ARENA_MAX, MALLOC_ARENAS)
    except (OSError, AttributeError):  # not glibc (musl has no arenas to limit)
        return


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["serve"], ["runner"]):
        _few_malloc_arenas()
    if argv[:1] == ["bench"]:
        if os.path.exists(os.path.join("tests", "bench.py")) and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())  # the benchmark lives beside the tests of a source checkout
        try:
            from tests import bench
        except ImportError:
            print("bench: run it in the root of a source checkout (or ./dev bench)", file=sys.stderr)
            return 2
        return int(bench.main(argv[1:]))
    args = _parser().parse_args(argv)
    if args.command in ("serve", "runner"):
        try:
            settings = settings_mod.load()
        except settings_mod.SettingsError as err:
            print(str(err), file=sys.stderr)
            return 2
        from bot import logs

        level = (args.log_level or os.environ.get("LOG_LEVEL") or "INFO").upper()
        fmt = (args.log_format or os.environ.get("LOG_FORMAT") or "json").lower()
        if level not in logs.LEVELS:
            print(f"LOG_LEVEL: must be one of {', '.join(logs.LEVELS)}, got {level!r}", file=sys.stderr)
            return 2
        if fmt not in logs.FORMATS:
            print(f"LOG_FORMAT: must be json or text, got {fmt!r}", file=sys.stderr)
            return 2
        logs.setup(level=level, fmt=fmt, secrets=settings.secrets())
        try:
            if args.command == "runner":
                from bot import runner_main

                return runner_main.run_runner(settings, args.control, args.parent)
            from bot.runner_process import RunnerProcess

            # The runner's interpreter starts now, beside the edge's imports below, not after them;
            # it gets the same log settings, so that both write the same log lines.
            log_args = ["--log-format", fmt, "--log-level", level]
            child = RunnerProcess(log_args, settings.shutdown_grace_seconds).spawn()
            from bot import app

            return app.serve(settings, child)
        except settings_mod.SettingsError as err:
            print(str(err), file=sys.stderr)
            return 2
    from bot import demo

    return demo.run(interactive=args.interactive, verbose=args.verbose, mode=args.mode, helm_major=args.helm)


if __name__ == "__main__":
    sys.exit(main())
