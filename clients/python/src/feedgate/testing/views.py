"""Waiting for a materialized view to reach a state, and showing how far it is when it does not.

`wait_until(view, condition, within=...)` checks the condition each time the view's rows change
(it waits on the view, it does not poll) until it holds or the deadline passes. The condition
is a function of the rows (`view.rows`, {key: row}) that returns true when satisfied; one that
raises (a `KeyError` for a row not there yet, an `assert` inside it) counts as not satisfied,
and the last such error is shown. It may also be the expected rows: a mapping {key: row} that
the view must hold exactly those keys of, each row with at least the given columns equal. A
failure lists the rows the view holds and, for expected rows, the differences key by key and
column by column. Not here: events (expect.py).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Union

from .events import short
from .expect import DEFAULT_WITHIN, ExpectationFailed

if TYPE_CHECKING:
    from ..view import MaterializedView

Rows = dict[Any, dict[str, Any]]
Condition = Union[Callable[[Rows], Any], Mapping[Any, Mapping[str, Any]]]

#: Rows shown in a failure message; the rest are counted.
SHOWN_ROWS = 20


async def wait_until(
    view: MaterializedView,
    condition: Condition,
    *,
    within: float = DEFAULT_WITHIN,
    description: str | None = None,
) -> Rows:
    """Waits at most `within` seconds until the view is ready and `condition` holds for its
    rows (see the module doc); returns the rows. Raises `ExpectationFailed` otherwise, or the
    view's error when it stopped following its table."""
    __tracebackhide__ = True  # pytest: show the test's line, not this one
    check = _expected_rows(condition) if isinstance(condition, Mapping) else _predicate(condition)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last: str | None = None
    while True:
        changed = view._changed  # taken before checking: a change after the check sets it
        if view.error is not None:
            raise _failure(
                view, within, description, condition, "the view stopped: " + str(view.error)
            )
        if view.ready.is_set():
            last = check(view.rows)
            if last is None:
                return view.rows
        remaining = deadline - loop.time()
        if remaining <= 0:
            reason = last if view.ready.is_set() else "the view never became ready"
            raise _failure(view, within, description, condition, reason)
        try:
            await asyncio.wait_for(changed.wait(), remaining)
        except asyncio.TimeoutError:
            pass


def _predicate(condition: Callable[[Rows], Any]) -> Callable[[Rows], str | None]:
    def check(rows: Rows) -> str | None:
        try:
            return None if condition(rows) else "the condition returned false"
        except Exception as err:  # not satisfied yet (a row not there, an assert inside)
            return f"the condition raised {type(err).__name__}: {err}"

    return check


def _expected_rows(expected: Mapping[Any, Mapping[str, Any]]) -> Callable[[Rows], str | None]:
    def check(rows: Rows) -> str | None:
        lines = rows_diff(expected, rows)
        return (
            None
            if not lines
            else "the rows differ (- expected, + in the view):\n" + "\n".join(lines)
        )

    return check


def rows_diff(expected: Mapping[Any, Mapping[str, Any]], rows: Rows) -> list[str]:
    """How `rows` differ from `expected` ({key: the columns that row must have}), one line per
    key missing (-), key not expected (+), or column that differs; empty when they agree."""
    lines = []
    for key, want in expected.items():
        row = rows.get(key)
        if row is None:
            lines.append(f"  - {key!r}: {short(dict(want))}")
            continue
        for column, value in want.items():
            if column not in row:
                lines.append(f"    {key!r}.{column}: expected {short(value)}, no such column")
            elif not value == row[column]:
                lines.append(
                    f"    {key!r}.{column}: expected {short(value)}, got {short(row[column])}"
                )
    lines += [f"  + {key!r}: {short(row)}" for key, row in rows.items() if key not in expected]
    return lines


def _failure(
    view: MaterializedView,
    within: float,
    description: str | None,
    condition: Condition,
    reason: str | None,
) -> ExpectationFailed:
    what = description or (
        "the expected rows" if isinstance(condition, Mapping) else _name(condition)
    )
    lines = [f"view of {view.table}: {what} did not hold within {within} s", f"  {reason}"]
    lines.append(f"rows now ({len(view.rows)}{'' if view.ready.is_set() else ', not ready'}):")
    for key, row in list(view.rows.items())[:SHOWN_ROWS]:
        lines.append(f"  {key!r}: {short(row)}")
    if len(view.rows) > SHOWN_ROWS:
        lines.append(f"  ... and {len(view.rows) - SHOWN_ROWS} more")
    return ExpectationFailed("\n".join(lines))


def _name(condition: Callable[..., Any]) -> str:
    name = getattr(condition, "__name__", "")
    if name and name != "<lambda>":
        return f"{name}()"
    try:  # the line that wrote the lambda says more than "<lambda>"
        return f"the condition `{inspect.getsource(condition).strip()}`"
    except (OSError, TypeError):
        return "the condition"
