"""The `llmgw` command: serve, grpc, http, config show, config check, models, keys, teams, audit (in
`admin_cli`) and limits rebuild (in `limits_cli`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, cast

from llmgw import admin_cli, limits_cli
from llmgw.infrastructure.config.loader import ConfigError, effective_settings, load_settings
from llmgw.infrastructure.config.settings import Settings
from llmgw.infrastructure.logs import configure_logging

if TYPE_CHECKING:
    from llmgw.serving import Command

log = logging.getLogger("llmgw.config")

_SERVERS = ("serve", "grpc", "http")
_HELP = {
    "serve": "run gRPC, REST and health on one event loop",
    "grpc": "run gRPC and health",
    "http": "run REST (with /livez and /readyz)",
}


def _common(default: object) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config-path", default=default, help="config directory (default: $CONFIG_PATH or ./configs)"
    )
    common.add_argument("--mode", default=default, help="config mode layer, e.g. prod (default: $MODE)")
    return common


def _parser() -> argparse.ArgumentParser:
    """`--config-path` and `--mode` work before or after the subcommand."""
    parser = argparse.ArgumentParser(
        prog="llmgw", description="OpenAI-compatible LLM gateway", parents=[_common(None)]
    )
    # SUPPRESS: a subcommand not given the option must not reset what the top level parsed.
    common = _common(argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in _SERVERS:
        server = commands.add_parser(name, parents=[common], help=_HELP[name], description=_HELP[name])
        server.add_argument(
            "--workers", type=_positive, help="processes sharing the ports (default: server.workers)"
        )
    config = commands.add_parser("config", parents=[common], help="inspect the effective configuration")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    for name, help_text in [
        ("show", "print merged settings, secrets masked"),
        ("check", "report every problem and unknown key; exit 1 if there is any (for CI)"),
    ]:
        sub = config_commands.add_parser(name, parents=[common], help=help_text, description=help_text)
        sub.add_argument(
            "--for", dest="for_command", choices=_SERVERS, default="serve", help="command layer to apply"
        )
    commands.add_parser("models", parents=[common], help="print the model catalog")
    admin_cli.add_commands(commands, common)
    limits_cli.add_commands(commands, common)
    return parser


def _load(command: str, args: argparse.Namespace) -> Settings:
    return load_settings(command, config_path=args.config_path, mode=args.mode)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _main(args)
    except BrokenPipeError:  # `llmgw models | head`: the reader left, which is not an error
        sys.stderr.close()
        return 0


def _main(args: argparse.Namespace) -> int:
    if args.command == "config" and args.config_command == "check":
        return _check(args.for_command, args)
    try:
        settings = _load(_layer_command(args), args)
    except ConfigError as exc:
        print(f"llmgw: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    if args.command not in _SERVERS:
        for warning in settings.warnings:
            print(f"llmgw: warning: {warning}", file=sys.stderr)
        return _inspect(settings, args)
    if args.workers is not None:
        settings = replace(settings, server=replace(settings.server, workers=args.workers))
    configure_logging(settings.log)
    for warning in settings.warnings:
        log.warning("%s", warning)
    if settings.server.workers > 1:
        from llmgw.workers import Supervisor

        return Supervisor(settings, args.command).run()
    run_loop(settings, args.command)
    return 0


def _inspect(settings: Settings, args: argparse.Namespace) -> int:
    """The commands that serve nothing: config show, models, keys, teams, audit, limits."""
    if args.command == "config":
        print(json.dumps(effective_settings(settings), indent=2))
        return 0
    if args.command == "models":
        _print_models(settings)
        return 0
    if args.command in limits_cli.COMMANDS:
        return limits_cli.run(settings, args)
    return admin_cli.run(settings, args)


def _layer_command(args: argparse.Namespace) -> str:
    """The command whose config layers apply: `config` takes `--for`; `models`, `keys`, `teams`, `audit`
    and `limits` read `serve`'s."""
    if args.command == "config":
        return str(args.for_command)
    inspecting = ("models", *admin_cli.COMMANDS, *limits_cli.COMMANDS)
    return "serve" if args.command in inspecting else str(args.command)


def _check(command: str, args: argparse.Namespace) -> int:
    """`llmgw config check`: print every problem and every unknown key with its source; 1 if there is any."""
    try:
        settings = _load(command, args)
    except ConfigError as exc:
        problems, warnings, files = exc.problems, exc.warnings, 0
    else:
        problems, warnings, files = (), settings.warnings, len(settings.sources)
    for problem in problems:
        print(f"error: {problem}")
    for warning in warnings:
        print(f"warning: {warning}")
    if problems or warnings:
        print(f"llmgw config check: {len(problems)} problem(s), {len(warnings)} unknown key(s)")
        return 1
    print(f"ok: the {command} configuration is valid ({files} file(s) read)")
    return 0


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def _print_models(settings: Settings) -> None:
    """One row per deployment: an alias's first row names it, its other deployments follow."""
    rows: list[tuple[str, ...]] = []
    for model in settings.models:
        several = len(model.deployments) > 1
        for index, deployment in enumerate(model.deployments):
            upstream = deployment.upstream_model
            if several:
                upstream += f" (weight {deployment.weight}, priority {deployment.priority})"
            first = index == 0
            rows.append(
                (
                    model.id if first else "",
                    deployment.provider,
                    upstream,
                    ",".join(sorted(c.value for c in model.capabilities)) if first else "",
                    ",".join(model.fallbacks) if first else "",
                )
            )
    header = ("ID", "PROVIDER", "UPSTREAM MODEL", "CAPABILITIES", "FALLBACKS")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def run_loop(settings: Settings, command: str) -> None:
    """Serve `command` in this process on one event loop (uvloop where installed). A start-up failure
    (the store cannot be opened) is one line on stderr and exit status 1, in a worker as in `main`."""
    from llmgw.bootstrap import StartupError
    from llmgw.serving import run

    try:
        try:
            import uvloop
        except ImportError:  # uvloop is optional (not on Windows)
            asyncio.run(run(settings, cast("Command", command)))
        else:
            uvloop.run(run(settings, cast("Command", command)))
    except StartupError as exc:
        print(f"llmgw: cannot start: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
