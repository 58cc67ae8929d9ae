/**
 * Column values (`feedgate.v1.Value`) as JavaScript values.
 *
 * | Value kind             | JavaScript                                                     |
 * |------------------------|----------------------------------------------------------------|
 * | null                   | null                                                           |
 * | bool, double, text     | boolean, number, string                                        |
 * | int (64-bit)           | number when it is a safe integer, else bigint                  |
 * | bytes                  | Uint8Array                                                     |
 * | numeric                | string, exact ("12345678901234567890.000001", "NaN")           |
 * | timestamp_micros       | Date (milliseconds; the exact microseconds stay in the Value)  |
 * | local_timestamp_micros | string "YYYY-MM-DDTHH:MM:SS.ffffff" (wall clock, no zone)      |
 * | date_days              | string "YYYY-MM-DD"                                            |
 * | json                   | the parsed JSON                                                |
 */

import type { Row, Value } from "./gen/feedgate/v1/feedgate_pb.js";

/** Parsed JSON. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** A column value as JavaScript (see the table above). */
export type JsValue = Json | bigint | Uint8Array | Date;

const MICROS_PER_DAY = 86_400_000_000n;

function intToJs(value: bigint): number | bigint {
  const n = Number(value);
  return Number.isSafeInteger(n) ? n : value;
}

function pad(n: number | bigint, width: number): string {
  return n.toString().padStart(width, "0");
}

/** Days since 1970-01-01 as "YYYY-MM-DD" (proleptic Gregorian; years before 1 as "-YYYY"). */
function isoDate(days: number): string {
  const date = new Date(days * 86_400_000);
  const year = date.getUTCFullYear();
  const y = year < 0 ? `-${pad(-year, 4)}` : pad(year, 4);
  return `${y}-${pad(date.getUTCMonth() + 1, 2)}-${pad(date.getUTCDate(), 2)}`;
}

function localTimestamp(micros: bigint): string {
  let days = micros / MICROS_PER_DAY;
  let rest = micros % MICROS_PER_DAY;
  if (rest < 0n) {
    rest += MICROS_PER_DAY;
    days -= 1n;
  }
  const seconds = rest / 1_000_000n;
  const fraction = rest % 1_000_000n;
  const time = `${pad(seconds / 3600n, 2)}:${pad((seconds / 60n) % 60n, 2)}:${pad(seconds % 60n, 2)}`;
  return `${isoDate(Number(days))}T${time}.${pad(fraction, 6)}`;
}

/** One `Value` as JavaScript (see the table in this module's doc). */
export function valueToJs(value: Value | undefined): JsValue {
  const kind = value?.kind;
  if (kind === undefined) return null;
  switch (kind.case) {
    case undefined:
    case "null":
      return null;
    case "int":
      return intToJs(kind.value);
    case "timestampMicros":
      return new Date(Number(kind.value / 1000n));
    case "localTimestampMicros":
      return localTimestamp(kind.value);
    case "dateDays":
      return isoDate(kind.value);
    case "json":
      return JSON.parse(kind.value) as Json;
    default:
      return kind.value;
  }
}

/** A `Row` as `{ column: value }` with `valueToJs` values. */
export function rowToObject(row: Row | undefined): Record<string, JsValue> {
  const out: Record<string, JsValue> = {};
  for (const [name, value] of Object.entries(row?.columns ?? {})) {
    out[name] = valueToJs(value);
  }
  return out;
}

/** A primary key usable as a `Map` key. */
export type Key = string | number | bigint | boolean | null;

function keyPart(value: Value | undefined): Key {
  const kind = value?.kind;
  switch (kind?.case) {
    case "timestampMicros":
    case "localTimestampMicros":
      return intToJs(kind.value);
    case "bytes":
      return Array.from(kind.value, (b) => b.toString(16).padStart(2, "0")).join("");
    case "json":
      return kind.value;
    default:
      return valueToJs(value) as Key;
  }
}

/**
 * A primary key as a `Map` key: the value itself for a one-column key (timestamps as their
 * microseconds, bytea as hex, json as its text), else the JSON text of the values ordered by
 * column name (a `Row` is a map, so the key's column order is not sent).
 */
export function keyOf(key: Row | undefined): Key {
  const columns = key?.columns ?? {};
  const names = Object.keys(columns).sort();
  const parts = names.map((name) => keyPart(columns[name]));
  if (parts.length === 1) {
    return parts[0] as Key;
  }
  return JSON.stringify(parts, (_, v: unknown) => (typeof v === "bigint" ? v.toString() : v));
}
