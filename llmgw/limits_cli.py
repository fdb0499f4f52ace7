"""`llmgw limits rebuild`: restore the budget counters the gateways share in Redis (`cache.redis_url`) from
the generation records, once Redis lost them (a restart without persistence). The gateways restore a
scope by themselves when a request finds its counter missing; this does every budgeted scope at once."""

from __future__ import annotations

import argparse
import asyncio
import sys
from contextlib import AsyncExitStack
from typing import Any, cast

from llmgw.application.admin import MAX_PAGE
from llmgw.application.limits import Limiter
from llmgw.application.ports import KeyStore
from llmgw.domain.errors import GatewayError, NotFound
from llmgw.domain.limits import Scope, ScopeKind, format_usd
from llmgw.infrastructure.config.settings import Settings
from llmgw.infrastructure.storage.factory import create_store

COMMANDS = ("limits",)
_REBUILD = "restore the budget counters in Redis from the generation records (default: every budget)"


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Register `limits rebuild` on the `llmgw` subparsers."""
    limits = commands.add_parser(
        "limits", parents=[common], help="rebuild the limit counters shared in Redis"
    )
    sub = limits.add_subparsers(dest="limits_command", required=True)
    rebuild = sub.add_parser("rebuild", parents=[common], help=_REBUILD, description=_REBUILD)
    rebuild.add_argument(
        "--key", action="append", dest="key_ids", metavar="ID", help="only this key's budget; repeatable"
    )
    rebuild.add_argument(
        "--team", action="append", dest="team_ids", metavar="ID", help="only this team's budget; repeatable"
    )


def run(settings: Settings, args: argparse.Namespace) -> int:
    """0 done; 1 without Redis, an unknown id, or a store unavailable."""
    from llmgw.bootstrap import StartupError

    if not settings.cache.redis_url:
        _err(
            "llmgw: without cache.redis_url the limit counters live in each gateway process, which rebuilds "
            "them from the generation records by itself: there is nothing to rebuild here"
        )
        return 1
    try:
        asyncio.run(_rebuild(settings, args))
    except (GatewayError, StartupError) as exc:
        _err(f"llmgw: {exc.message if isinstance(exc, GatewayError) else exc}")
        return 1
    return 0


async def _rebuild(settings: Settings, args: argparse.Namespace) -> None:
    from llmgw.bootstrap import close_store, open_store
    from llmgw.infrastructure.limits.redis import RedisLimitStore

    storage = settings.storage
    store = create_store(storage.url, timeout=storage.timeout)
    async with AsyncExitStack() as stack:
        await open_store(store, storage)
        stack.push_async_callback(close_store, store, storage.timeout)
        counters = RedisLimitStore(settings.cache.redis_url)
        stack.push_async_callback(counters.close)
        limiter = Limiter(counters, spend=store.spend)
        for scope in await _scopes(settings, cast(KeyStore, store), args):
            records = await limiter.restore(scope)
            spent = (await limiter.usage(scope)).status.spent_micros or 0
            _out(_line(scope, spent, records))


async def _scopes(settings: Settings, keys: KeyStore, args: argparse.Namespace) -> list[Scope]:
    """The scopes named by --key and --team, or every scope with a budget."""
    if args.key_ids or args.team_ids:
        return [await _key(keys, key_id) for key_id in args.key_ids or ()] + [
            await _team(keys, team_id) for team_id in args.team_ids or ()
        ]
    scopes = []
    after = ""
    while page := await keys.list_keys(after=after, limit=MAX_PAGE):
        scopes += [
            Scope(ScopeKind.KEY, key.public_id, key.limits) for key in page if key.limits.tracks_budget
        ]
        after = page[-1].public_id
    after = ""
    while teams := await keys.list_teams(after=after, limit=MAX_PAGE):
        scopes += [Scope(ScopeKind.TEAM, team.id, team.limits) for team in teams if team.limits.tracks_budget]
        after = teams[-1].id
    scopes += [Scope(ScopeKind.MODEL, m.id, m.limits) for m in settings.models if m.limits.tracks_budget]
    if settings.limits.gateway.tracks_budget:
        scopes.append(Scope(ScopeKind.GLOBAL, "", settings.limits.gateway))
    return scopes


async def _key(keys: KeyStore, public_id: str) -> Scope:
    key = await keys.get_key(public_id)
    if key is None:
        raise NotFound(f"Key '{public_id}' not found.", code="key_not_found", param="id")
    return Scope(ScopeKind.KEY, key.public_id, key.limits)


async def _team(keys: KeyStore, team_id: str) -> Scope:
    team = await keys.get_team(team_id)
    if team is None:
        raise NotFound(f"Team '{team_id}' not found.", code="team_not_found", param="id")
    return Scope(ScopeKind.TEAM, team.id, team.limits)


def _line(scope: Scope, spent: int, records: int) -> str:
    """`key:abc  $1.234567 spent this day`; the records' sum too when the counter was already higher."""
    limits = scope.limits
    if not limits.tracks_budget:
        return f"{scope.name}  no budget"
    period = limits.budget_period
    line = (
        f"{scope.name}  {format_usd(spent)} spent {'in its lifetime' if period is None else f'this {period}'}"
    )
    if spent != records:
        line += f" (the records say {format_usd(records)}: the counter was higher)"
    return line


def _out(text: str) -> None:
    sys.stdout.write(f"{text}\n")
    sys.stdout.flush()


def _err(text: str) -> None:
    sys.stderr.write(f"{text}\n")
