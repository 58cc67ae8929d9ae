"""Errors arrive as FeedgateError with the protocol's code, and the connection keeps working."""

from __future__ import annotations

import asyncio

import pytest

import feedgate
from feedgate import ErrorCode, pb

from conftest import MAX_SUBSCRIPTIONS, next_event, start_server, stop_server


async def expect_error(code: int, awaitable) -> feedgate.FeedgateError:
    with pytest.raises(feedgate.FeedgateError) as caught:
        await awaitable
    assert caught.value.code == code, caught.value
    return caught.value


async def test_error_codes_and_the_connection_survives(client):
    err = await expect_error(ErrorCode.NOT_FOUND, client.subscribe_table("public.missing"))
    assert err.code_name == "NOT_FOUND" and "missing" in err.message
    await expect_error(ErrorCode.VALIDATION, client.subscribe_topic("bad topic"))
    await expect_error(
        ErrorCode.RESUME_UNAVAILABLE, client.subscribe_topic("t", resume_from=b"\x01\x02")
    )
    # An in-process topic's cursor from another run of the server (another epoch).
    other_run = b"\x01m" + bytes(8) + (1).to_bytes(8, "big")
    err = await expect_error(
        ErrorCode.RESUME_UNAVAILABLE, client.subscribe_topic("t", resume_from=other_run)
    )
    assert "another run" in err.message
    await expect_error(ErrorCode.VALIDATION, client.publish("", b"x"))
    await expect_error(
        ErrorCode.SUBSCRIPTION_NOT_FOUND,
        client._request(unsubscribe=pb.Unsubscribe(subscription_id=12345)),
    )
    assert await client.ping() > 0


async def test_oversized_request_is_refused_and_the_connection_lives(client):
    limit = client.welcome.limits.max_message_size
    err = await expect_error(ErrorCode.LIMIT_EXCEEDED, client.publish("big", b"x" * (limit + 1)))
    assert not err.retryable
    published = await client.publish("big", b"x" * 1000)
    assert published.offset > 0


async def test_subscription_limit(client):
    assert client.welcome.limits.max_subscriptions == MAX_SUBSCRIPTIONS
    subscriptions = [
        await client.subscribe_topic(f"limit.{n}") for n in range(MAX_SUBSCRIPTIONS)
    ]
    err = await expect_error(ErrorCode.LIMIT_EXCEEDED, client.subscribe_topic("limit.over"))
    assert err.details.get("limit") == str(MAX_SUBSCRIPTIONS)
    await subscriptions[0].unsubscribe()
    await client.subscribe_topic("limit.over")


async def test_a_slow_iterator_is_ended_not_silently_skipped(server):
    async with feedgate.connect(server.url, queue_size=5) as client:
        slow = await client.subscribe_topic("slow")
        other = await client.subscribe_topic("slow.other")
        for n in range(20):
            await client.publish("slow", str(n))
        await client.publish("slow.other", "fine")
        received = []
        with pytest.raises(feedgate.FeedgateError) as caught:
            async for event in slow:
                received.append(event)
        assert caught.value.code == ErrorCode.SLOW_CONSUMER
        # The queued prefix is delivered in order, then the error: nothing in between is lost.
        assert [e.WhichOneof("body") for e in received] == ["ready"] + ["message"] * 4
        assert [e.message.payload for e in received[1:]] == [b"0", b"1", b"2", b"3"]
        assert (await next_event(other)).WhichOneof("body") == "ready"
        assert (await next_event(other)).message.payload == b"fine"


async def test_server_shutdown_fails_subscriptions_with_a_retryable_code(database_url):
    server = start_server(database_url)
    try:
        # The close itself is under test: without reconnecting, the client ends with it.
        client = await feedgate.connect(server.url, reconnect=False)
        subscription = await client.subscribe_topic("going.away")
        await next_event(subscription)
    finally:
        await asyncio.to_thread(stop_server, server)
    with pytest.raises(feedgate.ConnectionClosedError) as caught:
        await next_event(subscription)
    assert caught.value.close_code == 1001
    assert caught.value.code == ErrorCode.SHUTTING_DOWN and caught.value.retryable
    with pytest.raises(feedgate.ConnectionClosedError):
        await client.ping()
    await client.close()


async def test_token_and_welcome(server):
    async with feedgate.connect(server.url, client_name="t") as client:
        assert client.welcome.protocol_version == 1
        assert client.welcome.session_id
        assert client.welcome.limits.outbound_queue > 0
        assert list(client.welcome.authenticated.roles) == ["anonymous"]
    # A token is checked whenever one is sent; this server has no keys to check it with.
    await expect_error(
        ErrorCode.UNAUTHENTICATED, feedgate.connect(server.url, token="not-a-jwt", client_name="t")
    )


async def test_a_failing_callback_ends_only_its_subscription(client):
    def explode(event: pb.Event) -> None:
        if event.WhichOneof("body") == "message":
            raise RuntimeError("boom")

    failing = await client.subscribe_topic("callbacks", on_event=explode)
    healthy = await client.subscribe_topic("callbacks")
    await client.publish("callbacks", b"one")
    error = await asyncio.wait_for(failing.wait_closed(), 10)
    assert error.code == ErrorCode.INTERNAL and "boom" in error.message
    assert (await next_event(healthy)).WhichOneof("body") == "ready"
    assert (await next_event(healthy)).message.payload == b"one"
    await client.publish("callbacks", b"two")
    assert (await next_event(healthy)).message.payload == b"two"
