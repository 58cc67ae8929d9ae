"""Fixtures: a real feedgate server (the binary built by cargo) with a real PostgreSQL database
of its own behind it, and helpers to create watched tables and change them with SQL.

The server is found at $FEEDGATE_BIN, else <repo>/target/debug/feedgate (scripts/test builds it);
PostgreSQL at $FEEDGATE_TEST_ADMIN_URL (default postgres://postgres@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import pathlib
import re
import signal
import subprocess
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field

import asyncpg
import pytest

import feedgate

REPO = pathlib.Path(__file__).resolve().parents[3]
#: The test server's limit on subscriptions per connection (tests/test_errors.py reaches it).
MAX_SUBSCRIPTIONS = 16
ADMIN_URL = os.environ.get(
    "FEEDGATE_TEST_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres"
)


@dataclass
class Server:
    """A running `feedgate serve` process."""

    process: subprocess.Popen[bytes]
    addr: str
    database_url: str
    log: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"ws://{self.addr}/v1/ws"

    @property
    def port(self) -> int:
        return int(self.addr.rsplit(":", 1)[1])

    def stats(self) -> dict:
        with urllib.request.urlopen(f"http://{self.addr}/v1/stats", timeout=5) as response:
            return json.load(response)


def _feedgate_bin() -> str:
    path = os.environ.get("FEEDGATE_BIN") or str(REPO / "target" / "debug" / "feedgate")
    if not os.access(path, os.X_OK):
        pytest.fail(f"no feedgate binary at {path}: run `cargo build` or set FEEDGATE_BIN")
    return path


def _database_url(name: str) -> str:
    return ADMIN_URL.rsplit("/", 1)[0] + "/" + name


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def start_server(
    database_url: str,
    *extra: str,
    anonymous: bool = True,
    listen: str = "127.0.0.1:0",
    wait_database: bool = True,
) -> Server:
    """Starts `feedgate serve` on `listen` (default: a free port) and waits until its changefeed
    reader is connected (unless `wait_database=False`). Anonymous access is on unless
    `anonymous=False` (then `extra` must configure keys); no request rate limit."""
    args = [_feedgate_bin(), "serve", "--listen", listen, "--requests-per-second", "0"]
    if anonymous:
        args.append("--allow-anonymous")
    process = subprocess.Popen(
        [*args, "--database-url", database_url, *extra],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "FEEDGATE_LOG": "info,sqlx=warn"},
    )
    log: list[str] = []
    listening = threading.Event()
    found: list[str] = []

    def drain() -> None:
        assert process.stderr is not None
        for raw in process.stderr:
            line = raw.decode(errors="replace").rstrip()
            log.append(line)
            match = re.search(r"listening addr=(\S+)", line)
            if match and not found:
                found.append(match.group(1))
                listening.set()
        listening.set()

    threading.Thread(target=drain, daemon=True).start()
    if not listening.wait(60) or not found:
        process.kill()
        pytest.fail("feedgate did not start:\n" + "\n".join(log))
    server = Server(process, found[0], database_url, log)
    deadline = time.monotonic() + 30
    while wait_database and server.stats().get("database") != "connected":
        if time.monotonic() > deadline:
            stop_server(server)
            pytest.fail("feedgate's changefeed reader never connected:\n" + "\n".join(log))
        time.sleep(0.02)
    return server


def kill_server(server: Server) -> None:
    """SIGKILL: the process gets no chance to close anything."""
    server.process.kill()
    server.process.wait()


def stop_server(server: Server) -> None:
    server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="session")
def database_url() -> str:
    """A database of this test session's own, dropped at the end."""
    name = f"feedgate_test_py_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    yield _database_url(name)
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def server(database_url: str) -> Server:
    server = start_server(database_url, "--max-subscriptions", str(MAX_SUBSCRIPTIONS))
    yield server
    stop_server(server)


#: In-process topic history large enough that a publisher running flat out during a reconnect
#: never pushes the subscriber's position out of it (the default keeps 100 messages per topic).
LARGE_HISTORY = """
[memory]
history_size = 1000000
history_bytes = 268435456
"""


@pytest.fixture(scope="session")
def history_server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Server:
    """A server whose in-process topics keep a long history, for the reconnect tests."""
    config = tmp_path_factory.mktemp("feedgate") / "history.toml"
    config.write_text(LARGE_HISTORY)
    server = start_server(database_url, "--config", str(config))
    yield server
    stop_server(server)


@pytest.fixture
async def client(server: Server):
    async with feedgate.connect(server.url, client_name="pytest") as client:
        yield client


@pytest.fixture
async def db(database_url: str):
    """An asyncpg connection to the server's database, for changing tables with SQL."""
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


_tables = itertools.count(1)


@pytest.fixture
async def table(db: asyncpg.Connection) -> str:
    """A fresh watched table `public.items_<n>` with a one-column primary key."""
    name = f"items_{os.getpid()}_{next(_tables)}"
    await db.execute(
        f"""CREATE TABLE {name} (
              id bigint PRIMARY KEY, name text NOT NULL, price numeric,
              added timestamptz, tags jsonb)"""
    )
    await db.execute("SELECT feedgate.watch($1)", f"public.{name}")
    return f"public.{name}"


async def wait_until(predicate, timeout: float = 20, what: str = "condition") -> None:
    """Waits until `predicate()` is true, checking every few milliseconds; fails the test after
    `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"{what} not reached within {timeout} s")
        await asyncio.sleep(0.005)


async def next_event(subscription: feedgate.Subscription, timeout: float = 10) -> feedgate.pb.Event:
    """The subscription's next event, failing the test after `timeout` seconds."""
    iterator = subscription.__aiter__()
    return await asyncio.wait_for(iterator.__anext__(), timeout)
