/**
 * A server configuration object written out as TOML, for `ServerOptions.config`: scalars and
 * arrays, then each nested object as a `[table]`. Enough for feedgate's configuration file;
 * not a general TOML writer (no dates, no arrays of tables).
 */

export type TomlValue = string | number | boolean | TomlValue[] | TomlTable;
export interface TomlTable {
  [key: string]: TomlValue;
}

/** `table` as TOML text. */
export function toToml(table: TomlTable): string {
  const out: string[] = [];
  writeTable(table, [], out);
  return `${out.join("\n")}\n`;
}

function isTable(value: TomlValue): value is TomlTable {
  return typeof value === "object" && !Array.isArray(value);
}

function writeTable(table: TomlTable, path: string[], out: string[]): void {
  const entries = Object.entries(table);
  const nested = entries.filter(([, value]) => isTable(value));
  if (path.length > 0 && nested.length < entries.length) out.push(`[${path.map(key).join(".")}]`);
  for (const [name, value] of entries) if (!isTable(value)) out.push(`${key(name)} = ${scalar(value)}`);
  for (const [name, value] of nested) writeTable(value as TomlTable, [...path, name], out);
}

function key(name: string): string {
  return /^[A-Za-z0-9_-]+$/.test(name) ? name : JSON.stringify(name);
}

function scalar(value: TomlValue): string {
  if (Array.isArray(value)) return `[${value.map(scalar).join(", ")}]`;
  if (typeof value === "string") return JSON.stringify(value); // a JSON string is a TOML basic string
  if (typeof value === "number" && !Number.isFinite(value)) throw new TypeError(`no TOML form for ${value}`);
  return String(value);
}
