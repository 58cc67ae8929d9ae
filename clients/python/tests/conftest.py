"""Fixtures: a real feedgate server (the binary built by cargo) with a real PostgreSQL database
of its own behind it, and helpers to create watched tables and change them with SQL. The server
and the client are the shipped pytest plugin's (`feedgate.testing.plugin`: `feedgate_server`,
`feedgate_client`), given this session's database through `feedgate_server_options`.

The server is found at $FEEDGATE_BIN, else <repo>/target/debug/feedgate (scripts/test builds it);
PostgreSQL at $FEEDGATE_TEST_ADMIN_URL (default postgres://postgres@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import pathlib
import uuid

import asyncpg
import pytest

import feedgate
import feedgate.testing
from feedgate.testing import Server, ServerOptions

#: pytester runs a user's suite with the plugin in tests/test_testing.py.
pytest_plugins = ["pytester"]

REPO = pathlib.Path(__file__).resolve().parents[3]
#: The test server's limit on subscriptions per connection (tests/test_errors.py reaches it).
MAX_SUBSCRIPTIONS = 16
ADMIN_URL = os.environ.get(
    "FEEDGATE_TEST_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres"
)


def _feedgate_bin() -> str | None:
    """$FEEDGATE_BIN, else the binary `cargo build` makes in this repository."""
    built = REPO / "target" / "debug" / "feedgate"
    return os.environ.get("FEEDGATE_BIN") or (str(built) if built.exists() else None)


#: What every server of this suite starts with: the plugin's defaults (a free port, anonymous
#: access, no rate limit) with the binary this repository builds.
BASE = ServerOptions(binary=_feedgate_bin())


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
    """A server of the test's own (`feedgate.testing.start_server`) on `database_url`, with
    `extra` arguments; stop it with `server.stop()` (or `kill()`)."""
    options = BASE.replace(
        database_url=database_url,
        args=extra,
        anonymous=anonymous,
        listen=listen,
        wait_for_database=wait_database,
    )
    try:
        return feedgate.testing.start_server(options)
    except feedgate.testing.ServerError as err:
        pytest.fail(str(err), pytrace=False)


def kill_server(server: Server) -> None:
    """SIGKILL: the process gets no chance to close anything."""
    server.kill()


def stop_server(server: Server) -> None:
    server.stop()


@pytest.fixture(scope="session")
def database_url() -> str:
    """A database of this test session's own, dropped at the end."""
    name = f"feedgate_test_py_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    yield _database_url(name)
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def feedgate_server_options(database_url: str) -> ServerOptions:
    """The plugin's server (`feedgate_server`, shared by the session) runs on this session's
    database, with a low subscription limit that tests/test_errors.py reaches."""
    return BASE.replace(
        database_url=database_url, args=["--max-subscriptions", str(MAX_SUBSCRIPTIONS)]
    )


@pytest.fixture
def server(feedgate_server: Server) -> Server:
    return feedgate_server


#: In-process topic history large enough that a publisher running flat out during a reconnect
#: never pushes the subscriber's position out of it (the default keeps 100 messages per topic).
LARGE_HISTORY = """
[memory]
history_size = 1000000
history_bytes = 268435456
"""


@pytest.fixture(scope="session")
def history_server(database_url: str) -> Server:
    """A server whose in-process topics keep a long history, for the reconnect tests."""
    server = feedgate.testing.start_server(
        BASE.replace(database_url=database_url, config=LARGE_HISTORY)
    )
    yield server
    server.stop()


@pytest.fixture
def client(feedgate_client: feedgate.Client) -> feedgate.Client:
    """The plugin's client (`feedgate_client`), connected to the session's server."""
    return feedgate_client


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
