"""The pytest plugin (entry point `pytest11`, loaded when the feedgate package is installed):
fixtures for a real feedgate server and a client connected to it.

Fixtures:
- `feedgate_server_options` (session): the `ServerOptions` every server starts with. Override
  it in a conftest.py to give the server a database, tables to watch, a config:

      @pytest.fixture(scope="session")
      def feedgate_server_options(feedgate_server_options, database_url):
          return feedgate_server_options.replace(database_url=database_url, watch=["public.orders"])

- `feedgate_server`: a running server (a `feedgate.testing.Server`). One is shared by the whole
  session, unless the ini option `feedgate_server_scope = function` gives each test its own, or
  the test is marked `@pytest.mark.feedgate(config={...}, args=[...], ...)` (a server of its
  own, started with those changes to the options). When a test fails, what the server logged
  during it is attached to the report ("feedgate server log" section).
- `feedgate_session_server` (session): the shared server itself, for session fixtures.
- `feedgate_client`: a `feedgate.Client` connected to `feedgate_server`, closed after the test
  (an async fixture: needs pytest-asyncio, which `pip install feedgate[testing]` brings).

Options: `--feedgate-bin PATH` or the ini option `feedgate_bin` name the binary (else
$FEEDGATE_BIN, else `feedgate` on PATH).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from ..client import Client
from .server import Server, ServerError, ServerOptions, start_server

#: Log lines attached to a failed test's report at most (its last ones).
REPORT_LOG_LINES = 200

#: The servers a test used, each with how many lines it had logged when the test began.
_USED = pytest.StashKey[list[tuple[Server, int]]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("feedgate")
    group.addoption("--feedgate-bin", default=None, help="the feedgate binary the fixtures run")
    parser.addini("feedgate_bin", "the feedgate binary the fixtures run", default="")
    parser.addini(
        "feedgate_server_scope",
        "session (default): one feedgate_server for all tests; function: one per test",
        default="session",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "feedgate(**options): the test gets a feedgate server of its own, started with these "
        "changes to feedgate_server_options (config=, args=, watch=, anonymous=, ...)",
    )


@pytest.fixture(scope="session")
def feedgate_server_options(pytestconfig: pytest.Config) -> ServerOptions:
    """The options servers start with; override to add a database, tables, a config."""
    binary = pytestconfig.getoption("feedgate_bin") or pytestconfig.getini("feedgate_bin")
    return ServerOptions(binary=binary or None)


def _start(options: ServerOptions) -> Server:
    try:
        return start_server(options)
    except ServerError as err:
        pytest.fail(str(err), pytrace=False)


@pytest.fixture(scope="session")
def feedgate_session_server(feedgate_server_options: ServerOptions) -> Iterator[Server]:
    """The server the session's tests share."""
    server = _start(feedgate_server_options)
    yield server
    server.stop()


@pytest.fixture
def feedgate_server(
    request: pytest.FixtureRequest, feedgate_server_options: ServerOptions
) -> Iterator[Server]:
    """A running feedgate server: the session's, or the test's own (see the module doc)."""
    marker = request.node.get_closest_marker("feedgate")
    own = marker is not None or request.config.getini("feedgate_server_scope") == "function"
    if not own:
        server: Server = request.getfixturevalue("feedgate_session_server")
        _attach(request, server)
        yield server
        return
    if marker is not None and marker.args:
        raise TypeError("@pytest.mark.feedgate takes keyword arguments (ServerOptions fields)")
    server = _start(feedgate_server_options.replace(**(marker.kwargs if marker else {})))
    _attach(request, server)
    yield server
    server.stop()


def _attach(request: pytest.FixtureRequest, server: Server) -> None:
    request.node.stash.setdefault(_USED, []).append((server, len(server.log)))


try:
    import pytest_asyncio
except ImportError:  # the plugin loads wherever feedgate is installed; the client fixture needs it

    @pytest.fixture
    def feedgate_client(feedgate_server: Server) -> Any:
        """Needs pytest-asyncio: `pip install feedgate[testing]`."""
        pytest.fail(
            "the feedgate_client fixture needs pytest-asyncio: pip install 'feedgate[testing]'"
        )

else:
    # One of two definitions, by what is installed.
    @pytest_asyncio.fixture
    async def feedgate_client(  # type: ignore[misc]
        request: pytest.FixtureRequest, feedgate_server: Server
    ) -> AsyncIterator[Client]:
        """A client connected to `feedgate_server` (named after the test), closed after it."""
        async with feedgate_server.connect(client_name=request.node.name) as client:
            yield client


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if not report.failed:
        return
    for server, start in item.stash.get(_USED, []):
        lines = server.log[start:]
        shown = lines[-REPORT_LOG_LINES:]
        if len(lines) > len(shown):
            shown.insert(0, f"... {len(lines) - len(shown)} earlier lines left out")
        title = f"feedgate server log ({server.addr}, during this test)"
        report.sections.append((title, "\n".join(shown) or "(nothing logged)"))
