/**
 * What an expectation compares: events as `Received` values, what a test expects of one
 * (`Spec`), and how both read in a failure message.
 *
 * A `Received` is one event made plain: its kind (`INITIAL`, `INSERT`, `UPDATE`, `DELETE`,
 * `MESSAGE`, `READY`, `STATUS`), the row (the new row; a delete's old row), the old row, the key,
 * and for topic messages the payload (parsed when it is JSON, else text, else bytes). A `Spec`
 * matches one: a kind, `where` (each named field deeply equal to its value, or accepted by it
 * when the value is a function), `old` (the same for an update's or delete's old row), `key`
 * and `payload`. Not here: waiting (expect.ts).
 */

import { ChangeKind, type Event as FeedEvent } from "../gen/feedgate/v1/feedgate_pb.js";
import { type JsValue, type Key, keyOf, rowToObject } from "../values.js";

export type Kind = "INITIAL" | "INSERT" | "UPDATE" | "DELETE" | "MESSAGE" | "READY" | "STATUS";

/** Kinds that carry data; the others (`READY`, `STATUS`) are passed over unless asked for. */
const DATA_KINDS: ReadonlySet<string> = new Set(["INITIAL", "INSERT", "UPDATE", "DELETE", "MESSAGE"]);
const KINDS: ReadonlySet<string> = new Set([...DATA_KINDS, "READY", "STATUS"]);

const CHANGE_KINDS: Partial<Record<ChangeKind, Kind>> = {
  [ChangeKind.INITIAL]: "INITIAL",
  [ChangeKind.INSERT]: "INSERT",
  [ChangeKind.UPDATE]: "UPDATE",
  [ChangeKind.DELETE]: "DELETE",
};

export type Row = Record<string, JsValue>;

/** One event of a subscription, as an expectation sees it. */
export interface Received {
  kind: Kind;
  /** Table changes: the row after the change, or for a DELETE the row that was deleted. Topic
   * messages: the payload when it is a JSON object. */
  row: Row | undefined;
  /** The row before an UPDATE or DELETE (the columns the server sent). */
  oldRow: Row | undefined;
  /** A change's primary key (see `keyOf`); a message's key (undefined when empty). */
  key: Key | string | undefined;
  /** A message's payload: the parsed JSON, else the text, else the bytes. */
  payload: unknown;
  /** The event as it arrived. */
  event: FeedEvent;
  /** Milliseconds after the expectation started waiting. */
  at: number;
}

/** A field's expected value (compared deeply), or a function that says whether the arrived
 * value is right. */
export type Check = unknown;

/** What one expected event must be; every part left out matches anything. */
export interface Spec {
  /** Upper or lower case. */
  kind?: Kind | Lowercase<Kind>;
  where?: Record<string, Check>;
  old?: Record<string, Check>;
  key?: Check;
  payload?: Check;
}

/** An expected event in a sequence: a `Spec`, a kind, or a `[kind, where]` pair. */
export type SpecLike = Spec | Kind | Lowercase<Kind> | [Kind | Lowercase<Kind>, Record<string, Check>];

/** `spec` checked, its kind upper-cased. */
export function toSpec(item: SpecLike): Spec & { kind?: Kind } {
  const spec: Spec = typeof item === "string" ? { kind: item } : Array.isArray(item) ? { kind: item[0], where: item[1] } : item;
  if (spec.kind === undefined) return { ...spec, kind: undefined };
  const kind = spec.kind.toUpperCase();
  if (!KINDS.has(kind)) throw new TypeError(`unknown event kind ${JSON.stringify(spec.kind)}`);
  return { ...spec, kind: kind as Kind };
}

/** `event` as a `Received`. */
export function received(event: FeedEvent, at: number): Received {
  const body = event.body;
  switch (body.case) {
    case "change": {
      const change = body.value;
      const kind = CHANGE_KINDS[change.kind] ?? "UPDATE";
      const oldRow = change.oldRow === undefined ? undefined : rowToObject(change.oldRow);
      const newRow = change.newRow === undefined ? undefined : rowToObject(change.newRow);
      const row = kind === "DELETE" ? oldRow : newRow;
      return { kind, row, oldRow, key: keyOf(change.key), payload: undefined, event, at };
    }
    case "message": {
      const payload = decode(body.value.payload);
      const row = isObject(payload) ? (payload as Row) : undefined;
      return { kind: "MESSAGE", row, oldRow: undefined, key: body.value.key || undefined, payload, event, at };
    }
    case "ready":
      return { kind: "READY", row: undefined, oldRow: undefined, key: undefined, payload: undefined, event, at };
    default:
      return { kind: "STATUS", row: undefined, oldRow: undefined, key: undefined, payload: undefined, event, at };
  }
}

function decode(payload: Uint8Array): unknown {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(payload);
  } catch {
    return payload;
  }
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

export function isData(got: Received): boolean {
  return DATA_KINDS.has(got.kind);
}

/** Whether `got` is to be compared with `spec` (READY and STATUS only when asked for). */
export function wanted(spec: Spec, got: Received): boolean {
  return isData(got) || (spec.kind !== undefined && !DATA_KINDS.has(spec.kind.toUpperCase()));
}

/** Why `got` is not `spec`'s event, one line per difference; empty when it is. */
export function mismatches(spec: Spec, got: Received): string[] {
  if (spec.kind !== undefined && got.kind !== spec.kind.toUpperCase()) {
    return [`kind: expected ${spec.kind.toUpperCase()}, got ${got.kind}`];
  }
  const out = [...fields("", spec.where, got.row), ...fields("old ", spec.old, got.oldRow)];
  if (spec.key !== undefined && !check(spec.key, got.key)) {
    out.push(`key: expected ${showCheck(spec.key)}, got ${show(got.key)}`);
  }
  if (spec.payload !== undefined && !check(spec.payload, got.payload)) {
    out.push(`payload: expected ${showCheck(spec.payload)}, got ${show(got.payload)}`);
  }
  return out;
}

function fields(prefix: string, want: Record<string, Check> | undefined, row: Row | undefined): string[] {
  if (want === undefined) return [];
  if (row === undefined) return [`${prefix}row: expected ${showFields(want)}, got no ${prefix}row`];
  const out: string[] = [];
  for (const [name, expected] of Object.entries(want)) {
    if (!(name in row)) out.push(`${prefix}${name}: expected ${showCheck(expected)}, got no such column`);
    else if (!check(expected, row[name])) {
      out.push(`${prefix}${name}: expected ${showCheck(expected)}, got ${show(row[name])}`);
    }
  }
  return out;
}

/** Whether `value` is what `expected` asks for: a function's verdict, or deep equality. */
export function check(expected: Check, value: unknown): boolean {
  if (typeof expected === "function") {
    try {
      return Boolean((expected as (value: unknown) => unknown)(value));
    } catch {
      return false; // a predicate that cannot judge the value: not a match
    }
  }
  return deepEqual(expected, value);
}

/** Structural equality: Dates by time, byte arrays by content, arrays and plain objects by
 * their items; numbers and bigints of the same value are equal (an int column may be either). */
export function deepEqual(a: unknown, b: unknown): boolean {
  if (Object.is(a, b)) return true;
  if ((typeof a === "bigint" || typeof a === "number") && (typeof b === "bigint" || typeof b === "number")) {
    return Number.isInteger(Number(a)) && Number.isInteger(Number(b)) && BigInt(a) === BigInt(b);
  }
  if (a instanceof Date && b instanceof Date) return a.getTime() === b.getTime();
  if (a instanceof Uint8Array && b instanceof Uint8Array) {
    return a.length === b.length && a.every((byte, i) => byte === b[i]);
  }
  if (Array.isArray(a) && Array.isArray(b)) {
    return a.length === b.length && a.every((item, i) => deepEqual(item, b[i]));
  }
  if (isObject(a) && isObject(b)) {
    const keys = Object.keys(a);
    return keys.length === Object.keys(b).length && keys.every((k) => k in b && deepEqual(a[k], b[k]));
  }
  return false;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && Object.getPrototypeOf(value) === Object.prototype;
}

/** Longest text of one value in a failure message. */
const MAX_SHOWN = 200;

/** A value as a failure message shows it: JSON-like, object keys sorted, bigints with `n`. */
export function show(value: unknown): string {
  const text = render(value);
  return text.length > MAX_SHOWN ? `${text.slice(0, MAX_SHOWN - 3)}...` : text;
}

function render(value: unknown): string {
  if (value === undefined) return "undefined";
  if (typeof value === "bigint") return `${value}n`;
  if (typeof value === "string") return JSON.stringify(value);
  if (value instanceof Date) return `Date(${value.toISOString()})`;
  if (value instanceof Uint8Array) return `bytes(${[...value].map((b) => b.toString(16).padStart(2, "0")).join("")})`;
  if (Array.isArray(value)) return `[${value.map(render).join(", ")}]`;
  if (typeof value === "object" && value !== null) {
    const entries = Object.entries(value).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${k}: ${render(v)}`).join(", ")}}`;
  }
  return String(value);
}

function showCheck(expected: Check): string {
  if (typeof expected === "function") return expected.name ? `${expected.name}(...)` : "<predicate>";
  return show(expected);
}

function showFields(fields: Record<string, Check>): string {
  return `{${Object.entries(fields).map(([k, v]) => `${k}: ${showCheck(v)}`).join(", ")}}`;
}

/** The spec in words: `INSERT where {id: 7}`. */
export function describeSpec(spec: Spec): string {
  const parts = [spec.kind?.toUpperCase() ?? "event"];
  if (spec.where !== undefined) parts.push(`where ${showFields(spec.where)}`);
  if (spec.old !== undefined) parts.push(`old ${showFields(spec.old)}`);
  if (spec.key !== undefined) parts.push(`key ${showCheck(spec.key)}`);
  if (spec.payload !== undefined) parts.push(`payload ${showCheck(spec.payload)}`);
  return parts.join(" ");
}

/** One event on one line: `INSERT {id: 7, ...}`, with an update's old row. */
export function describe(got: Received): string {
  switch (got.kind) {
    case "MESSAGE": {
      const message = got.event.body.case === "message" ? got.event.body.value : undefined;
      const key = got.key === undefined ? "" : ` key=${show(got.key)}`;
      return `MESSAGE ${message?.topic ?? ""}${key} payload=${show(got.payload)}`;
    }
    case "READY":
      return "READY";
    case "STATUS": {
      const status = got.event.body.case === "status" ? got.event.body.value : undefined;
      const error = status?.error === undefined ? "" : ` (${status.error.message})`;
      return `STATUS ${status?.available ? "available" : "unavailable"}${error}`;
    }
    case "UPDATE":
      return `UPDATE ${show(got.row)}${got.oldRow === undefined ? "" : ` (old: ${show(got.oldRow)})`}`;
    default:
      return `${got.kind} ${show(got.row)}`;
  }
}
