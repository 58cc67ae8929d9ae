/**
 * Waiting for a materialized view to reach a state, and showing how far it is when it does not.
 *
 * `waitUntil(view, condition, { within })` checks the condition each time the view's rows change
 * (it waits on the view, it does not poll) until it holds or the deadline passes. The condition
 * is a function of the rows (`view.rows`) that returns true when satisfied; one that throws (a
 * row not there yet, an `assert` inside it) counts as not satisfied, and the last error is
 * shown. It may also be the expected rows: a `Map` (or, for keys that are strings or numbers,
 * an object) of key to row, of which the view must hold exactly those keys, each row with at
 * least the given columns equal. A failure lists the view's rows and, for expected rows, the
 * differences key by key and column by column. Not here: events (expect.ts).
 */

import type { Key } from "../values.js";
import type { MaterializedView } from "../view.js";
import { check, type Check, type Row, show } from "./events.js";
import { DEFAULT_WITHIN_MS, ExpectationFailed } from "./expect.js";

export type Rows = Map<Key, Row>;
export type ExpectedRows = Map<Key, Record<string, Check>> | Record<string, Record<string, Check>>;
export type Condition = ((rows: Rows) => unknown) | ExpectedRows;

/** Rows shown in a failure message; the rest are counted. */
const SHOWN_ROWS = 20;

export interface WaitOptions {
  /** How long to wait, in milliseconds (default 5,000). */
  within?: number;
  /** What the condition means, for the failure message. */
  description?: string;
}

/** Waits at most `within` ms until the view is ready and `condition` holds for its rows (see
 * the module doc); resolves to the rows. Throws `ExpectationFailed` otherwise. */
export async function waitUntil(view: MaterializedView, condition: Condition, options: WaitOptions = {}): Promise<Rows> {
  const within = options.within ?? DEFAULT_WITHIN_MS;
  const test = typeof condition === "function" ? predicate(condition) : expectedRows(condition);
  const deadline = Date.now() + within;
  let wake: (() => void) | undefined;
  const stop = view.watch(() => wake?.());
  try {
    for (;;) {
      let last: string | undefined;
      if (view.error !== undefined) throw failure(view, within, options, condition, `the view stopped: ${view.error.message}`);
      if (view.isReady) {
        last = test(view.rows);
        if (last === undefined) return view.rows;
      }
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw failure(view, within, options, condition, last ?? "the view never became ready");
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        wake = resolve;
        timer = setTimeout(resolve, remaining);
      });
      clearTimeout(timer);
    }
  } finally {
    stop();
  }
}

function predicate(condition: (rows: Rows) => unknown): (rows: Rows) => string | undefined {
  return (rows) => {
    try {
      return condition(rows) ? undefined : "the condition returned false";
    } catch (error) {
      const name = error instanceof Error ? error.name : "error";
      const message = error instanceof Error ? error.message : String(error);
      return `the condition threw ${name}: ${message}`;
    }
  };
}

function expectedRows(expected: ExpectedRows): (rows: Rows) => string | undefined {
  return (rows) => {
    const lines = rowsDiff(expected, rows);
    return lines.length === 0 ? undefined : ["the rows differ (- expected, + in the view):", ...lines].join("\n");
  };
}

/** How `rows` differ from `expected` (key to the columns that row must have), one line per key
 * missing (-), key not expected (+), or column that differs; empty when they agree. An object's
 * keys match a view's keys that print the same (a number key 7 is "7"). */
export function rowsDiff(expected: ExpectedRows, rows: Rows): string[] {
  const want = expected instanceof Map ? expected : new Map(Object.entries(expected));
  const byText = new Map([...rows].map(([key, row]) => [String(key), [key, row] as const]));
  const lines: string[] = [];
  const seen = new Set<string>();
  for (const [key, columns] of want) {
    seen.add(String(key));
    const [actual, row] = rows.has(key) ? [key, rows.get(key)] : (byText.get(String(key)) ?? [key, undefined]);
    if (row === undefined) {
      lines.push(`  - ${show(key)}: ${show(columns)}`);
      continue;
    }
    for (const [column, value] of Object.entries(columns)) {
      if (!(column in row)) lines.push(`    ${show(actual)}.${column}: expected ${show(value)}, no such column`);
      else if (!check(value, row[column])) {
        lines.push(`    ${show(actual)}.${column}: expected ${show(value)}, got ${show(row[column])}`);
      }
    }
  }
  for (const [key, row] of rows) {
    if (!seen.has(String(key))) lines.push(`  + ${show(key)}: ${show(row)}`);
  }
  return lines;
}

function failure(
  view: MaterializedView,
  within: number,
  options: WaitOptions,
  condition: Condition,
  reason: string,
): ExpectationFailed {
  const what =
    options.description ??
    (typeof condition === "function" ? `the condition \`${condition.toString()}\`` : "the expected rows");
  const lines = [`view of ${view.table}: ${what} did not hold within ${within} ms`, `  ${reason}`];
  lines.push(`rows now (${view.rows.size}${view.isReady ? "" : ", not ready"}):`);
  let shown = 0;
  for (const [key, row] of view.rows) {
    if (shown++ === SHOWN_ROWS) break;
    lines.push(`  ${show(key)}: ${show(row)}`);
  }
  if (view.rows.size > SHOWN_ROWS) lines.push(`  ... and ${view.rows.size - SHOWN_ROWS} more`);
  return new ExpectationFailed(lines.join("\n"));
}
