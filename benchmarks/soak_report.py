"""The soak run's checks and `benchmarks/SOAK.md`: settings, request and fault mix, the checks with their
figures, and what the records and the upstream say about the run."""

from __future__ import annotations

import json
import re
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks import machine
from benchmarks.soak_probe import Holding
from benchmarks.soak_traffic import KIND_MIX, SCENARIOS, Kind, Lookup, Result, Scenario

RSS_GROWTH_LIMIT = 0.05
#: seconds beyond shutdown_grace a SIGTERM may take
STOP_SLACK = 5.0
LOG_PROBLEMS = (
    "Task was destroyed but it is pending",
    "Task exception was never retrieved",
    "Traceback",
)
#: counted and shown, not judged
LOG_NOTES = ("Unclosed", "ERROR", "WARNING")
_EXAMPLES = 15
Row = tuple[str, str, str, str, str, str]


@dataclass(frozen=True, slots=True)
class Settings:
    requests: int
    concurrency: int
    warmup: int
    seed: int
    lookups: int
    shutdown_grace: float = 5.0
    #: the fake upstream closes keep-alive connections idle this long: at rest the gateway holds none
    upstream_keepalive: float = 1.5
    #: after the run, how long the gateway gets to return to its idle counts
    settle_max: float = 15.0
    scenarios: tuple[Scenario, ...] = SCENARIOS


@dataclass(frozen=True, slots=True)
class RunFigures:
    warmup: list[Result]
    results: list[Result]
    lookups: list[Lookup]
    samples: list[Holding]
    idle: Holding
    idle_seconds: float
    after: Holding
    settle_seconds: float
    run_seconds: float
    gateway_cpu_seconds: float


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    passed: bool
    figures: str


@dataclass
class Report:
    settings: Settings
    run: RunFigures
    records: list[Row]
    upstream_seen: dict[str, Any]
    exit_status: int | None
    stop_seconds: float
    log_text: str
    date: str
    checks: list[Check] = field(init=False)

    def __post_init__(self) -> None:
        self.checks = [
            self._rss(),
            self._fds(),
            self._upstream_connections(),
            self._one_record_each(),
            self._generation_ids(),
            self._lookups(),
            self._shutdown(),
            self._log(),
        ]

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    # -- checks ---------------------------------------------------------------------------------------

    def _rss(self) -> Check:
        rss = [s.rss_mib for s in self.run.samples]
        if len(rss) < 4:
            return Check("RSS over the last half of the run: growth < 5 %", False, "too few samples")
        first, last = rss[: len(rss) // 2], rss[len(rss) // 2 :]
        tenth = max(1, len(last) // 10)
        start, end = statistics.fmean(last[:tenth]), statistics.fmean(last[-tenth:])
        growth = (end - start) / start
        times = [s.at / 60 for s in self.run.samples[len(rss) // 2 :]]
        slope = statistics.linear_regression(times, last).slope
        figures = (
            f"first half {_span(first)}; last half {_span(last)}; last half from {start:.1f} to {end:.1f} MiB "
            f"(mean of its first and last tenth): **{100 * growth:+.2f} %** (least-squares slope over the last half "
            f"{slope:+.2f} MiB/min); "
            f"{len(rss)} samples every 0.25 s; at rest: {self.run.idle.rss_mib:.1f} MiB after the warm-up, "
            f"{self.run.after.rss_mib:.1f} MiB after the run"
        )
        return Check("RSS over the last half of the run: growth < 5 %", growth < RSS_GROWTH_LIMIT, figures)

    def _fds(self) -> Check:
        idle, after = self.run.idle, self.run.after
        peak = max((s.fds for s in self.run.samples), default=0)
        figures = (
            f"at rest after the warm-up **{idle.fds}** {_types(idle.fd_types)}; peak during the run {peak}; "
            f"after the run **{after.fds}** {_types(after.fd_types)} (settled in {self.run.settle_seconds:.1f} s)"
        )
        return Check("file descriptors back to the idle count", after.fds <= idle.fds, figures)

    def _upstream_connections(self) -> Check:
        idle, after = self.run.idle, self.run.after
        peak = max((s.upstream for s in self.run.samples), default=0)
        figures = (
            f"at rest after the warm-up **{idle.upstream}** {_types(idle.upstream_states)}; peak during the run "
            f"{peak}; after the run **{after.upstream}** {_types(after.upstream_states)} (the upstream closes "
            f"keep-alive connections idle for {self.settings.upstream_keepalive:g} s)"
        )
        return Check("upstream connections back to the idle count", after.upstream <= idle.upstream, figures)

    def _sent(self) -> dict[str, Result]:
        return {r.spec.request_id: r for r in (*self.run.warmup, *self.run.results)}

    def _one_record_each(self) -> Check:
        sent = self._sent()
        per_request = Counter(row[1] for row in self.records)
        missing = [rid for rid in sent if per_request[rid] == 0]
        duplicated = [rid for rid in sent if per_request[rid] > 1]
        unexpected = [rid for rid in per_request if rid not in sent]
        seen = self.upstream_seen.get("attempts", {})
        figures = (
            f"{len(sent)} request ids sent ({len(self.run.warmup)} warm-up + {len(self.run.results)}), "
            f"{len(self.records)} rows; missing **{len(missing)}** "
            f"({sum(1 for rid in missing if rid in seen)} of them reached the upstream), "
            f"duplicated **{len(duplicated)}**, rows for ids never sent **{len(unexpected)}**"
        )
        return Check(
            "exactly one record per request id",
            not (missing or duplicated or unexpected) and len(sent) > 0,
            figures,
        )

    def _generation_ids(self) -> Check:
        by_id = {row[0]: row[1] for row in self.records}
        results = [*self.run.warmup, *self.run.results]
        returned = [r for r in results if r.generation_id]
        absent = [r for r in returned if r.generation_id not in by_id]
        wrong = [
            r for r in returned if r.generation_id in by_id and by_id[r.generation_id] != r.spec.request_id
        ]
        figures = (
            f"{len(returned)} of {len(results)} requests returned a generation id "
            f"(the others: clients that left before the answer headers); no row **{len(absent)}**, "
            f"row of another request **{len(wrong)}**"
        )
        return Check("every generation id returned has its request's row", not (absent or wrong), figures)

    def _lookups(self) -> Check:
        results = {r.generation_id: r.spec.request_id for r in self.run.results if r.generation_id}
        bad = [x for x in self.run.lookups if x.request_id != results.get(x.generation_id)]
        fronts = Counter(x.front for x in self.run.lookups)
        errors = Counter(x.error for x in bad)
        figures = (
            f"{len(self.run.lookups)} ids looked up ({fronts['REST']} `GET /v1/generation/{{id}}`, "
            f"{fronts['gRPC']} `GetGeneration`), a random sample of those returned; not found or not the "
            f"request's: **{len(bad)}** {dict(errors) if errors else ''}"
        )
        return Check("lookups on both fronts find each record", not bad, figures)

    def _shutdown(self) -> Check:
        limit = self.settings.shutdown_grace + STOP_SLACK
        status = "killed" if self.exit_status is None else f"exit status {self.exit_status}"
        figures = f"SIGTERM at rest: {status} after **{self.stop_seconds:.2f} s** (limit {limit:g} s)"
        return Check(
            "SIGTERM: exit 0 within shutdown_grace + 5 s",
            self.exit_status == 0 and self.stop_seconds <= limit,
            figures,
        )

    def _log(self) -> Check:
        found = {p: self.log_text.count(p) for p in LOG_PROBLEMS}
        lines = self.log_text.count("\n")
        figures = (
            f"{lines} log lines; "
            + ", ".join(f'"{p}": **{n}**' for p, n in found.items())
            + "; noted, not judged: "
            + ", ".join(f'"{p}" {self._lines_with(p)}' for p in LOG_NOTES)
        )
        return Check(
            "no pending task, unretrieved exception or traceback in the log", not any(found.values()), figures
        )

    def _lines_with(self, pattern: str) -> int:
        return sum(1 for line in self.log_text.splitlines() if pattern in line)

    # -- rendering ------------------------------------------------------------------------------------

    def summary(self) -> str:
        lines = [f"{'PASS' if c.passed else 'FAIL'}  {c.name}: {_plain(c.figures)}" for c in self.checks]
        return "\n".join([*lines, "all checks passed" if self.passed else "SOME CHECKS FAILED"])

    def render(self) -> str:
        s = self.settings
        run = self.run
        out = [
            "# llmgw soak run",
            "",
            "Written by `python -m benchmarks.soak` (see benchmarks/README.md); do not edit by hand.",
            "",
            f"- date: {self.date}",
            f"- commit: {machine.commit(*_CODE)}",
            *(f"- {name}: {value}" for name, value in _machine()),
            f"- verdict: **{'PASS' if self.passed else 'FAIL'}**",
            "",
            "## Settings",
            "",
            f"- {s.requests} requests after a warm-up of {s.warmup}, {s.concurrency} at a time, mix seed {s.seed};"
            f" {run.run_seconds:.1f} s ({s.requests / run.run_seconds:.0f} req/s), llmgw CPU "
            f"{run.gateway_cpu_seconds:.1f} s ({1000 * run.gateway_cpu_seconds / s.requests:.2f} ms a request)",
            "- llmgw: `llmgw serve`, one worker, SQLite in a temporary directory, info log to a file, "
            f'`shutdown_grace = "{s.shutdown_grace:g}s"`',
            "- model `soak/chat`: deployments `east` and `west` (same priority and weight), "
            '`fallbacks = ["soak/backup"]` (provider `backup`); `soak/embed` the same with `soak/backup-embed`',
            '- providers: `timeout = "2s"` (each request\'s deadline), `first_token_timeout` and '
            '`idle_timeout` 400 ms; `llm.retry`: 3 attempts, backoff 10-50 ms, `retry_after_max = "1s"`; '
            "`llm.circuit`: 5 failures, 2 s cooldown",
            "- fake upstream (`benchmarks/fault_upstream.py`, its own process, three ports): streams of 10 "
            f"chunks 3 ms apart; keep-alive connections idle {s.upstream_keepalive:g} s are closed",
            f"- after the run: up to {s.settle_max:g} s for the gateway to settle; {s.lookups} generation ids "
            "looked up before the clients close",
            "",
            "## Request mix",
            "",
            *self._kind_table(),
            "",
            "## Fault mix",
            "",
            "Each request draws one scenario; the fake upstream applies its plan attempt by attempt "
            "(attempts past the plan are answered).",
            "",
            *self._scenario_table(),
            "",
            *self._rss_timeline(),
            "## Checks",
            "",
            "| check | result | figures |",
            "|---|---|---|",
            *(f"| {c.name} | **{'PASS' if c.passed else 'FAIL'}** | {c.figures} |" for c in self.checks),
            "",
            *self._records_section(),
            *self._missing_section(),
        ]
        return "\n".join(out) + "\n"

    def _rss_timeline(self) -> list[str]:
        samples = self.run.samples
        if not samples:
            return []
        points = [samples[min(len(samples) - 1, round(i * (len(samples) - 1) / 10))] for i in range(11)]
        return [
            "## RSS through the run",
            "",
            "| " + " | ".join(f"{10 * i} %" for i in range(11)) + " |",
            "|" + "---:|" * 11,
            "| " + " | ".join(f"{p.rss_mib:.1f}" for p in points) + " |",
            "",
            f"MiB, sampled every 0.25 s while the requests ran (not during the lookups that follow); at rest "
            f"after the warm-up {self.run.idle.rss_mib:.1f} MiB, after the run and the lookups "
            f"{self.run.after.rss_mib:.1f} MiB.",
            "",
        ]

    def _kind_table(self) -> list[str]:
        by_kind: dict[Kind, Counter[str]] = {kind: Counter() for kind in Kind}
        for r in self.run.results:
            by_kind[r.spec.kind][r.outcome] += 1
        rows = ["| kind | share | requests | client saw |", "|---|---:|---:|---|"]
        for kind, outcomes in by_kind.items():
            rows.append(f"| {kind.value} | {KIND_MIX[kind]} % | {outcomes.total()} | {_counts(outcomes)} |")
        return rows

    def _scenario_table(self) -> list[str]:
        by_name: dict[str, Counter[str]] = {sc.name: Counter() for sc in self.settings.scenarios}
        for r in self.run.results:
            by_name[r.spec.scenario.name][r.outcome] += 1
        rows = ["| scenario | plan | share | requests | client saw |", "|---|---|---:|---:|---|"]
        for sc in self.settings.scenarios:
            outcomes = by_name[sc.name]
            rows.append(
                f"| {sc.name} | `{sc.plan or '-'}` | {sc.weight} % | {outcomes.total()} | {_counts(outcomes)} |"
            )
        return rows

    def _records_section(self) -> list[str]:
        statuses = Counter(row[2] for row in self.records)
        attempts = Counter(len(json.loads(row[5] or "[]")) for row in self.records)
        providers = Counter(row[4] or "(none)" for row in self.records)
        codes = Counter(row[3] for row in self.records if row[3])
        outcome = {r.spec.request_id: r.outcome for r in (*self.run.warmup, *self.run.results)}
        cross: Counter[tuple[str, str]] = Counter((outcome.get(row[1], "?"), row[2]) for row in self.records)
        actions = self.upstream_seen.get("actions", {})
        return [
            "## What the records and the upstream say",
            "",
            f"- record status: {_counts(statuses)}",
            f"- attempts per record: {_counts(Counter({f'{k}': v for k, v in sorted(attempts.items())}))}",
            f"- provider of the last attempt: {_counts(providers)} (`backup`: the fallback model answered or "
            "failed last)",
            f"- error codes: {_counts(codes)}",
            f"- upstream actions taken: {_counts(Counter(actions))}",
            "",
            "| client saw | record status | requests |",
            "|---|---|---:|",
            *(f"| {seen} | {status} | {n} |" for (seen, status), n in sorted(cross.items())),
            "",
        ]

    def _missing_section(self) -> list[str]:
        sent = self._sent()
        per_request = Counter(row[1] for row in self.records)
        odd = [rid for rid in sent if per_request[rid] != 1]
        if not odd:
            return []
        seen = self.upstream_seen.get("attempts", {})
        rows = [
            "## Requests without exactly one record",
            "",
            f"{len(odd)} in all; the first {min(len(odd), _EXAMPLES)}:",
            "",
            "| request id | kind | scenario | client saw | rows | upstream attempts |",
            "|---|---|---|---|---:|---:|",
        ]
        for rid in odd[:_EXAMPLES]:
            r = sent[rid]
            rows.append(
                f"| {rid} | {r.spec.kind.value} | {r.spec.scenario.name} | {r.outcome} | {per_request[rid]} "
                f"| {seen.get(rid, 0)} |"
            )
        by: Counter[tuple[str, str, str]] = Counter(
            (sent[rid].spec.kind.value, sent[rid].spec.scenario.name, sent[rid].outcome) for rid in odd
        )
        rows += ["", "| kind | scenario | client saw | requests |", "|---|---|---|---:|"]
        rows += [f"| {k} | {sc} | {o} | {n} |" for (k, sc, o), n in by.most_common()]
        return [*rows, ""]


def _span(values: Sequence[float]) -> str:
    return f"{min(values):.1f}/{statistics.fmean(values):.1f}/{max(values):.1f} MiB (min/mean/max)"


def _types(types: dict[str, int]) -> str:
    return "(" + ", ".join(f"{k} {v}" for k, v in sorted(types.items())) + ")" if types else ""


def _counts(counter: Counter[Any]) -> str:
    return ", ".join(f"{key} {n}" for key, n in counter.most_common()) or "-"


def _plain(text: str) -> str:
    return re.sub(r"\*\*|`", "", text)


# The code under test: a report is `+dirty` only when it differs from HEAD.
_CODE = ("llmgw", "configs", "setup.cfg", "pyproject.toml")


def _machine() -> list[tuple[str, str]]:
    return [(name, value) for name, value in machine.describe() if name != "load generators"]
