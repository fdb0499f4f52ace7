"""HTTP load with wrk: a generated Lua script sets the POST body (and any extra headers, such as an API
key) and prints a JSON summary from `done`. wrk counts answers with a status of 400 or above as `status`
errors, which are added to the row's errors like socket errors and timeouts.

wrk takes whole seconds only, so a run is started long and stopped with SIGINT after the wanted time;
wrk then reports as usual. Requests still in flight at that moment are abandoned, not counted as errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import orjson

_MARK = "WRK_JSON "
_SCRIPT = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
%HEADERS%wrk.body = [==[%BODY%]==]

-- A bound on the requests one run may send, whatever the time: the thread stops past it.
local max_requests = %MAX%
local sent = 0
local prepared = nil
request = function()
  sent = sent + 1
  if sent > max_requests then
    wrk.thread:stop()
  end
  if prepared == nil then
    prepared = wrk.format()
  end
  return prepared
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%MARK%{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,' ..
    '"timeout":%d,"p50_us":%d,"p99_us":%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What a load generator saw: completed requests, errors, wall time and latency percentiles."""

    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    #: CPU seconds the load generator itself spent, where it reports them
    client_cpu_s: float = math.nan


def available() -> bool:
    return shutil.which("wrk") is not None


def write_script(
    directory: Path, name: str, body: bytes, max_requests: int, headers: Mapping[str, str] | None = None
) -> Path:
    path = directory / f"{name}.lua"
    lines = "".join(f"wrk.headers[{_lua(name)}] = {_lua(value)}\n" for name, value in (headers or {}).items())
    script = _SCRIPT.replace("%HEADERS%", lines).replace("%BODY%", body.decode()).replace("%MARK%", _MARK)
    path.write_text(script.replace("%MAX%", str(max_requests)))
    return path


def _lua(text: str) -> str:
    """A quoted Lua string literal holding `text` (printable ASCII, as header names and values are)."""
    if not text.isascii() or not text.isprintable():
        raise ValueError(f"not a header text: {text!r}")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


async def run(url: str, script: Path, connections: int, seconds: float) -> LoadResult:
    """Load `url` with `connections` keep-alive connections for `seconds` (one wrk thread)."""
    process = await asyncio.create_subprocess_exec(
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{math.ceil(seconds) + 5}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await asyncio.sleep(seconds)
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGINT)
        async with asyncio.timeout(15):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return _parse(out.decode(), err.decode())


def _parse(out: str, err: str) -> LoadResult:
    line = next((line for line in out.splitlines() if line.startswith(_MARK)), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}\n{err}")
    data = orjson.loads(line[len(_MARK) :])
    errors = sum(data[key] for key in ("connect", "read", "write", "status", "timeout"))
    return LoadResult(
        requests=data["requests"],
        errors=errors,
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
    )
