"""The shipped test helpers (feedgate.testing) against the real server: each one passing, and
each one failing with a message that says what did arrive."""

from __future__ import annotations

import asyncio
import re
import time
from decimal import Decimal
from unittest.mock import ANY

import pytest

import feedgate
from feedgate.testing import ExpectationFailed, Received, rows_diff
from support import FAST


async def test_expect_returns_the_matching_change(client, db, table):
    subscription = await client.subscribe_table(table)
    await subscription.expect("READY", within=5)
    await db.execute(f"INSERT INTO {table} (id, name, price) VALUES (7, 'seven', 7.5)")
    got = await subscription.expect("INSERT", where={"id": 7, "price": Decimal("7.5")}, within=5)
    assert isinstance(got, Received)
    assert got.row == {
        "id": 7,
        "name": "seven",
        "price": Decimal("7.5"),
        "added": None,
        "tags": None,
    }
    assert got.key == 7
    await db.execute(f"UPDATE {table} SET name = 'SEVEN' WHERE id = 7")
    got = await subscription.expect(
        "update", where={"name": str.isupper}, old={"name": "seven"}, within=5
    )
    assert got.old_row is not None and got.old_row["name"] == "seven"


async def test_expect_fails_at_once_on_the_wrong_next_event(client, db, table):
    subscription = await client.subscribe_table(table)
    await subscription.ready.wait()
    await db.execute(f"INSERT INTO {table} (id, name) VALUES (6, 'six')")
    started = time.monotonic()
    with pytest.raises(ExpectationFailed) as failure:
        await subscription.expect("INSERT", where={"id": 7, "name": "seven"}, within=30)
    assert time.monotonic() - started < 10, "a wrong event fails without waiting out `within`"
    message = str(failure.value)
    assert message.startswith(
        f"subscription {subscription.id} (table {table}): expected INSERT where "
        "{'id': 7, 'name': 'seven'}, but the next event was INSERT "
        "{'added': None, 'id': 6, 'name': 'six', "
    ), message
    assert "\n  id: expected 7, got 6\n  name: expected 'seven', got 'six'\n" in message
    assert re.search(
        r"arrived within 30 s \(2 events\):\n  \+\d\.\d{3} s  READY\n"
        r"  \+\d\.\d{3} s  INSERT \{'added': None, 'id': 6",
        message,
    ), message


async def test_expect_with_skip_passes_over_others_and_shows_the_closest(client, db, table):
    subscription = await client.subscribe_table(table)
    await subscription.ready.wait()
    await db.execute(f"INSERT INTO {table} (id, name) VALUES (1, 'one'), (2, 'two')")
    await db.execute(f"INSERT INTO {table} (id, name) VALUES (3, 'three')")
    got = await subscription.expect("INSERT", where={"id": 3}, within=5, skip=True)
    assert got.row is not None and got.row["name"] == "three"

    await db.execute(f"UPDATE {table} SET name = 'uno' WHERE id = 1")
    with pytest.raises(ExpectationFailed) as failure:
        await subscription.expect("UPDATE", where={"id": 1, "name": "eins"}, within=0.5, skip=True)
    message = str(failure.value)
    assert (
        "expected UPDATE where {'id': 1, 'name': 'eins'}: none of the 1 events matched" in message
    )
    assert "closest: UPDATE {'added': None, 'id': 1, 'name': 'uno'" in message
    assert "(old: {'added': None, 'id': 1, 'name': 'one'" in message
    assert "  name: expected 'eins', got 'uno'" in message


async def test_expect_times_out_saying_nothing_arrived(client):
    subscription = await client.subscribe_topic("testing.silent")
    with pytest.raises(ExpectationFailed) as failure:
        await subscription.expect("MESSAGE", payload=b"x", within=0.3)
    assert str(failure.value) == (
        f"subscription {subscription.id} (topic testing.silent): expected MESSAGE payload b'x': "
        "nothing arrived\n"
        "arrived within 0.3 s (1 events):\n"
        f"  +{_at(failure.value, 0)} s  READY"
    )


async def test_expect_on_topic_messages_matches_json_payloads(client):
    subscription = await client.subscribe_topic("testing.orders")
    await client.publish("testing.orders", '{"order": 7, "tenant": "a"}', key="7")
    got = await subscription.expect("MESSAGE", where={"order": 7}, key="7", within=5)
    assert got.payload == {"order": 7, "tenant": "a"}
    await client.publish("testing.orders", b"\xff not json")
    got = await subscription.expect("MESSAGE", payload=b"\xff not json", within=5)
    assert got.row is None


async def test_expect_sequence_in_order(client, db, table):
    subscription = await client.subscribe_table(table, include_initial=True)
    await subscription.ready.wait()
    await db.execute(f"INSERT INTO {table} (id, name) VALUES (1, 'a')")
    await db.execute(f"UPDATE {table} SET name = 'b' WHERE id = 1")
    await db.execute(f"DELETE FROM {table} WHERE id = 1")
    got = await subscription.expect_sequence(
        [
            "READY",
            ("INSERT", {"id": 1, "name": "a"}),
            {"kind": "UPDATE", "where": {"name": "b"}, "old": {"name": "a"}},
            ("DELETE", {"id": 1}),
        ],
        within=5,
    )
    assert [g.kind for g in got] == ["READY", "INSERT", "UPDATE", "DELETE"]


async def test_expect_sequence_shows_where_it_went_wrong(client, db, table):
    subscription = await client.subscribe_table(table)
    await subscription.ready.wait()
    await db.execute(f"INSERT INTO {table} (id, name) VALUES (1, 'a')")
    await db.execute(f"UPDATE {table} SET name = 'b' WHERE id = 1")
    with pytest.raises(ExpectationFailed) as failure:
        await subscription.expect_sequence(
            [("INSERT", {"id": 1}), ("DELETE", {"id": 1}), ("INSERT", {"id": 2})], within=5
        )
    lines = str(failure.value).splitlines()
    assert lines[0] == (
        f"subscription {subscription.id} (table {table}): expected 3 events in order; "
        "event 2 differs"
    )
    assert lines[1:7] == [
        "  1. ok  INSERT where {'id': 1}",
        "         got INSERT {'added': None, 'id': 1, 'name': 'a', 'price': None, 'tags': None}",
        "  2. NO  DELETE where {'id': 1}",
        "         got UPDATE {'added': None, 'id': 1, 'name': 'b', 'price': None, 'tags': None} "
        "(old: {'added': None, 'id': 1, 'name': 'a', 'price': None, 'tags': None})",
        "           kind: expected DELETE, got UPDATE",
        "  3. --  INSERT where {'id': 2}",
    ]


async def test_expect_sequence_times_out_listing_what_is_missing(client, db, table):
    subscription = await client.subscribe_table(table)
    await subscription.ready.wait()
    await db.execute(f"INSERT INTO {table} (id, name) VALUES (1, 'a')")
    with pytest.raises(ExpectationFailed) as failure:
        await subscription.expect_sequence(["INSERT", "INSERT"], within=0.5)
    message = str(failure.value)
    assert "expected 2 events in order, 1 arrived" in message
    assert "  2. NO  INSERT\n         got nothing\n" in message


async def test_expect_nothing_passes_over_a_filtered_out_tenant(client, db, table):
    ours = await client.subscribe_table(table, filter=feedgate.col("name") == "tenant-a")
    await ours.expect("READY", within=5)
    await db.execute(f"INSERT INTO {table} (id, name) VALUES (1, 'tenant-b')")
    await ours.expect_nothing(for_=0.3)
    await db.execute(f"INSERT INTO {table} (id, name) VALUES (2, 'tenant-a')")
    await ours.expect("INSERT", where={"id": 2}, within=5)


async def test_expect_nothing_fails_naming_what_arrived(client, db, table):
    subscription = await client.subscribe_table(table)
    await subscription.expect("READY", within=5)
    await db.execute(f"INSERT INTO {table} (id, name) VALUES (5, 'leak')")
    with pytest.raises(ExpectationFailed) as failure:
        await subscription.expect_nothing(for_=5)
    assert str(failure.value).splitlines()[0] == (
        f"subscription {subscription.id} (table {table}): expected no event, but INSERT "
        "{'added': None, 'id': 5, 'name': 'leak', 'price': None, 'tags': None} arrived"
    )


async def test_expect_nothing_sees_what_the_server_sent_before_its_end(client):
    """The ping at the end: a message published just before the window closes is judged."""
    subscription = await client.subscribe_topic("testing.late")
    await subscription.expect("READY", within=5)
    await client.publish("testing.late", b"late")
    with pytest.raises(ExpectationFailed, match="expected no event, but MESSAGE testing.late"):
        await subscription.expect_nothing(for_=0)


async def test_expect_nothing_of_one_kind(client, db, table):
    subscription = await client.subscribe_table(table)
    await subscription.expect("READY", within=5)
    await db.execute(f"INSERT INTO {table} (id, name) VALUES (1, 'a')")
    await subscription.expect_nothing(for_=0.2, kind="DELETE")
    await db.execute(f"DELETE FROM {table} WHERE id = 1")
    with pytest.raises(
        ExpectationFailed, match=r"expected no DELETE where \{'id': 1\}, but DELETE"
    ):
        await subscription.expect_nothing(for_=5, kind="DELETE", where={"id": 1})


async def test_a_subscription_that_ends_fails_the_expectation(client):
    subscription = await client.subscribe_topic("testing.ends")
    await subscription.unsubscribe()
    with pytest.raises(ExpectationFailed, match="the subscription ended"):
        await subscription.expect("MESSAGE", within=5)


@pytest.mark.feedgate  # a server of this test's own (the plugin's marker): it is killed
async def test_expectations_hold_across_a_server_restart(feedgate_server, db, table):
    """The helpers read a subscription that outlives connections: what was committed while
    the server was down arrives after the restart, once, in order."""
    async with feedgate_server.connect(reconnect=FAST) as client:
        subscription = await client.subscribe_table(table)
        await subscription.ready.wait()
        await db.execute(f"INSERT INTO {table} (id, name) VALUES (1, 'before')")
        await subscription.expect("INSERT", where={"id": 1}, within=10)
        await asyncio.to_thread(feedgate_server.kill)
        await db.execute(f"INSERT INTO {table} (id, name) VALUES (2, 'while down')")
        await asyncio.to_thread(feedgate_server.restart)
        await db.execute(f"INSERT INTO {table} (id, name) VALUES (3, 'after')")
        await subscription.expect_sequence(
            [("INSERT", {"id": 2}), ("INSERT", {"id": 3})], within=30
        )
        await subscription.expect_nothing(for_=0.2)
    assert "--- feedgate.testing: restarted on" in "\n".join(feedgate_server.log)


async def test_wait_until_on_a_view(client, db, table):
    await db.execute(f"INSERT INTO {table} (id, name) VALUES (1, 'a'), (2, 'b')")
    view = await client.materialized_view(table)
    rows = await view.wait_until(lambda rows: len(rows) == 2, within=5)
    assert set(rows) == {1, 2}
    await db.execute(f"UPDATE {table} SET name = 'B' WHERE id = 2")
    await db.execute(f"INSERT INTO {table} (id, name, price) VALUES (3, 'c', 1)")
    await view.wait_until(lambda rows: rows[3]["price"] == 1 and rows[2]["name"] == "B", within=5)
    await view.wait_until(
        {1: {"name": "a"}, 2: {"name": "B"}, 3: {"name": "c", "price": Decimal(1), "tags": ANY}},
        within=5,
    )


async def test_wait_until_fails_with_the_rows_and_the_last_error(client, db, table):
    await db.execute(f"INSERT INTO {table} (id, name) VALUES (1, 'a')")
    view = await client.materialized_view(table)
    with pytest.raises(ExpectationFailed) as failure:
        await view.wait_until(lambda rows: rows[9]["name"] == "z", within=0.5)
    assert str(failure.value).splitlines() == [
        f"view of {table}: the condition "
        '`await view.wait_until(lambda rows: rows[9]["name"] == "z", within=0.5)` '
        "did not hold within 0.5 s",
        "  the condition raised KeyError: 9",
        "rows now (1):",
        "  1: {'added': None, 'id': 1, 'name': 'a', 'price': None, 'tags': None}",
    ]


async def test_wait_until_expected_rows_shows_a_diff(client, db, table):
    await db.execute(f"INSERT INTO {table} (id, name) VALUES (1, 'a'), (2, 'b'), (4, 'd')")
    view = await client.materialized_view(table)
    with pytest.raises(ExpectationFailed) as failure:
        await view.wait_until(
            {1: {"name": "a"}, 2: {"name": "B", "colour": "red"}, 3: {"name": "c"}}, within=0.5
        )
    message = str(failure.value)
    assert message.startswith(
        f"view of {table}: the expected rows did not hold within 0.5 s\n"
        "  the rows differ (- expected, + in the view):\n"
        "    2.name: expected 'B', got 'b'\n"
        "    2.colour: expected 'red', no such column\n"
        "  - 3: {'name': 'c'}\n"
        "  + 4: {'added': None, 'id': 4, 'name': 'd', 'price': None, 'tags': None}\n"
        "rows now (3):\n"
    ), message


def test_rows_diff_agrees_on_equal_rows():
    assert rows_diff({1: {"a": 1}}, {1: {"a": 1, "b": 2}}) == []
    assert rows_diff({}, {1: {"a": 1}}) == ["  + 1: {'a': 1}"]


def _at(error: BaseException, index: int) -> str:
    """The `+N.NNN` time of the index-th arrived event in a failure message."""
    return re.findall(r"\+(\d+\.\d{3}) s", str(error))[index]


PLUGIN_TEST = """
import pytest

@pytest.fixture(scope="session")
def feedgate_server_options(feedgate_server_options):
    return feedgate_server_options.replace(binary={binary!r})

async def test_session_server(feedgate_server, feedgate_client):
    sub = await feedgate_client.subscribe_topic("plugin.t")
    await feedgate_client.publish("plugin.t", '{{"n": 1}}')
    await sub.expect("MESSAGE", where={{"n": 1}}, within=5)

@pytest.mark.feedgate(config={{"memory": {{"history_size": 3}}}})
async def test_own_server_with_a_config(feedgate_server, feedgate_session_server):
    assert feedgate_server.addr != feedgate_session_server.addr

async def test_that_fails(feedgate_client):
    sub = await feedgate_client.subscribe_topic("plugin.fail")
    await sub.expect("MESSAGE", within=0.2)
"""


def test_the_pytest_plugin(pytester: pytest.Pytester):
    """The plugin as a user's suite sees it: installed by the package (pytest11), its session
    server, a marked test's own server, and a failed test's report with the server's log."""
    binary = feedgate.testing.find_binary(_suite_binary())
    pytester.makepyfile(test_user=PLUGIN_TEST.format(binary=binary))
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*subscription 1 (topic plugin.fail): expected MESSAGE: nothing arrived",
            "*- feedgate server log (127.0.0.1:*, during this test) -*",
        ]
    )


def test_the_plugin_gives_each_test_a_server_when_asked(pytester: pytest.Pytester):
    """`feedgate_server_scope = function`: every test its own server, stopped after it."""
    binary = feedgate.testing.find_binary(_suite_binary())
    pytester.makepyfile(
        test_scope=f"""
import pytest

@pytest.fixture(scope="session")
def feedgate_server_options(feedgate_server_options):
    return feedgate_server_options.replace(binary={binary!r})

servers = []

@pytest.mark.parametrize("n", [1, 2])
def test_own(feedgate_server, n):
    servers.append(feedgate_server)
    assert all(s.process.poll() is not None for s in servers[:-1]), "the last one was stopped"
    assert len({{id(s) for s in servers}}) == len(servers)
"""
    )
    pytester.makeini("[pytest]\nfeedgate_server_scope = function\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def _suite_binary() -> str | None:
    from conftest import BASE

    return BASE.binary
