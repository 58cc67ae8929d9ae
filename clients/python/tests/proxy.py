"""A TCP proxy for tests, between the client and the server: it can cut every connection (both
directions at once, also inside a WebSocket frame), pause them (bytes are held in the proxy, in
order, and forwarded on resume, or dropped by a cut) and refuse new ones.

It understands just enough of the bytes it carries to count WebSocket frames (the HTTP upgrade,
then frame headers), so that a test can cut *inside* a frame and wait until a request it sent is
held. Nothing here knows feedgate's protocol.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

#: The two directions: "up" client -> server, "down" server -> client.
UP, DOWN = "up", "down"


class FrameCounter:
    """Follows one direction of a WebSocket stream: the HTTP upgrade, then frames."""

    def __init__(self) -> None:
        self._http = b""
        self._in_http = True
        self._header = b""
        self._remaining = 0
        #: Frames whose first byte has been seen.
        self.frames = 0

    def feed(self, data: bytes) -> set[int]:
        """Consumes `data`; returns the offsets in it at which a frame starts."""
        starts: set[int] = set()
        i = 0
        while i < len(data):
            if self._in_http:
                self._http += data[i : i + 1]
                i += 1
                if self._http.endswith(b"\r\n\r\n"):
                    self._in_http = False
                continue
            if self._remaining:
                take = min(self._remaining, len(data) - i)
                self._remaining -= take
                i += take
                continue
            if not self._header:
                starts.add(i)
                self.frames += 1
            self._header += data[i : i + 1]
            i += 1
            length = self._frame_length(self._header)
            if length is not None:
                self._remaining = length - len(self._header)
                self._header = b""
        return starts

    @staticmethod
    def _frame_length(header: bytes) -> int | None:
        """The whole frame's length once `header` holds enough of it; None before."""
        if len(header) < 2:
            return None
        masked = header[1] & 0x80
        short = header[1] & 0x7F
        extra = {126: 2, 127: 8}.get(short, 0)
        size = 2 + extra + (4 if masked else 0)
        if len(header) < size:
            return None
        payload = int.from_bytes(header[2 : 2 + extra], "big") if extra else short
        return size + payload


@dataclass
class _Direction:
    """One direction of a proxied connection: the bytes read and not yet forwarded."""

    counter: FrameCounter = field(default_factory=FrameCounter)
    #: Bytes read and not forwarded yet (while paused, or not yet written).
    held: bytearray = field(default_factory=bytearray)
    #: Offsets in `held` at which a frame starts.
    starts: list[int] = field(default_factory=list)
    #: Set when `held` grew or the source ended.
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    #: The source ended (EOF or error).
    ended: bool = False

    def take(self, count: int) -> bytes:
        """Removes and returns the first `count` held bytes."""
        data = bytes(self.held[:count])
        del self.held[:count]
        self.starts = [s - count for s in self.starts if s >= count]
        return data


@dataclass
class _Link:
    """One proxied connection."""

    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    directions: dict[str, _Direction] = field(
        default_factory=lambda: {UP: _Direction(), DOWN: _Direction()}
    )
    cut: bool = False

    def abort(self) -> None:
        self.cut = True
        for writer in (self.client, self.server):
            writer.transport.abort()
        for direction in self.directions.values():
            direction.wake.set()


class Proxy:
    """Listens on 127.0.0.1 (a free port) and forwards to `upstream_port`."""

    def __init__(self, upstream_port: int, websocket: bool = True) -> None:
        self.upstream_port = upstream_port
        #: Whether to follow WebSocket frames (off for other protocols: nothing to count).
        self._websocket = websocket
        self.port = 0
        #: Connections accepted, refused ones included.
        self.accepted = 0
        #: Connections closed at once because `refusing` was set.
        self.refused = 0
        #: Cuts made (by `cut()` or a `cut_within()` budget) that closed at least one connection.
        self.cuts = 0
        #: Whether the last budgeted cut fell inside a WebSocket frame.
        self.cut_inside_frame = False
        #: While set, a new connection is accepted and closed at once (a server that is down).
        self.refusing = False
        self._links: list[_Link] = []
        self._flowing = True
        #: Set, and replaced, whenever `_flowing` changes.
        self._flow_changed = asyncio.Event()
        self._budget: int | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def pause(self) -> None:
        """Holds every byte in both directions (reading goes on, so no sender blocks)."""
        self._set_flowing(False)

    def resume(self) -> None:
        """Forwards what was held, in order, and everything after it."""
        self._set_flowing(True)

    def cut(self) -> None:
        """Closes every live connection on both sides now; held bytes are dropped."""
        live = [link for link in self._links if not link.cut]
        for link in live:
            link.abort()
        self._links.clear()
        if live:
            self.cuts += 1

    def cut_within(self, nbytes: int) -> None:
        """Forwards about `nbytes` more bytes towards the client, then cuts every connection,
        at a point inside a WebSocket frame (its first part delivered, the rest never)."""
        self._budget = nbytes

    def held_frames(self, direction: str) -> int:
        """Frames (started) held in `direction` by all live connections."""
        return sum(len(link.directions[direction].starts) for link in self._links)

    def _set_flowing(self, flowing: bool) -> None:
        self._flowing = flowing
        changed, self._flow_changed = self._flow_changed, asyncio.Event()
        changed.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.refusing:
            self.refused += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        link = _Link(writer, up_writer)
        self._links.append(link)
        for source, sink, name in ((reader, up_writer, UP), (up_reader, writer, DOWN)):
            for job in (self._read(link, source, name), self._forward(link, sink, name)):
                task = asyncio.create_task(job)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _read(self, link: _Link, source: asyncio.StreamReader, name: str) -> None:
        direction = link.directions[name]
        try:
            while not link.cut:
                data = await source.read(65536)
                if not data:
                    break
                if self._websocket:
                    base = len(direction.held)
                    starts = direction.counter.feed(data)
                    direction.starts.extend(base + s for s in sorted(starts))
                direction.held += data
                direction.wake.set()
        except (ConnectionError, OSError):
            pass
        finally:
            direction.ended = True
            direction.wake.set()

    async def _forward(self, link: _Link, sink: asyncio.StreamWriter, name: str) -> None:
        direction = link.directions[name]
        while True:
            await direction.wake.wait()
            direction.wake.clear()
            while not (self._flowing or link.cut):
                await self._flow_changed.wait()
            if link.cut:
                return
            cut_at = self._cut_point(direction) if name == DOWN else None
            data = direction.take(len(direction.held) if cut_at is None else cut_at)
            try:
                if data:
                    sink.write(data)
                    await sink.drain()
                if cut_at is not None:
                    self.cut()
                    return
                if direction.ended and not direction.held:
                    sink.close()
                    return
            except (ConnectionError, OSError):
                return

    def _cut_point(self, direction: _Direction) -> int | None:
        """Where a `cut_within()` budget ends in the held bytes, moved off any frame start so
        that the cut falls inside a frame; None when there is no budget or it reaches past
        them."""
        available = len(direction.held)
        if self._budget is None or available == 0:
            return None
        if available <= self._budget:
            self._budget -= available
            return None
        starts = set(direction.starts)
        point = self._budget
        while point in starts and point < available:
            point += 1
        self._budget = None
        self.cut_inside_frame = point not in starts
        return point
