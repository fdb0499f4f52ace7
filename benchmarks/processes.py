"""Start and stop the processes under test: the fake upstream, the reference proxy and llmgw, each on
loopback ports of its own, its output in a log file."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio
import redis.exceptions

from benchmarks.rawhttp import call_json

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
_READY_TIMEOUT = 60.0
_REDIS_TIMEOUT = 2.0
# `python -m llmgw` exactly, under a command line that a broad `pkill -f "llmgw serve"` elsewhere on the
# machine does not match: such kills stopped benchmark runs half-way.
_LLMGW_MAIN = "from llmgw.cli import main; raise SystemExit(main())"
_NOT_PASSED = frozenset({"CONFIG_PATH", "MODE", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"})
# llmgw writes generation records at least every second: its CPU for a row is read once that is done.
LLMGW_FLUSH_SECONDS = 1.1
#: what the key minted for an auth on llmgw's load may do
BENCH_KEY_REQUEST: Mapping[str, Any] = {"name": "bench", "scopes": ["inference"]}
#: the key of the limits on llmgw: every limit set, all far above what a run sends, so each is checked and
#: reserved on every request (the bench models are priced, so the budget too) and none ever refuses
LIMITED_KEY_REQUEST: Mapping[str, Any] = {
    **BENCH_KEY_REQUEST,
    "rpm": 100_000_000,
    "tpm": 100_000_000_000,
    "max_parallel": 100_000,
    "budget_usd": 1_000_000,
}


@dataclass(frozen=True, slots=True)
class AuthSecrets:
    """`[auth]` of an llmgw with auth on: fresh random secrets for each run."""

    pepper: str
    admin_key: str

    @classmethod
    def generate(cls) -> AuthSecrets:
        return cls(pepper=secrets.token_urlsafe(32), admin_key=secrets.token_urlsafe(36))


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    grpc_port: int = 0
    health_port: int = 0
    #: seconds of background work a request may leave behind (llmgw's record writer)
    deferred_work: float = 0.0
    #: whether its requests reach the upstream (and so are counted there)
    uses_upstream: bool = True
    #: the API key every request to it carries ("": none, auth is off)
    api_key: str = ""

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def headers(self) -> dict[str, str]:
        """What each request to it adds: its API key, if it has one."""
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _spawn(command: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )


async def start_upstream(workdir: Path) -> Server:
    port = free_port()
    log_path = workdir / "upstream.log"
    process = _spawn([sys.executable, "-m", "benchmarks.upstream", "--port", str(port)], log_path)
    server = Server("upstream", process, port, log_path)
    await _wait_ready(server, port, "/stats")
    return server


async def start_reference(workdir: Path, upstream: Server) -> Server:
    port = free_port()
    log_path = workdir / "reference.log"
    command = [sys.executable, "-m", "benchmarks.reference_proxy", "--port", str(port)]
    process = _spawn([*command, "--upstream", f"http://{HOST}:{upstream.port}"], log_path)
    server = Server("reference", process, port, log_path)
    await _wait_ready(server, port, "/stats")  # forwarded to the upstream's /stats
    return server


async def start_grpc_echo(workdir: Path) -> Server:
    port = free_port()
    log_path = workdir / "grpc-echo.log"
    process = _spawn([sys.executable, "-m", "benchmarks.grpc_echo", "--port", str(port)], log_path)
    server = Server("grpc-echo", process, 0, log_path, grpc_port=port, uses_upstream=False)
    await _wait_ready(server, port, None)
    return server


def llmgw_config(
    workdir: Path,
    upstream: Server,
    ports: tuple[int, int, int],
    workers: int,
    transport: str | None = None,
    *,
    auth: AuthSecrets | None = None,
    redis_url: str = "",
) -> str:
    """The config of one llmgw: provider `bench` on the upstream, with `transport` if given (else the
    default transport, whatever llmgw's default is); auth off unless `auth` gives its secrets; with
    `redis_url`, `[cache] redis_url` (limit counters and key revocations in Redis)."""
    rest, grpc, health = ports
    transport_line = f'transport = "{transport}"\n' if transport else ""
    if auth is None:
        auth_lines = "enabled = false"
    else:
        auth_lines = f'enabled = true\npepper = "{auth.pepper}"\nadmin_key = "{auth.admin_key}"'
    cache_lines = f'\n[cache]\nredis_url = "{redis_url}"\n' if redis_url else ""
    return f"""\
[log]
level = "info"
format = "text"

[http]
listen = "{HOST}:{rest}"

[grpc]
listen = "{HOST}:{grpc}"

[health]
listen = "{HOST}:{health}"

[storage]
url = "sqlite:///{workdir / "bench.db"}"

[auth]
{auth_lines}
{cache_lines}
[server]
workers = {workers}
shutdown_grace = "5s"

[llm.providers.bench]
kind = "openai"
base_url = "http://{HOST}:{upstream.port}/v1"
{transport_line}
[[llm.models]]
id = "bench/chat"
capabilities = ["chat"]
pricing = {{ prompt = 0.5, completion = 1.5 }}

[[llm.models]]
id = "bench/paced"
upstream_model = "paced"
capabilities = ["chat"]
pricing = {{ prompt = 0.5, completion = 1.5 }}

[[llm.models]]
id = "bench/embed"
capabilities = ["embeddings"]
pricing = {{ prompt = 0.1, completion = 0.0 }}
"""


async def start_llmgw(
    workdir: Path,
    upstream: Server,
    name: str,
    *,
    workers: int = 1,
    wrapper: tuple[str, ...] = (),
    transport: str | None = None,
    auth: bool = False,
    key_request: Mapping[str, Any] = BENCH_KEY_REQUEST,
    redis_url: str = "",
    extra_config: str = "",
) -> Server:
    """`llmgw serve` (REST, gRPC, health) with a config dir of its own holding one provider, `bench`.

    `wrapper` runs `-m llmgw` under another module (e.g. cProfile); `transport` sets the provider's
    `transport` key (llmgw refuses unknown keys, so it starts only where the key exists). With `auth`,
    `[auth]` is on and, once llmgw is ready, a key is minted for the load (`Server.api_key`) with
    `key_request` as the body; `redis_url` sets `[cache] redis_url`; `extra_config` is TOML appended to
    the config (tables of its own, e.g. `[metrics]`).
    """
    config_dir = workdir / name
    config_dir.mkdir(parents=True, exist_ok=True)
    ports = (free_port(), free_port(), free_port())
    auth_secrets = AuthSecrets.generate() if auth else None
    config = llmgw_config(
        config_dir, upstream, ports, workers, transport, auth=auth_secrets, redis_url=redis_url
    )
    (config_dir / "default.toml").write_text(config + extra_config)
    # Only the config file speaks: no LLMGW_ settings, keys or proxies from the caller's environment (a
    # proxy variable would also change which transport llmgw picks by default).
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("LLMGW_") and not key.endswith("_API_KEY") and key.upper() not in _NOT_PASSED
    }
    launch = [*wrapper, "-m", "llmgw"] if wrapper else [sys.executable, "-c", _LLMGW_MAIN]
    command = [*launch, "serve", "--config-path", str(config_dir)]
    log_path = workdir / f"{name}.log"
    process = _spawn(command, log_path, env)
    server = Server(name, process, ports[0], log_path, ports[1], ports[2], LLMGW_FLUSH_SECONDS)
    try:
        await _wait_ready(server, ports[2], "/readyz")
        await _wait_ready(server, ports[1], None)
        if auth_secrets is not None:
            server.api_key = await mint_key(server, auth_secrets.admin_key, key_request)
    except BaseException:
        stop(server)  # not ready in time: no process left behind
        raise
    return server


async def mint_key(server: Server, admin_key: str, request: Mapping[str, Any] = BENCH_KEY_REQUEST) -> str:
    """A key of the normal kind (scope `inference`, not the config's admin key), created through the
    admin API with `request` as the body and tried once on `GET /v1/models`: the full key."""
    admin = {"Authorization": f"Bearer {admin_key}"}
    issued = await call_json(HOST, server.port, "/admin/v1/keys", "POST", dict(request), headers=admin)
    key = issued.get("key") if isinstance(issued, dict) else None
    if not isinstance(key, str) or not key:
        raise RuntimeError(f"{server.name}: POST /admin/v1/keys answered no key")
    await call_json(HOST, server.port, "/v1/models", headers={"Authorization": f"Bearer {key}"})
    return key


async def redis_unanswered(url: str) -> str | None:
    """Why Redis at `url` does not answer a PING within `_REDIS_TIMEOUT`; None when it does."""
    try:
        client = redis.asyncio.Redis.from_url(
            url, socket_connect_timeout=_REDIS_TIMEOUT, socket_timeout=_REDIS_TIMEOUT
        )
    except ValueError as exc:
        return f"{public_url(url)} is not a Redis URL: {exc}"
    try:
        await client.ping()
    except (redis.exceptions.RedisError, OSError) as exc:
        return f"Redis at {public_url(url)} did not answer: {type(exc).__name__}: {exc}"
    finally:
        await client.aclose()
    return None


def public_url(url: str) -> str:
    """`url` with its password, if any, replaced by `***`, fit for a report."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:" if parts.username else ":"
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}***@{netloc}"))


async def _wait_ready(server: Server, port: int, path: str | None) -> None:
    """Until `path` answers 2xx (or, with no path, the port accepts); fail early if the process died."""
    await wait_ready(server.name, port, path, alive=lambda: check_alive(server), tail=lambda: _tail(server))


async def wait_ready(
    name: str, port: int, path: str | None, *, alive: Callable[[], None], tail: Callable[[], str]
) -> None:
    """Until `path` on `port` answers 2xx (or, with no path, the port accepts); `alive` raises if the
    process died, `tail` is the end of its log for the error."""
    deadline = time.monotonic() + _READY_TIMEOUT
    while True:
        alive()
        try:
            if path is None:
                _, writer = await asyncio.open_connection(HOST, port)
                writer.close()
            else:
                await call_json(HOST, port, path)
        except (OSError, RuntimeError, TimeoutError):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready on port {port}:\n{tail()}") from None
            await asyncio.sleep(0.1)
        else:
            return


def check_alive(server: Server) -> None:
    """Raise, with the end of its log, if the server has exited."""
    if server.process.poll() is not None:
        raise RuntimeError(f"{server.name} exited with {server.process.returncode}:\n{_tail(server)}")


def _tail(server: Server, lines: int = 30) -> str:
    try:
        return "\n".join(server.log_path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop(server: Server, timeout: float = 30.0) -> int | None:
    """SIGTERM, wait for a clean exit, SIGKILL if it does not come; the exit status."""
    process = server.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode
