// Builds the dashboard into the repository's ui/ (index.html, dashboard.css, dashboard.js),
// which the server embeds (src/dashboard.rs). Run after changing the dashboard or the client:
//   cd clients/typescript && npm run dashboard
// The output is committed (a build of feedgate needs no Node.js); the TypeScript client's test
// suite fails when it is stale (test/dashboard.test.ts).
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
export const outDir = join(here, "..", "..", "..", "..", "ui");

/** The built files by name, as they belong in ui/. */
export async function bundle() {
  const result = await build({
    entryPoints: [join(here, "src", "main.ts")],
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    minify: true,
    legalComments: "none",
    write: false,
  });
  return {
    "index.html": readFileSync(join(here, "index.html"), "utf8"),
    "dashboard.css": readFileSync(join(here, "dashboard.css"), "utf8"),
    "dashboard.js": "// Built from clients/typescript/examples/dashboard by its build.mjs: do not edit.\n" +
      result.outputFiles[0].text,
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const built = Object.entries(await bundle());
  if (process.argv.includes("--check")) {
    const read = (name) => {
      try {
        return readFileSync(join(outDir, name), "utf8");
      } catch {
        return undefined;
      }
    };
    const stale = built.filter(([name, text]) => read(name) !== text).map(([name]) => `ui/${name}`);
    if (stale.length > 0) {
      console.error(`stale: ${stale.join(", ")}; run: cd clients/typescript && npm run dashboard`);
      process.exit(1);
    }
  } else {
    for (const [name, text] of built) writeFileSync(join(outDir, name), text);
    console.log(`wrote ${outDir}`);
  }
}
