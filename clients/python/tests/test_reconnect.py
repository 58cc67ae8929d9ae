"""Reconnecting, through a TCP proxy that cuts and pauses connections: the state signal, requests
in flight and requests made meanwhile, giving up, tokens, and the closes that are final."""

from __future__ import annotations

import asyncio

import pytest

import feedgate
from feedgate import ErrorCode, pb

from conftest import next_event, start_server, stop_server, wait_until
from proxy import UP, Proxy
from support import FAST, Recorder, StateLog, counters_table
from test_auth import SECRET, token


@pytest.fixture
async def proxy(history_server):
    proxy = await Proxy(history_server.port).start()
    yield proxy
    await proxy.close()


def messages(into: list[bytes]):
    """An on_event callback that keeps the payloads of topic messages."""

    def on_event(event: pb.Event) -> None:
        if event.WhichOneof("body") == "message":
            into.append(event.message.payload)

    return on_event


def test_the_backoff_is_exponential_with_equal_jitter_and_a_cap():
    options = feedgate.ReconnectOptions()
    ceilings = [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0]
    assert [options.delay(n, lambda: 1.0) for n in range(9)] == pytest.approx(ceilings)
    assert [options.delay(n, lambda: 0.0) for n in range(9)] == pytest.approx(
        [c / 2 for c in ceilings]
    )
    for n, ceiling in enumerate(ceilings):
        assert ceiling / 2 <= options.delay(n) <= ceiling
    assert options.delay(100_000, lambda: 0.0) == 5.0  # no overflow, still capped
    for bad in ({"multiplier": 0.5}, {"max_attempts": 0}, {"initial_delay": 5, "max_delay": 1}):
        with pytest.raises(ValueError):
            feedgate.ReconnectOptions(**bad)
    with pytest.raises(TypeError):
        feedgate.connect("ws://127.0.0.1:1/v1/ws", reconnect="yes")


async def test_state_signal_across_a_cut_and_close(proxy):
    log = StateLog()
    client = await feedgate.connect(proxy.url, reconnect=FAST, on_state_change=log)
    assert client.state == "open"
    subscription = await client.subscribe_topic("state.signal")
    await client.publish("state.signal", "one")  # a message: the subscription has a cursor
    assert (await next_event(subscription)).WhichOneof("body") == "ready"
    assert (await next_event(subscription)).message.payload == b"one"

    proxy.cut()
    await log.reached("open", 2)
    assert log.states == ["connecting", "open", "reconnecting", "open"]
    cause = log.changes[2][1]
    assert isinstance(cause, feedgate.ConnectionClosedError)
    assert cause.close_code == 1006 and cause.retryable  # no close frame: the TCP link died
    assert [error for state, error in log.changes if state != "reconnecting"] == [None] * 3
    assert proxy.accepted == 2 and not subscription.closed

    await client.publish("state.signal", "two")
    assert (await next_event(subscription)).message.payload == b"two"  # no second Ready

    later = StateLog()
    remove = client.on_state_change(later)
    removed = StateLog()
    client.on_state_change(removed)()  # added and removed at once: never called
    await client.close()
    assert client.state == "closed" and log.changes[-1] == ("closed", None)
    assert later.states == ["closed"] and removed.states == []
    remove()
    assert subscription.closed and subscription.error is None
    assert [event async for event in subscription] == []
    with pytest.raises(feedgate.ConnectionClosedError):
        await client.ping()
    assert proxy.accepted == 2  # close() does not reconnect


async def test_without_reconnect_a_cut_ends_everything(proxy):
    log = StateLog()
    client = await feedgate.connect(proxy.url, reconnect=False, on_state_change=log)
    subscription = await client.subscribe_topic("no.reconnect")
    await client.publish("no.reconnect", "one")
    proxy.cut()
    error = await asyncio.wait_for(subscription.wait_closed(), 10)
    assert isinstance(error, feedgate.ConnectionClosedError) and error.close_code == 1006
    assert log.states == ["connecting", "open", "closed"] and log.changes[-1][1] is error
    with pytest.raises(feedgate.ConnectionClosedError):
        await client.ping()
    await client.close()
    assert proxy.accepted == 1


async def test_in_flight_requests_fail_retryably_and_later_ones_wait(proxy):
    log = StateLog()
    async with feedgate.connect(proxy.url, reconnect=FAST, on_state_change=log) as client:
        payloads: list[bytes] = []
        subscription = await client.subscribe_topic("in.flight", on_event=messages(payloads))
        gone = await client.subscribe_topic("in.flight.gone")
        await client.publish("in.flight", "before")
        await wait_until(lambda: payloads == [b"before"])

        # Two requests reach the proxy and are held there when the connection is cut.
        proxy.pause()
        ping = asyncio.create_task(client.ping())
        publish = asyncio.create_task(client.publish("in.flight", "lost"))
        await wait_until(lambda: proxy.held_frames(UP) == 2, what="both requests held")
        proxy.refusing = True  # the server looks down: reconnecting takes a while
        proxy.cut()
        proxy.resume()
        for request in (ping, publish):
            with pytest.raises(feedgate.ConnectionClosedError) as caught:
                await asyncio.wait_for(request, 10)
            assert caught.value.retryable
        assert client.state == "reconnecting"

        # Unsubscribing while reconnecting ends the subscription here and now.
        await asyncio.wait_for(gone.unsubscribe(), 1)
        assert gone.closed and gone.error is None

        # Requests made while reconnecting wait for the connection and go out on it.
        refused = proxy.refused
        late_ping = asyncio.create_task(client.ping())
        late_publish = asyncio.create_task(client.publish("in.flight", "after"))
        await wait_until(lambda: proxy.refused >= refused + 2, what="two more refused attempts")
        assert not late_ping.done() and not late_publish.done()
        proxy.refusing = False
        await log.reached("open", 2)
        assert await asyncio.wait_for(late_ping, 10) > 0
        assert (await asyncio.wait_for(late_publish, 10)).offset > 0
        await wait_until(lambda: b"after" in payloads)
        await client.ping()
        # The held publish never reached the server; the late one arrived once.
        assert payloads == [b"before", b"after"]
        assert not subscription.closed
        assert log.states == ["connecting", "open", "reconnecting", "open"]


async def test_giving_up_after_max_attempts_closes_the_client(proxy):
    log = StateLog()
    options = feedgate.ReconnectOptions(initial_delay=0.2, max_delay=0.2, max_attempts=3)
    client = await feedgate.connect(proxy.url, reconnect=options, on_state_change=log)
    subscription = await client.subscribe_topic("give.up")
    await client.publish("give.up", "one")
    proxy.refusing = True
    proxy.cut()
    await wait_until(lambda: proxy.refused == 1)
    waiting = asyncio.create_task(client.ping())
    await wait_until(lambda: proxy.refused == 2)
    assert not waiting.done()  # a request made while reconnecting waits...
    await log.reached("closed")
    with pytest.raises(feedgate.ConnectionClosedError) as caught:  # ...and fails on the close
        await waiting
    _, error = log.changes[-1]
    assert caught.value is error and "gave up reconnecting after 3 attempts" in error.message
    assert await subscription.wait_closed() is error
    assert proxy.refused == 3 and proxy.accepted == 4
    assert log.states == ["connecting", "open", "reconnecting", "closed"]
    await client.close()


@pytest.fixture
def keyed_server(database_url, tmp_path):
    # No leeway: an expired token closes the connection at once.
    config = tmp_path / "auth.toml"
    config.write_text('[auth]\nleeway = "0s"\n')
    server = start_server(
        database_url, "--config", str(config), "--hs256-secret", SECRET, anonymous=False
    )
    yield server
    stop_server(server)


async def test_the_token_function_runs_for_every_connection(keyed_server):
    proxy = await Proxy(keyed_server.port).start()
    tokens: list[str] = []
    bad = False

    def fresh_token() -> str:
        secret = "another-secret-of-thirty-two-bytes!!" if bad else SECRET
        tokens.append(token("ada", secret=secret))
        return tokens[-1]

    log = StateLog()
    client = await feedgate.connect(
        proxy.url, token=fresh_token, reconnect=FAST, on_state_change=log
    )
    try:
        payloads: list[bytes] = []
        subscription = await client.subscribe_topic("auth.topic", on_event=messages(payloads))
        await client.publish("auth.topic", "one")
        await wait_until(lambda: payloads == [b"one"])
        proxy.cut()
        await log.reached("open", 2)
        assert len(tokens) == 2  # one call per connection
        assert client.welcome.authenticated.user == "ada"
        await client.publish("auth.topic", "two")  # allowed: the new connection authenticated
        await wait_until(lambda: payloads == [b"one", b"two"])

        # The next token is refused: reconnecting cannot help, the client closes for good.
        bad = True
        proxy.cut()
        await log.reached("closed")
        _, error = log.changes[-1]
        assert error.code == ErrorCode.UNAUTHENTICATED and "invalid signature" in error.message
        assert await subscription.wait_closed() is error
        assert len(tokens) == 3 and proxy.accepted == 3
    finally:
        await client.close()
        await proxy.close()


async def test_an_expired_token_close_is_final(keyed_server):
    proxy = await Proxy(keyed_server.port).start()

    async def short_lived() -> str:  # an async token function works too
        return token("ada", expires_in=2)

    log = StateLog()
    client = await feedgate.connect(
        proxy.url, token=short_lived, reconnect=FAST, on_state_change=log
    )
    try:
        subscription = await client.subscribe_topic("expiring")
        await log.reached("closed", timeout=15)
        _, error = log.changes[-1]
        assert isinstance(error, feedgate.ConnectionClosedError)
        assert error.close_code == 4001 and not error.retryable
        assert await subscription.wait_closed() is error
        assert log.states == ["connecting", "open", "closed"] and proxy.accepted == 1
    finally:
        await client.close()
        await proxy.close()


async def test_a_subscription_without_a_position_ends_with_resume_unavailable(proxy, db):
    table = await counters_table(db, rows=3000, pad=100)
    log = StateLog()
    async with feedgate.connect(proxy.url, reconnect=FAST, on_state_change=log) as client:
        recorder = Recorder()
        # Cut while the initial rows arrive: INITIAL rows carry no cursor.
        proxy.cut_within(32 * 1024)
        subscription = await client.subscribe_table(table, include_initial=True, on_event=recorder)
        error = await asyncio.wait_for(subscription.wait_closed(), 20)
        assert error.code == ErrorCode.RESUME_UNAVAILABLE and error.retryable
        assert "position to resume from" in error.message
        assert error.details == {"subscription_id": str(subscription.id)}
        assert proxy.cuts == 1 and proxy.cut_inside_frame
        assert 0 < len(recorder.seen) < 3000 and recorder.readies == 0
        await log.reached("open", 2)
        assert await client.ping() > 0


async def test_a_topic_subscription_resumes_from_its_ready(proxy, history_server):
    """A subscription that has seen nothing but its `Ready` still resumes (the server's topic
    `Ready` carries a cursor), and gets what was published while it was away."""
    log = StateLog()
    events: list[pb.Event] = []
    async with (
        feedgate.connect(proxy.url, reconnect=FAST, on_state_change=log) as client,
        feedgate.connect(history_server.url) as publisher,
    ):
        subscription = await client.subscribe_topic("ready.only", on_event=events.append)
        await wait_until(lambda: len(events) == 1)
        assert subscription.last_cursor, "a topic Ready carries the position it starts after"
        proxy.refusing = True
        proxy.cut()
        await log.reached("reconnecting")
        await publisher.publish("ready.only", "while away")
        proxy.refusing = False
        await log.reached("open", 2)
        await wait_until(lambda: len(events) == 2)
        await client.ping()
        assert [e.WhichOneof("body") for e in events] == ["ready", "message"]
        assert events[1].message.payload == b"while away" and not subscription.closed
