"""`llmgw keys|teams|audit`: the admin use cases run straight on the configured store, each call audited
as `cli`, for bootstrapping and for operators without an admin key at hand. `keys|teams usage` reads the
limit counters the gateways share in Redis (`cache.redis_url`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from typing import Any, cast

from llmgw.application.admin import CLI_ACTOR, MAX_PAGE, Admin, IssuedKey
from llmgw.application.auth import Authenticator
from llmgw.application.limit_fields import LIMIT_FIELDS
from llmgw.application.limits import Limiter, LimitUsage
from llmgw.application.ports import KeyStore
from llmgw.domain.errors import GatewayError, InvalidRequest, ServiceUnavailable
from llmgw.domain.keys import ApiKey, AuditEntry, Team
from llmgw.infrastructure.admin_json import audit_json, key_json, team_json, usage_json
from llmgw.infrastructure.config.settings import Settings
from llmgw.infrastructure.config.validation import parse_duration
from llmgw.infrastructure.storage.factory import create_store

COMMANDS = ("keys", "teams", "audit")
Action = Callable[[Admin, argparse.Namespace], Awaitable[None]]
#: `keys|teams usage`: an action that also reads the limit counters.
UsageAction = Callable[[Admin, Limiter, argparse.Namespace], Awaitable[LimitUsage]]


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Register `keys`, `teams` and `audit` on the `llmgw` subparsers; each action is `args.admin_action`
    (`usage`: `args.usage_action`)."""
    _add_keys(
        commands.add_parser("keys", parents=[common], help="create, list, rotate, disable API keys"), common
    )
    _add_teams(
        commands.add_parser("teams", parents=[common], help="create, list, rename, delete teams"), common
    )
    audit = commands.add_parser("audit", parents=[common], help="print the admin audit trail, newest first")
    audit.add_argument("--limit", type=_positive, default=50, help="rows to print (default: 50)")
    audit.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    audit.set_defaults(admin_action=_audit)


def _add_keys(keys: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    sub = _Actions(keys.add_subparsers(dest="keys_command", required=True), common)
    create = sub.add("create", _keys_create, "mint a key; prints it alone on the first line, once")
    create.add_argument("--name", required=True)
    create.add_argument("--admin", action="store_true", help="scopes [admin] (same as --scope admin)")
    _key_fields(create)
    listing = sub.add("list", _keys_list, "print every key (no secret)")
    listing.add_argument("--team", help="only the keys of this team id")
    listing.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    sub.add("show", _keys_show, "print one key as JSON").add_argument("id")
    sub.add_usage(_keys_usage, "print what the key used of its limits now, as JSON (needs cache.redis_url)")
    rotate = sub.add("rotate", _keys_rotate, "new secret, same id; prints the new key once", changes_key=True)
    rotate.add_argument("id")
    rotate.add_argument(
        "--grace",
        type=_duration,
        help='how long the old secret still works: "24h", "90s", "0" (default: auth.rotation_grace)',
    )
    sub.add("disable", _keys_disable, "refuse the key from now on", changes_key=True).add_argument("id")
    sub.add("enable", _keys_enable, "accept a disabled key again", changes_key=True).add_argument("id")
    update = sub.add("update", _keys_update, "change the fields given, keep the others", changes_key=True)
    update.add_argument("id")
    update.add_argument("--name")
    _key_fields(update)
    update.add_argument("--all-models", action="store_true", help="allow every model again")
    update.add_argument("--no-expiry", action="store_true", help="never expire")
    sub.add("delete", _keys_delete, "delete the key for good", changes_key=True).add_argument("id")


def _key_fields(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scope",
        action="append",
        dest="scopes",
        metavar="SCOPE",
        help="inference, usage:read or admin; repeatable (create default: inference)",
    )
    parser.add_argument(
        "--model",
        action="append",
        dest="models",
        metavar="GLOB",
        help="model id or glob (gpt-4o*); repeatable (none: every model)",
    )
    parser.add_argument("--team", dest="team_id", metavar="TEAM_ID", help='team id ("" for none)')
    parser.add_argument(
        "--expires-at", type=_expiry, metavar="TIME", help="ISO 8601 with offset, or Unix seconds"
    )
    parser.add_argument(
        "--metadata", action="append", type=_pair, metavar="K=V", help="repeatable; replaces all metadata"
    )
    _limit_options(parser)


def _limit_options(parser: argparse.ArgumentParser) -> None:
    """The limits of a key or team; given alone, each changes that limit only, and `none` clears it."""
    limits = parser.add_argument_group("limits (none: no such limit)")
    # SUPPRESS: an option not given leaves no attribute, so `none` (None) can mean "clear it".
    for option, kind, metavar, text in (
        ("--rpm", _count, "N", "requests per minute"),
        ("--tpm", _count, "N", "tokens (prompt + completion) per minute"),
        ("--max-parallel", _count, "N", "requests in flight at once"),
        ("--budget-usd", _usd, "USD", "US dollars per budget period"),
        ("--budget-period", _period, "PERIOD", "day, week or month; none: the key's or team's lifetime"),
        ("--soft-budget-usd", _usd, "USD", "US dollars per budget period past which requests only warn"),
    ):
        limits.add_argument(option, type=kind, metavar=metavar, default=argparse.SUPPRESS, help=text)


def _limits(args: argparse.Namespace) -> dict[str, Any]:
    """The limit options given, as the admin use cases take them (None: clear the limit)."""
    return {name: getattr(args, name) for name in LIMIT_FIELDS if hasattr(args, name)}


def _add_teams(teams: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    sub = _Actions(teams.add_subparsers(dest="teams_command", required=True), common)
    create = sub.add("create", _teams_create, "create a team; prints it as JSON")
    create.add_argument("--name", required=True)
    create.add_argument("--metadata", action="append", type=_pair, metavar="K=V", help="repeatable")
    _limit_options(create)
    listing = sub.add("list", _teams_list, "print every team")
    listing.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    sub.add("show", _teams_show, "print one team as JSON").add_argument("id")
    sub.add_usage(
        _teams_usage, "print what the team's keys used of its limits now, as JSON (needs cache.redis_url)"
    )
    update = sub.add("update", _teams_update, "rename a team or change its limits, keep the rest")
    update.add_argument("id")
    update.add_argument("--name")
    _limit_options(update)
    sub.add("delete", _teams_delete, "delete a team without keys").add_argument("id")


class _Actions:
    """Subcommands of `keys` or `teams`, each taking the common options and naming its action."""

    def __init__(self, sub: Any, common: argparse.ArgumentParser) -> None:
        self._sub = sub
        self._common = common

    def add(
        self, name: str, action: Action, help_text: str, *, changes_key: bool = False
    ) -> argparse.ArgumentParser:
        """`changes_key`: running replicas are told of the change (`cache.redis_url`)."""
        parser = cast(
            argparse.ArgumentParser,
            self._sub.add_parser(name, parents=[self._common], help=help_text, description=help_text),
        )
        parser.set_defaults(admin_action=action, changes_key=changes_key)
        return parser

    def add_usage(self, action: UsageAction, help_text: str) -> None:
        """`usage ID`: its action gets a limiter too, and its answer is printed as JSON."""
        parser = self._sub.add_parser("usage", parents=[self._common], help=help_text, description=help_text)
        parser.set_defaults(admin_action=None, usage_action=action, changes_key=False)
        parser.add_argument("id")


def run(settings: Settings, args: argparse.Namespace) -> int:
    """0 done; 1 refused (unknown id, bad field) or the store unavailable; 2 no pepper."""
    from llmgw.bootstrap import StartupError, check_auth

    try:
        check_auth(settings.auth)
    except StartupError as exc:
        _err(f"llmgw: {exc}")
        return 2
    if not settings.auth.pepper:
        _err("llmgw: auth.pepper is required to make or check keys, even with auth off")
        return 2
    try:
        asyncio.run(_run(settings, args))
    except GatewayError as exc:
        _err(f"llmgw: {exc.message}")
        return 1
    except StartupError as exc:  # the store cannot be opened
        _err(f"llmgw: {exc}")
        return 1
    return 0


async def _run(settings: Settings, args: argparse.Namespace) -> None:
    async with _admin(settings, publish=getattr(args, "changes_key", False)) as admin:
        usage_action: UsageAction | None = getattr(args, "usage_action", None)
        if usage_action is None:
            await cast(Action, args.admin_action)(admin, args)
            return
        async with _limiter(settings) as limiter:
            usage = await usage_action(admin, limiter, args)
        _print_json(usage_json(usage))


@asynccontextmanager
async def _limiter(settings: Settings) -> AsyncIterator[Limiter]:
    """The counters every gateway shares in Redis. Without Redis each gateway process counts alone, in its
    own memory, where no command can read: the admin API of the gateway itself can."""
    if not settings.cache.redis_url:
        raise ServiceUnavailable(
            "Without cache.redis_url each gateway process counts its limits in its own memory, which this "
            "command cannot read: ask a running gateway (GET /admin/v1/keys/ID/usage or /teams/ID/usage).",
            code="limits_unavailable",
        )
    from llmgw.infrastructure.limits.redis import RedisLimitStore

    store = RedisLimitStore(settings.cache.redis_url)
    try:
        yield Limiter(store)
    finally:
        await store.close()


@asynccontextmanager
async def _admin(settings: Settings, *, publish: bool) -> AsyncIterator[Admin]:
    from llmgw.bootstrap import close_store, open_store

    storage = settings.storage
    store = create_store(storage.url, timeout=storage.timeout)
    async with AsyncExitStack() as stack:
        await open_store(store, storage)
        stack.push_async_callback(close_store, store, storage.timeout)
        keys = cast(KeyStore, store)
        auth = Authenticator(keys, pepper=settings.auth.pepper.encode(), store_timeout=storage.timeout)
        if publish and settings.cache.redis_url:
            await _publish_changes(stack, auth, settings.cache.redis_url)
        yield Admin(keys, auth, rotation_grace=settings.auth.rotation_grace)


async def _publish_changes(stack: AsyncExitStack, auth: Authenticator, url: str) -> None:
    """Tell running replicas of every key changed here; without Redis they notice within auth.cache_ttl."""
    from redis.exceptions import RedisError

    from llmgw.infrastructure.revocations import RedisRevocations

    revocations = RedisRevocations(url, on_revoked=auth.forget)
    try:
        await revocations.start()
    except (RedisError, OSError, TimeoutError) as exc:
        await revocations.stop()
        _err(
            f"llmgw: warning: cannot reach cache.redis_url ({type(exc).__name__}: {exc}); running "
            "replicas see changes within auth.cache_ttl"
        )
        return
    stack.push_async_callback(revocations.stop)
    auth.revocations = revocations


async def _keys_create(admin: Admin, args: argparse.Namespace) -> None:
    fields = {"name": args.name, **_fields(args)}
    if args.admin:
        fields["scopes"] = sorted({*fields.get("scopes", []), "admin"})
    fields.setdefault("scopes", ["inference"])
    _print_issued(await admin.create_key(CLI_ACTOR, fields))


async def _keys_list(admin: Admin, args: argparse.Namespace) -> None:
    keys: list[ApiKey] = []
    after = ""
    while True:
        page = await admin.list_keys(CLI_ACTOR, after=after, limit=MAX_PAGE, team_id=args.team)
        keys.extend(page.items)
        if not (after := page.next_cursor):
            break
    if args.json:
        for key in keys:
            _out(json.dumps(key_json(key)))
        return
    rows = [
        (
            key.public_id,
            key.name,
            key.team_id or "-",
            ",".join(sorted(scope.value for scope in key.scopes)),
            ",".join(key.models) or "*",
            _time(key.expires_at),
            "yes" if key.disabled else "no",
            _time(key.last_used_at),
        )
        for key in keys
    ]
    _table(("ID", "NAME", "TEAM", "SCOPES", "MODELS", "EXPIRES", "DISABLED", "LAST-USED"), rows)


async def _keys_show(admin: Admin, args: argparse.Namespace) -> None:
    _print_json(key_json(await admin.get_key(CLI_ACTOR, args.id)))


async def _keys_usage(admin: Admin, limiter: Limiter, args: argparse.Namespace) -> LimitUsage:
    return await admin.key_usage(CLI_ACTOR, args.id, limiter)


async def _keys_rotate(admin: Admin, args: argparse.Namespace) -> None:
    _print_issued(await admin.rotate_key(CLI_ACTOR, args.id, grace=args.grace))


async def _keys_disable(admin: Admin, args: argparse.Namespace) -> None:
    _print_json(key_json(await admin.disable_key(CLI_ACTOR, args.id)))


async def _keys_enable(admin: Admin, args: argparse.Namespace) -> None:
    _print_json(key_json(await admin.update_key(CLI_ACTOR, args.id, {"disabled": False})))


async def _keys_update(admin: Admin, args: argparse.Namespace) -> None:
    fields = _fields(args)
    if args.name is not None:
        fields["name"] = args.name
    if args.all_models:
        fields["models"] = []
    if args.no_expiry:
        fields["expires_at"] = None
    if not fields:
        raise InvalidRequest("Nothing to change: give at least one field (see `llmgw keys update -h`).")
    _print_json(key_json(await admin.update_key(CLI_ACTOR, args.id, fields)))


async def _keys_delete(admin: Admin, args: argparse.Namespace) -> None:
    await admin.delete_key(CLI_ACTOR, args.id)
    _err(f"llmgw: deleted key {args.id}")


def _fields(args: argparse.Namespace) -> dict[str, Any]:
    """The key fields given on the command line, as the admin use cases take them."""
    fields: dict[str, Any] = {}
    for name in ("scopes", "models", "team_id", "expires_at"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    if args.metadata is not None:
        fields["metadata"] = dict(args.metadata)
    return {**fields, **_limits(args)}


async def _teams_create(admin: Admin, args: argparse.Namespace) -> None:
    fields: dict[str, Any] = {"name": args.name, **_limits(args)}
    if args.metadata is not None:
        fields["metadata"] = dict(args.metadata)
    _print_json(team_json(await admin.create_team(CLI_ACTOR, fields)))


async def _teams_list(admin: Admin, args: argparse.Namespace) -> None:
    teams: list[Team] = []
    after = ""
    while True:
        page = await admin.list_teams(CLI_ACTOR, after=after, limit=MAX_PAGE)
        teams.extend(page.items)
        if not (after := page.next_cursor):
            break
    if args.json:
        for team in teams:
            _out(json.dumps(team_json(team)))
        return
    _table(("ID", "NAME", "CREATED"), [(team.id, team.name, _time(team.created_at)) for team in teams])


async def _teams_show(admin: Admin, args: argparse.Namespace) -> None:
    _print_json(team_json(await admin.get_team(CLI_ACTOR, args.id)))


async def _teams_usage(admin: Admin, limiter: Limiter, args: argparse.Namespace) -> LimitUsage:
    return await admin.team_usage(CLI_ACTOR, args.id, limiter)


async def _teams_update(admin: Admin, args: argparse.Namespace) -> None:
    fields = _limits(args)
    if args.name is not None:
        fields["name"] = args.name
    if not fields:
        raise InvalidRequest("Nothing to change: give at least one field (see `llmgw teams update -h`).")
    _print_json(team_json(await admin.update_team(CLI_ACTOR, args.id, fields)))


async def _teams_delete(admin: Admin, args: argparse.Namespace) -> None:
    await admin.delete_team(CLI_ACTOR, args.id)
    _err(f"llmgw: deleted team {args.id}")


async def _audit(admin: Admin, args: argparse.Namespace) -> None:
    entries: list[AuditEntry] = []
    before = ""
    while len(entries) < args.limit:
        page = await admin.audit(CLI_ACTOR, before=before, limit=min(args.limit - len(entries), MAX_PAGE))
        entries.extend(page.items)
        if not (before := page.next_cursor):
            break
    if args.json:
        for entry in entries:
            _out(json.dumps(audit_json(entry)))
        return
    rows = [(_time(e.at), e.actor, e.action, e.target or "-") for e in entries]
    _table(("AT", "ACTOR", "ACTION", "TARGET"), rows)


def _print_issued(issued: IssuedKey) -> None:
    """The key alone on stdout's first line (`KEY=$(llmgw keys create … | head -1)`), the rest on stderr."""
    _out(issued.text)
    _err(f"llmgw: key {issued.key.public_id}: this is the only time it is shown; store it now")


def _print_json(value: dict[str, Any]) -> None:
    _out(json.dumps(value, indent=2))


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        _out("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _time(at: float | None) -> str:
    if at is None:
        return "-"
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def _count(value: str) -> int | None:
    """A whole number, or `none`; whether it is in range is the use case's to say."""
    if value == "none":
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or none, got {value!r}") from None


def _usd(value: str) -> float | None:
    if value == "none":
        return None
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of US dollars or none, got {value!r}") from None


def _period(value: str) -> str | None:
    return None if value == "none" else value


def _duration(value: str) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value!r}")
    return seconds


def _expiry(value: str) -> float | str:
    """Unix seconds as a number; anything else goes to the use case as ISO 8601, which checks it."""
    try:
        return float(value)
    except ValueError:
        return value


def _pair(value: str) -> tuple[str, str]:
    name, equals, text = value.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {value!r}")
    return name, text


def _out(text: str) -> None:
    """stdout is the command's result (keys, JSON, tables); notes and errors go to stderr (`_err`)."""
    sys.stdout.write(f"{text}\n")
    sys.stdout.flush()


def _err(text: str) -> None:
    sys.stderr.write(f"{text}\n")
