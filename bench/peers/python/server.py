"""The seeds' stack: the live-data server a team writes today, as a benchmark peer for feedgate.

FastAPI + uvicorn WebSockets + asyncpg LISTEN/NOTIFY, written the way a careful developer would:
one bounded queue and writer task per connection (a full queue closes that connection as a slow
consumer), a per-row trigger that NOTIFYs the change as JSON, one LISTEN connection fanning out.
It is not part of feedgate; `benches/compare` runs it side by side with feedgate.

Protocol (JSON text frames):
  -> {"op": "subscribe", "topic": "t"} | {"op": "subscribe", "table": "public.t"}
     a table subscription may take "filter": {"column": "c", "gte": 1, "lt": 100}: only rows
     whose integer column c is in [gte, lt). Each change asks every subscription of its table.
  <- {"op": "subscribed"}
  -> {"op": "publish", "topic": "t", "payload": "..."}     <- {"op": "published"}
  <- {"op": "message", "topic": "t", "payload": "..."}
  <- {"op": "change", "table": "public.t", "row": {...}, "kind": "INSERT"}

Run: DATABASE_URL=postgres://... uvicorn server:app --host 127.0.0.1 --port 8001
Tables opt in with `SELECT peer_watch('public.t')` (created at start-up).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections import defaultdict

import asyncpg
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

QUEUE = 10_000
CHANNEL = "peer_changes"
SETUP = f"""
CREATE OR REPLACE FUNCTION peer_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('{CHANNEL}', json_build_object(
    'table', TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, 'kind', TG_OP,
    'row', row_to_json(COALESCE(NEW, OLD)))::text);
  RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION peer_watch(t regclass) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE format('CREATE TRIGGER peer_notify AFTER INSERT OR UPDATE OR DELETE ON %s
                  FOR EACH ROW EXECUTE FUNCTION peer_notify()', t);
END $$;
"""

@contextlib.asynccontextmanager
async def lifespan(app: FastAPI):
    url = os.environ["DATABASE_URL"]
    setup = await asyncpg.connect(url)
    await setup.execute(SETUP)
    await setup.close()
    listener = await asyncpg.connect(url)
    await listener.add_listener(CHANNEL, on_notify)
    yield
    await listener.close()


app = FastAPI(lifespan=lifespan)
topics: dict[str, set["Connection"]] = defaultdict(set)
tables: dict[str, set["Subscription"]] = defaultdict(set)


class Connection:
    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.queue: asyncio.Queue[str] = asyncio.Queue(QUEUE)
        self.slow = False

    def offer(self, text: str) -> None:
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            self.slow = True  # the writer sends what is queued, then closes the connection

    async def writer(self) -> None:
        while not self.slow or not self.queue.empty():
            await self.ws.send_text(await self.queue.get())
        await self.ws.close(code=4008, reason="slow consumer")


class Subscription:
    """One table subscription: the rows it wants (an integer column's range, or every row)."""

    __slots__ = ("connection", "column", "gte", "lt")

    def __init__(self, connection: Connection, spec: dict | None) -> None:
        self.connection = connection
        self.column = spec["column"] if spec else None
        self.gte = spec["gte"] if spec else 0
        self.lt = spec["lt"] if spec else 0

    def wants(self, row: dict) -> bool:
        if self.column is None:
            return True
        value = row.get(self.column)
        return value is not None and self.gte <= value < self.lt


def on_notify(_conn, _pid, _channel, payload: str) -> None:
    change = json.loads(payload)
    text = json.dumps({"op": "change", **change})
    row = change["row"]
    for subscription in tables.get(change["table"], ()):
        if subscription.wants(row):
            subscription.connection.offer(text)


@app.websocket("/ws")
async def websocket(ws: WebSocket) -> None:
    await ws.accept()
    connection = Connection(ws)
    writer = asyncio.create_task(connection.writer())
    subscribed: list[tuple[set, Connection | Subscription]] = []
    try:
        while True:
            request = json.loads(await ws.receive_text())
            if request["op"] == "subscribe":
                if "topic" in request:
                    subscribed.append((topics[request["topic"]], connection))
                else:
                    subscription = Subscription(connection, request.get("filter"))
                    subscribed.append((tables[request["table"]], subscription))
                group, member = subscribed[-1]
                group.add(member)
                connection.offer('{"op": "subscribed"}')
            elif request["op"] == "publish":
                text = json.dumps(
                    {"op": "message", "topic": request["topic"], "payload": request["payload"]}
                )
                for subscriber in topics.get(request["topic"], ()):
                    subscriber.offer(text)
                connection.offer('{"op": "published"}')
    except WebSocketDisconnect:
        pass
    finally:
        for group, member in subscribed:
            group.discard(member)
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await writer
