"""The ``streamgate`` command: one entry point for the server and its tools.

    streamgate serve                       one instance on HOST:PORT (python -m app)
    streamgate cluster up|down|status      the local topology (Redis, Sentinel, instances, nginx)
    streamgate drill                       the failover drill against it
    streamgate loadtest                    fan-out load with delivery accounting
    streamgate bench                       the standard benchmark scenario
    streamgate --version | --help

Each tool keeps its own options (``streamgate drill --help``). The tools are
imported only when asked for, so ``--help`` and a refused setting answer at
once and need none of the tools' dependencies.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version

from .config import documented

# command -> (module with main(argv) -> int | None, summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("app.__main__", "run one instance on HOST:PORT, configured by the settings below"),
    "cluster": ("ops.local.cluster", "up|down|status|stop|start: the local topology (Redis, Sentinel, instances, nginx)"),
    "drill": ("ops.drill.drill", "inject failovers and kills under traffic, then account for every message"),
    "loadtest": ("ops.load.loadtest", "fan-out load against running instances, every delivery verified"),
    "bench": ("ops.load.bench", "the standard benchmark scenario (docs/benchmarks.md)"),
}


def package_version() -> str:
    try:
        return version("streamgate")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


def settings_help() -> str:
    """Every setting, its default and what it does: the epilog of ``--help``."""
    rows = list(documented())
    width = max(len(name) for name, _, _ in rows)
    lines = ["settings (environment variables, over ./.env; a bad value is refused at start):"]
    for name, default, doc in rows:
        lines.append(f"  {name:<{width}}  {doc}" + (f" [default: {default}]" if default else " [default: unset]"))
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    commands = "\n".join(f"  {name:<9} {summary}" for name, (_, summary) in COMMANDS.items())
    ap = argparse.ArgumentParser(
        prog="streamgate",
        description="Durable, horizontally scaled WebSocket messaging on Redis Streams.",
        epilog=f"commands:\n{commands}\n\n{settings_help()}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--version", action="version", version=f"streamgate {package_version()}")
    ap.add_argument("command", choices=list(COMMANDS), metavar="command", help="one of: " + ", ".join(COMMANDS))
    return ap


def main(argv: Sequence[str] | None = None) -> None:
    """Dispatch to the command's own ``main``; its return value is the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in COMMANDS:
        parser().parse_args(args)  # --help, --version, or a usage error (exit 2)
        return
    module, _ = COMMANDS[args[0]]
    run: Callable[[list[str]], int | None] = importlib.import_module(module).main
    sys.exit(run(args[1:]) or 0)


if __name__ == "__main__":
    main()
