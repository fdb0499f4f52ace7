"""The client distribution stands alone: it asks for grpclib and betterproto2 only, and importing all of
it loads nothing of the gateway (nor aiohttp, protobuf or a database driver)."""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

CLIENT = Path(__file__).parents[2] / "clients" / "python"
SERVER_ONLY = {"llmgw", "aiohttp", "google", "dynaconf", "asyncpg", "aiosqlite", "orjson", "redis", "uvloop"}


def test_the_distribution_depends_on_grpclib_and_betterproto2_only() -> None:
    config = configparser.ConfigParser()
    config.read(CLIENT / "setup.cfg")
    requirements = [
        line.split("#")[0].strip()
        for line in config["options"]["install_requires"].splitlines()
        if line.split("#")[0].strip()
    ]

    assert [r.split(">")[0].split("[")[0] for r in requirements] == ["betterproto2", "grpclib"]
    assert config["options.package_data"]["llmgw_client"] == "py.typed"


def test_importing_the_whole_client_loads_nothing_of_the_server() -> None:
    code = (
        "import sys, llmgw_client, llmgw_client.admin, llmgw_client.types, llmgw_client._messages\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({sorted(SERVER_ONLY)!r})))"
    )
    done = subprocess.run(  # noqa: S603 - this interpreter, the code above
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=CLIENT, timeout=60
    )

    assert done.stdout.strip() == "[]"
