"""A real `feedgate serve` process for tests: started on a free port, waited for, stopped.

`start_server(ServerOptions(...))` runs the binary at `ServerOptions.binary`, else
`$FEEDGATE_BIN`, else `feedgate` on `PATH`; it reads the address the server reports
("listening addr=...") instead of guessing a port, and, when the server has a database, waits
until its changefeed reader is connected, so a test's first subscription never races the start.
Everything the server logs is kept in `Server.log` (the pytest plugin attaches a failed test's
part of it to the report). Not here: pytest (plugin.py), databases (the test owns its own).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..client import _Connecting, connect

#: How long a server may take to report its address (a debug build on a busy machine is slow).
START_TIMEOUT = 60.0
#: How long its changefeed reader may take to connect to the database.
DATABASE_TIMEOUT = 30.0
#: How long a SIGTERM'd server may take to shut down before it is killed.
STOP_TIMEOUT = 15.0


class ServerError(RuntimeError):
    """The server could not be found, did not start, or did not connect to its database; the
    message carries its log."""


ConfigValue = Any  # a TOML value: str, int, float, bool, list or a nested table (Mapping)


@dataclass(frozen=True)
class ServerOptions:
    """How to start a server. The defaults make a test server: a free port on 127.0.0.1,
    anonymous access, no request rate limit, no database (topics only)."""

    #: The `feedgate` binary; None: $FEEDGATE_BIN, else `feedgate` on PATH.
    binary: str | None = None
    #: PostgreSQL for table changefeeds (`--database-url`); None: no changefeeds.
    database_url: str | None = None
    #: Tables to watch from the start (`--watch`); tables can also opt in from SQL with
    #: `SELECT feedgate.watch('public.orders')`.
    watch: Sequence[str] = ()
    #: Configuration file contents: TOML text, or a mapping written out as TOML, e.g.
    #: `{"memory": {"history_size": 1000}}` (see docs/configuration in the repository).
    config: str | Mapping[str, ConfigValue] | None = None
    #: More command-line arguments for `feedgate serve`.
    args: Sequence[str] = ()
    #: Let clients in without a token. False: `args`/`config` must configure keys.
    anonymous: bool = True
    #: Where to listen; the default picks a free port.
    listen: str = "127.0.0.1:0"
    #: `FEEDGATE_LOG` for the server (a tracing filter).
    log_level: str = "info,sqlx=warn"
    #: Wait for the changefeed reader to connect (when there is a database).
    wait_for_database: bool = True
    #: More environment variables for the server process.
    env: Mapping[str, str] = field(default_factory=dict)

    def replace(self, **changes: Any) -> ServerOptions:
        """A copy with `changes` applied (`args` and `watch` given here replace, not extend)."""
        return replace(self, **changes)


@dataclass
class Server:
    """A running `feedgate serve` process."""

    process: subprocess.Popen[bytes]
    #: host:port it listens on.
    addr: str
    options: ServerOptions
    #: Every line the server logged so far (appended by a reader thread).
    log: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The WebSocket endpoint, for `feedgate.connect`."""
        return f"ws://{self.addr}/v1/ws"

    @property
    def port(self) -> int:
        return int(self.addr.rsplit(":", 1)[1])

    @property
    def database_url(self) -> str | None:
        return self.options.database_url

    def connect(self, **options: Any) -> _Connecting:
        """`feedgate.connect(self.url, **options)`: await it, or use it with `async with`."""
        return connect(self.url, **options)

    def stats(self) -> dict[str, Any]:
        """The server's `/v1/stats`."""
        with urllib.request.urlopen(f"http://{self.addr}/v1/stats", timeout=5) as response:
            stats: dict[str, Any] = json.load(response)
            return stats

    def stop(self) -> None:
        """SIGTERM (a graceful shutdown: clients are closed with 1001), then SIGKILL after
        `STOP_TIMEOUT` seconds. Does nothing to a server that has exited."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to close anything (connections just drop)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def restart(self, **changes: Any) -> Server:
        """Stops this server (SIGTERM; nothing to do after `kill()`) and runs it again with the
        same options (and `changes`) on the same address, so that clients reconnect and resume.
        This object becomes the new process: fixtures that stop it stop the new one, and `log`
        goes on (after a line that marks the restart). Returns it."""
        self.stop()
        self.log.append(f"--- feedgate.testing: restarted on {self.addr} ---")
        options = self.options.replace(listen=self.addr, **changes)
        restarted = start_server(options, log=self.log)
        self.process, self.options = restarted.process, restarted.options
        return self


def find_binary(binary: str | None = None) -> str:
    """The feedgate binary to run: `binary`, else $FEEDGATE_BIN, else `feedgate` on PATH."""
    path = binary or os.environ.get("FEEDGATE_BIN") or shutil.which("feedgate")
    if not path or not os.access(path, os.X_OK):
        where = path or "$FEEDGATE_BIN or PATH"
        raise ServerError(
            f"no feedgate binary at {where}: install feedgate, or set FEEDGATE_BIN to its path"
        )
    return path


def start_server(
    options: ServerOptions | None = None, *, log: list[str] | None = None, **changes: Any
) -> Server:
    """Starts `feedgate serve` with `options` (and `changes` to them) and returns it once it
    listens and, with a database, once its changefeed reader is connected. Raises
    `ServerError` (with the server's log) when it does not get that far. Its log lines are
    appended to `log` when given (else to a new list)."""
    options = (options or ServerOptions()).replace(**changes)
    process = subprocess.Popen(
        _command(options),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "FEEDGATE_LOG": options.log_level, **options.env},
    )
    log = [] if log is None else log
    start = len(log)
    found: list[str] = []
    listening = threading.Event()

    def drain() -> None:
        assert process.stderr is not None  # stderr=PIPE above
        for raw in process.stderr:
            line = raw.decode(errors="replace").rstrip()
            log.append(line)
            match = re.search(r"listening addr=(\S+)", line)
            if match and not found:
                found.append(match.group(1))
                listening.set()
        listening.set()  # it exited

    threading.Thread(target=drain, name="feedgate-server-log", daemon=True).start()
    if not listening.wait(START_TIMEOUT) or not found:
        process.kill()
        process.wait()
        raise ServerError(
            f"feedgate did not start (exit code {process.returncode}):\n" + _tail(log[start:])
        )
    server = Server(process, found[0], options, log)
    if options.database_url and options.wait_for_database:
        _wait_for_database(server)
    return server


def _command(options: ServerOptions) -> list[str]:
    args = [find_binary(options.binary), "serve", "--listen", options.listen]
    args += ["--requests-per-second", "0"]
    if options.anonymous:
        args.append("--allow-anonymous")
    if options.database_url:
        args += ["--database-url", options.database_url]
    for table in options.watch:
        args += ["--watch", table]
    if options.config is not None:
        text = options.config if isinstance(options.config, str) else to_toml(options.config)
        with tempfile.NamedTemporaryFile(
            "w", prefix="feedgate-test-", suffix=".toml", delete=False
        ) as file:
            file.write(text)
        args += ["--config", file.name]
    return [*args, *options.args]


def _wait_for_database(server: Server) -> None:
    deadline = time.monotonic() + DATABASE_TIMEOUT
    while True:
        status = server.stats().get("database")
        if status == "connected":
            return
        if time.monotonic() > deadline or server.process.poll() is not None:
            server.stop()
            raise ServerError(
                f"feedgate's changefeed reader did not connect within {DATABASE_TIMEOUT} s "
                f"(database: {status}):\n" + _tail(server.log)
            )
        time.sleep(0.02)  # polling the server's own status: there is nothing to wait on


def _tail(log: list[str], lines: int = 60) -> str:
    return "\n".join(log[-lines:])


def to_toml(table: Mapping[str, ConfigValue]) -> str:
    """A mapping as TOML: scalars and lists first, then each nested mapping as a `[table]`."""
    out: list[str] = []
    _toml_table(table, [], out)
    return "\n".join(out) + "\n"


def _toml_table(table: Mapping[str, ConfigValue], path: list[str], out: list[str]) -> None:
    nested = {k: v for k, v in table.items() if isinstance(v, Mapping)}
    if path and len(nested) < len(table):
        out.append(f"[{'.'.join(_toml_key(p) for p in path)}]")
    for key, value in table.items():
        if key not in nested:
            out.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, value in nested.items():
        _toml_table(value, [*path, key], out)


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _toml_value(value: ConfigValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r} ({type(value).__name__})")
