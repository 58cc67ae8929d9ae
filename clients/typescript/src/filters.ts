/**
 * Filter builders: expressions that build the protocol's `Filter` message.
 *
 * ```ts
 * import { col, path, key, header, numeric } from "@feedgate/client";
 *
 * const openOrders = col("status").eq("open").and(col("account").oneOf([1, 2]), col("amount").gt(numeric("10")));
 * await client.subscribeTable("orders", { filter: openOrders });
 *
 * const oil = path("commodity").eq("oil").and(path("regions").eq("north_sea")); // any item of a JSON list
 * await client.subscribeTopic("prices", { filter: oil.or(key().eq("k1")) });
 * ```
 *
 * An operand (`col` for tables; `path`, `key`, `header` for topics) with `eq`, `ne`, `lt`, `le`,
 * `gt`, `ge`, `oneOf`, `isNull`, `isNotNull` or `startsWith` gives a {@link Filter}; filters
 * combine with `and`, `or` and `not` (two-valued: `col("x").eq(1).not()` holds where x is NULL),
 * or {@link allOf} / {@link anyOf}. Values: boolean, number (an integer is sent as `int`, else
 * `double`), bigint, string, `Date` (timestamptz), and {@link numeric} for exact decimals. `null`
 * and `undefined` throw: test for NULL with `isNull()`. The server checks the rest and answers
 * VALIDATION naming the part at fault. What the server does with a filter:
 * docs/changefeeds.md#filters and docs/brokers.md#filters.
 */

import { create } from "@bufbuild/protobuf";
import {
  CompareOp,
  type Filter as FilterMessage,
  FilterSchema,
  type Operand as OperandMessage,
  OperandSchema,
  type Value,
  ValueSchema,
} from "./gen/feedgate/v1/feedgate_pb.js";

/** An exact decimal value (a numeric column), as text: `numeric("12.50")`. */
export interface Numeric {
  readonly numeric: string;
}

/** An exact decimal value for comparisons with numeric columns or JSON numbers. */
export function numeric(text: string): Numeric {
  return { numeric: text };
}

/** What a comparison may compare with. */
export type FilterValue = boolean | number | bigint | string | Date | Numeric;

/** A predicate; `message` is the protocol's `Filter`. */
export class Filter {
  constructor(readonly message: FilterMessage) {}

  /** Holds when this and every one of `others` do. */
  and(...others: Filter[]): Filter {
    return allOf(this, ...others);
  }

  /** Holds when this or any of `others` does. */
  or(...others: Filter[]): Filter {
    return anyOf(this, ...others);
  }

  /** Holds when this does not (two-valued: also where this is not true because of a NULL). */
  not(): Filter {
    return new Filter(create(FilterSchema, { node: { case: "negate", value: this.message } }));
  }
}

/** Holds when every one of `filters` does (none: always). */
export function allOf(...filters: Filter[]): Filter {
  const items = filters.map((f) => f.message);
  return new Filter(create(FilterSchema, { node: { case: "allOf", value: { items } } }));
}

/** Holds when at least one of `filters` does (none: never). */
export function anyOf(...filters: Filter[]): Filter {
  const items = filters.map((f) => f.message);
  return new Filter(create(FilterSchema, { node: { case: "anyOf", value: { items } } }));
}

/** What a comparison reads; build one with {@link col}, {@link path}, {@link key} or {@link header}. */
export class Operand {
  constructor(private readonly operand: OperandMessage) {}

  private compare(op: CompareOp, value: FilterValue): Filter {
    const comparison = { operand: this.operand, op, value: toValue(value) };
    return new Filter(create(FilterSchema, { node: { case: "compare", value: comparison } }));
  }

  eq(value: FilterValue): Filter {
    return this.compare(CompareOp.EQ, value);
  }
  ne(value: FilterValue): Filter {
    return this.compare(CompareOp.NE, value);
  }
  lt(value: FilterValue): Filter {
    return this.compare(CompareOp.LT, value);
  }
  le(value: FilterValue): Filter {
    return this.compare(CompareOp.LE, value);
  }
  gt(value: FilterValue): Filter {
    return this.compare(CompareOp.GT, value);
  }
  ge(value: FilterValue): Filter {
    return this.compare(CompareOp.GE, value);
  }

  /** Equals one of `values` (SQL's IN). */
  oneOf(values: Iterable<FilterValue>): Filter {
    const oneOf = { operand: this.operand, values: [...values].map(toValue) };
    return new Filter(create(FilterSchema, { node: { case: "oneOf", value: oneOf } }));
  }

  /** Is NULL (a JSON null, for a payload path). */
  isNull(): Filter {
    const isNull = { operand: this.operand, negated: false };
    return new Filter(create(FilterSchema, { node: { case: "isNull", value: isNull } }));
  }

  /** Is not NULL. */
  isNotNull(): Filter {
    const isNull = { operand: this.operand, negated: true };
    return new Filter(create(FilterSchema, { node: { case: "isNull", value: isNull } }));
  }

  /** Its text starts with `prefix` (byte-wise; no wildcards). */
  startsWith(prefix: string): Filter {
    const value = { operand: this.operand, prefix };
    return new Filter(create(FilterSchema, { node: { case: "prefix", value } }));
  }
}

/** A table's column. */
export function col(name: string): Operand {
  return new Operand(create(OperandSchema, { of: { case: "column", value: name } }));
}

/** A dot path into a topic message's JSON payload ("user.id"; "" is the whole payload). */
export function path(dotted: string): Operand {
  return new Operand(create(OperandSchema, { of: { case: "path", value: dotted } }));
}

/** A topic message's key. */
export function key(): Operand {
  return new Operand(create(OperandSchema, { of: { case: "key", value: true } }));
}

/** A topic message's header. */
export function header(name: string): Operand {
  return new Operand(create(OperandSchema, { of: { case: "header", value: name } }));
}

/** A filter value as the protocol's `Value`. */
export function toValue(value: FilterValue): Value {
  if (value === null || value === undefined) {
    throw new TypeError("null compares with nothing: use isNull() or isNotNull()");
  }
  switch (typeof value) {
    case "boolean":
      return create(ValueSchema, { kind: { case: "bool", value } });
    case "bigint":
      return create(ValueSchema, { kind: { case: "int", value } });
    case "number":
      return Number.isSafeInteger(value)
        ? create(ValueSchema, { kind: { case: "int", value: BigInt(value) } })
        : create(ValueSchema, { kind: { case: "double", value } });
    case "string":
      return create(ValueSchema, { kind: { case: "text", value } });
  }
  if (value instanceof Date) {
    const micros = BigInt(value.getTime()) * 1000n;
    return create(ValueSchema, { kind: { case: "timestampMicros", value: micros } });
  }
  if (typeof value === "object" && "numeric" in value) {
    return create(ValueSchema, { kind: { case: "numeric", value: value.numeric } });
  }
  throw new TypeError(`cannot compare with ${String(value)}`);
}
