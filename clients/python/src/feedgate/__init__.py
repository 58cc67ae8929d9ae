"""feedgate: PostgreSQL changefeeds and broker topics over one WebSocket, from asyncio.

    async with feedgate.connect("ws://127.0.0.1:8080/v1/ws") as client:
        view = await client.materialized_view("public.items")
        await view.wait_ready()
        print(view.rows)

`feedgate.v1.feedgate_pb2` holds the generated protocol types; events are yielded as those
(`feedgate.v1.Event`). The client reconnects by itself and resumes every subscription from its
last cursor (`connect(reconnect=...)`, `client.state`). Protocol reference: docs/protocol.md in
the feedgate repository. For an application's own tests, `feedgate.testing` runs a real server
and asserts what arrives (`sub.expect(...)`), with a pytest plugin: docs/testing-with-feedgate.md.
"""

from .client import DEFAULT_QUEUE_SIZE, Client, connect
from .errors import ConnectionClosedError, ErrorCode, FeedgateError
from .filters import Filter, all_of, any_of, col, header, key, path
from .reconnect import ReconnectOptions
from .state import ConnectionState
from .subscription import Subscription
from .v1 import feedgate_pb2 as pb
from .values import key_of, row_to_dict, value_to_python
from .view import MaterializedView, ViewChange

__all__ = [
    "DEFAULT_QUEUE_SIZE",
    "Client",
    "ConnectionClosedError",
    "ConnectionState",
    "ErrorCode",
    "FeedgateError",
    "Filter",
    "MaterializedView",
    "ReconnectOptions",
    "Subscription",
    "ViewChange",
    "all_of",
    "any_of",
    "col",
    "connect",
    "header",
    "key",
    "key_of",
    "path",
    "pb",
    "row_to_dict",
    "value_to_python",
]
