// The committed generated code matches what the pinned protoc-gen-es makes of the schema.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const generated = "src/gen/feedgate/v1/feedgate_pb.ts";

test("the generated code is current", () => {
  const out = mkdtempSync(join(tmpdir(), "feedgate-gen-"));
  try {
    execFileSync(
      join(root, "node_modules", ".bin", "buf"),
      ["generate", "../../proto", "--template", "buf.gen.yaml", "--output", out],
      { cwd: root, env: { ...process.env, PATH: `${join(root, "node_modules", ".bin")}:${process.env.PATH}` } },
    );
    const fresh = readFileSync(join(out, generated), "utf8");
    const committed = readFileSync(join(root, generated), "utf8");
    assert.ok(fresh === committed, `${generated} is stale: run npm run generate in clients/typescript`);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
