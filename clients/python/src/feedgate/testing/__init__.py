"""feedgate in a test suite: a real server to test against, and assertions on what arrives.

    from feedgate.testing import start_server, ServerOptions

    server = start_server(ServerOptions(database_url=..., watch=["public.orders"]))
    async with server.connect() as client:
        orders = await client.subscribe_table("public.orders")
        await place_order(id=7)                                   # the application's own code
        await orders.expect("INSERT", where={"id": 7}, within=2.0)
        await orders.expect_nothing(for_=0.5)
    server.stop()

With pytest, the plugin (installed with the package, entry point `pytest11`) gives the
`feedgate_server` and `feedgate_client` fixtures: see `feedgate.testing.plugin`. The assertions
are also methods: `Subscription.expect`, `expect_sequence`, `expect_nothing` and
`MaterializedView.wait_until`. They raise `ExpectationFailed` (an `AssertionError`) with what did
arrive. Guide: docs/testing-with-feedgate.md in the feedgate repository.
"""

from .events import Received, Spec
from .expect import DEFAULT_WITHIN, ExpectationFailed, expect, expect_nothing, expect_sequence
from .server import Server, ServerError, ServerOptions, find_binary, start_server
from .views import rows_diff, wait_until

__all__ = [
    "DEFAULT_WITHIN",
    "ExpectationFailed",
    "Received",
    "Server",
    "ServerError",
    "ServerOptions",
    "Spec",
    "expect",
    "expect_nothing",
    "expect_sequence",
    "find_binary",
    "rows_diff",
    "start_server",
    "wait_until",
]
