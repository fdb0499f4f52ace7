"""How fast the usage API's questions are answered on a store holding a month of records (issue 16: a
usage query over the month in < 50 ms on SQLite and PostgreSQL).

20,000 records spread over 30 days, 20 keys in 4 teams, 6 models on 3 providers, written through the
store's `put_many` in batches of 100 (as the recorder writes them, rollups kept on the way); then the
month's report grouped by day, by key and model, and by hour, and a first page of the generations
listing, each timed 20 times (the median and the slowest kept).

    python -m benchmarks.usage_query                 # writes benchmarks/USAGE.md (PostgreSQL from
                                                     # LLMGW_TEST_POSTGRES_DSN, skipped without it)
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from benchmarks.machine import commit, describe
from llmgw.application.ports import GenerationStore
from llmgw.domain.generation import GenerationKind, GenerationRecord, GenerationStatus, new_generation_id
from llmgw.domain.usage_report import Dimension, GenerationQuery, UsageQuery
from llmgw.infrastructure.storage.postgres import PostgresStore
from llmgw.infrastructure.storage.sqlite import SQLiteStore

HERE = Path(__file__).parent
RECORDS = 20_000
DAYS = 30
RUNS = 20
LIMIT_MS = 50.0
DAY = 86400


def records(now: float) -> list[GenerationRecord]:
    rng = random.Random(16)
    models = [(f"p{n % 3}/model-{n}", f"p{n % 3}") for n in range(6)]
    made = []
    for _ in range(RECORDS):
        key = rng.randrange(20)
        model, provider = rng.choice(models)
        made.append(
            GenerationRecord(
                id=new_generation_id(),
                request_id="bench",
                kind=GenerationKind.CHAT,
                model=model,
                provider=provider,
                upstream_model=model,
                created_at=now - rng.random() * DAYS * DAY,
                streamed=False,
                status=GenerationStatus.ERROR if rng.random() < 0.05 else GenerationStatus.COMPLETED,
                prompt_tokens=rng.randrange(2000),
                completion_tokens=rng.randrange(500),
                total_tokens=2500,
                cost_usd=rng.random() / 100,
                latency_ms=100.0,
                key_id=f"key{key:09d}",
                team_id=f"team-{key % 4}",
            )
        )
    return made


async def timed(call: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    await call()  # warm
    spent = []
    for _ in range(RUNS):
        started = time.perf_counter()
        await call()
        spent.append((time.perf_counter() - started) * 1000)
    return statistics.median(spent), max(spent)


async def measure(name: str, store: GenerationStore) -> list[str]:
    await store.open()
    try:
        now = time.time()
        made = records(now)
        started = time.perf_counter()
        for at in range(0, len(made), 100):
            await store.put_many(made[at : at + 100])
        write_s = time.perf_counter() - started
        month = UsageQuery(since=int(now // DAY - DAYS) * DAY, until=int(now // DAY + 1) * DAY)
        questions: dict[str, Callable[[], Awaitable[object]]] = {
            "month by day": lambda: store.usage(month),
            "month by key, model": lambda: store.usage(
                dataclasses.replace(month, group_by=(Dimension.KEY, Dimension.MODEL))
            ),
            "month by hour": lambda: store.usage(dataclasses.replace(month, group_by=(Dimension.HOUR,))),
            "month of one team by day": lambda: store.usage(dataclasses.replace(month, team_id="team-1")),
            "generations, first page of 20": lambda: store.list_generations(GenerationQuery(limit=20)),
            "generations of one key, errors": lambda: store.list_generations(
                GenerationQuery(limit=20, key_id="key000000007", status=GenerationStatus.ERROR)
            ),
        }
        lines = [f"| {name} | write {RECORDS:,} records in batches of 100 | {write_s:.1f} s in all | |"]
        for label, call in questions.items():
            median, worst = await timed(call)
            verdict = "met" if median < LIMIT_MS else "not met"
            lines.append(f"| {name} | {label} | {median:.1f} ms (slowest {worst:.1f}) | {verdict} |")
            print(lines[-1], flush=True)
        return lines
    finally:
        await store.close()


async def run() -> str:
    lines = [
        "# Usage API: answers over a month of records",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {describe()}, commit {commit()}, "
        "by `python -m benchmarks.usage_query`: 20,000 records over 30 days (20 keys, 4 teams, 6 models, "
        f"3 providers), then each question {RUNS} times; target < {LIMIT_MS:.0f} ms. The reports read the "
        "hourly rollups only; the listing walks the records' index newest first.",
        "",
        "| store | question | median | < 50 ms |",
        "|---|---|---:|---|",
    ]
    with tempfile.TemporaryDirectory() as folder:
        lines += await measure("SQLite", SQLiteStore(f"sqlite:///{Path(folder) / 'bench.db'}"))
    dsn = os.environ.get("LLMGW_TEST_POSTGRES_DSN", "")
    if dsn:
        import asyncpg

        schema = f"llmgw_bench_{os.getpid()}"
        connection = await asyncpg.connect(dsn)
        await connection.execute(f"CREATE SCHEMA {schema}")
        try:
            lines += await measure("PostgreSQL", PostgresStore(dsn, schema=schema))
        finally:
            await connection.execute(f"DROP SCHEMA {schema} CASCADE")
            await connection.close()
    else:
        lines.append("| PostgreSQL | not measured: LLMGW_TEST_POSTGRES_DSN is unset | | |")
    return "\n".join([*lines, ""])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output", type=Path, default=HERE / "USAGE.md")
    args = parser.parse_args()
    text = asyncio.run(run())
    args.output.write_text(text)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
