"""The gRPC client's own CPU per call beside a bare generated stub's (issue 14: ≤ 1.3x).

Both call the bare grpclib echo server (`grpc_echo.py`, in a process of its own, so only the client's
work is in this process's CPU time) with the same request, one call at a time:

- **bare stub**: the betterproto2 stub generated for the client distribution
  (`LlmGatewayServiceStub.create_chat_completion(request)`), the request message built per call as a
  service using the stub would build it;
- **llmgw_client**: `client.chat.completions.create(model=..., messages=[{...}])`, which converts the
  dicts, reads the call's metadata, and returns typed objects (streams: each chunk).

Rows: a unary chat call, and a 20-chunk stream read to its end. In each round the variants alternate
in batches of 50 calls, and the medians of the rounds decide. CPU is this process's user time
(`getrusage`) per call: the client's own work; the kernel's share of loopback I/O (system time) is
alike for both and shown beside.

    python -m benchmarks.client_cost                 # writes benchmarks/CLIENT.md
    python -m benchmarks.client_cost --calls 300 --rounds 3 --output /tmp/client.md
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from grpclib.client import Channel
from llmgw_client import LLMGateway
from llmgw_client._messages import v1

from benchmarks.machine import commit, describe
from benchmarks.processes import start_grpc_echo, stop

LIMIT = 1.3
BATCH = 50
MODEL = "bench/chat"
HERE = Path(__file__).parent
Call = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Row:
    kind: str
    variant: str
    #: user CPU µs per call, one figure per round: the client's own work (judged)
    cpu_us: list[float]
    #: user + system: with the kernel's share of loopback sends and receives, alike for both variants
    total_us: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.cpu_us)

    @property
    def total_median(self) -> float:
        return statistics.median(self.total_us)


def bare_calls(channel: Channel) -> dict[str, Call]:
    stub = v1.LlmGatewayServiceStub(channel)

    def request() -> v1.CreateChatCompletionRequest:
        return v1.CreateChatCompletionRequest(
            model=MODEL, messages=[v1.ChatMessage(role="user", content="Say hello")]
        )

    async def unary() -> None:
        completion = await stub.create_chat_completion(request())
        assert completion.choices[0].message is not None

    async def stream() -> None:
        count = 0
        async for _chunk in stub.create_chat_completion_stream(request()):
            count += 1
        assert count == 20

    return {"unary": unary, "stream": stream}


def client_calls(client: LLMGateway) -> dict[str, Call]:
    async def unary() -> None:
        completion = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Say hello"}]
        )
        assert completion.choices[0].message.content

    async def stream() -> None:
        count = 0
        answer = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Say hello"}], stream=True
        )
        async with answer:
            async for _chunk in answer:
                count += 1
        assert count == 20

    return {"unary": unary, "stream": stream}


async def measure(call: Call, calls: int) -> tuple[float, float]:
    """Seconds of this process's user and system CPU over `calls` calls."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(calls):
        await call()
    after = resource.getrusage(resource.RUSAGE_SELF)
    return after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime


async def run(port: int, calls: int, rounds: int) -> list[Row]:
    """Each round: per call kind, the variants alternate in batches of `BATCH` calls until each made
    `calls`, so a slower or faster spell of the machine falls on both alike."""
    target = f"127.0.0.1:{port}"
    channel = Channel("127.0.0.1", port)
    client = LLMGateway(target, max_retries=0)
    variants = {"bare stub": bare_calls(channel), "llmgw_client": client_calls(client)}
    batches = max(1, calls // BATCH)
    user: dict[tuple[str, str], list[float]] = {}
    total: dict[tuple[str, str], list[float]] = {}
    try:
        for variant in variants.values():  # warm both: connections, first-call imports
            for call in variant.values():
                await measure(call, 20)
        for _ in range(rounds):
            for kind in ("unary", "stream"):
                spent = {name: [0.0, 0.0] for name in variants}
                for batch in range(batches):
                    order = list(variants.items())
                    for name, variant in order if batch % 2 else reversed(order):
                        user_s, system_s = await measure(variant[kind], BATCH)
                        spent[name][0] += user_s
                        spent[name][1] += system_s
                for name, (user_s, system_s) in spent.items():
                    user.setdefault((kind, name), []).append(user_s / (batches * BATCH) * 1e6)
                    total.setdefault((kind, name), []).append((user_s + system_s) / (batches * BATCH) * 1e6)
    finally:
        channel.close()
        await client.close()
    return [Row(kind, name, cpu, total[(kind, name)]) for (kind, name), cpu in user.items()]


async def measured(calls: int, rounds: int) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="llmgw-client-bench-") as workdir:
        echo = await start_grpc_echo(Path(workdir))
        try:
            return await run(echo.grpc_port, calls, rounds)
        finally:
            stop(echo)


def report(rows: list[Row], calls: int, rounds: int) -> str:
    by = {(row.kind, row.variant): row for row in rows}
    lines = [
        "# llmgw_client: the client's own CPU per call",
        "",
        "Written by `python -m benchmarks.client_cost`; do not edit by hand. What and how: the module's",
        "docstring. Target (issue 14): llmgw_client ≤ 1.3x the bare generated stub, per unary call and per",
        "20-chunk stream.",
        "",
        f"- commit: `{commit()}`",
        *(f"- {name}: {value}" for name, value in describe() if name != "load generators"),
        f"- {calls} calls per variant per round, {rounds} rounds, one call at a time, the bare grpclib echo"
        " server in its own process",
        "",
        "",
        "Client CPU is the process's user time: the client's own work. The kernel's share of each loopback",
        "send and receive (system time) is the same for both variants and only adds noise; it is shown in",
        "the last column.",
        "",
        "| call | variant | user CPU µs/call (median) | rounds | x bare stub | target | user+system µs/call |",
        "|---|---|--:|---|--:|---|--:|",
    ]
    for kind, label in (("unary", "unary chat"), ("stream", "20-chunk stream")):
        bare = by[(kind, "bare stub")].median
        for variant in ("bare stub", "llmgw_client"):
            row = by[(kind, variant)]
            ratio = row.median / bare
            verdict = "-" if variant == "bare stub" else ("met" if ratio <= LIMIT else "**not met**")
            rounds_text = ", ".join(f"{v:.0f}" for v in row.cpu_us)
            lines.append(
                f"| {label} | {variant} | **{row.median:.0f}** | {rounds_text} | {ratio:.2f}x | {verdict}"
                f" | {row.total_median:.0f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output", type=Path, default=HERE / "CLIENT.md")
    args = parser.parse_args()
    rows = asyncio.run(measured(args.calls, args.rounds))
    text = report(rows, args.calls, args.rounds)
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
