// Runs the compiled tests (build/test/*.test.js) with node's test runner, then the Vitest ones
// (test/vitest/*.spec.ts, see vitest.config.mjs), both always; fails if either failed. Node 20 has
// the standard WebSocket only behind --experimental-websocket (Node 22+ has it by default).
import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const dir = join(root, "build", "test");
const files = readdirSync(dir)
  .filter((name) => name.endsWith(".test.js"))
  .map((name) => join(dir, name));
const major = Number(process.versions.node.split(".")[0]);
const options = major < 22 ? "--experimental-websocket" : "";
const env = { ...process.env, NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ""} ${options}`.trim() };
const node = spawnSync(process.execPath, ["--test", ...files], { stdio: "inherit", env, cwd: root });
const vitest = spawnSync(process.execPath, [join(root, "node_modules", "vitest", "vitest.mjs"), "run"], {
  stdio: "inherit",
  env,
  cwd: root,
});
process.exit(node.status === 0 && vitest.status === 0 ? 0 : 1);
