// Vitest runs only the tests written for it (test/vitest/*.spec.ts): they check that
// @feedgate/client/testing works with Vitest's hooks and reports. Everything else is
// node:test (test/run.mjs runs both).
import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/vitest/**/*.spec.ts"],
    hookTimeout: 120_000,
    testTimeout: 60_000,
  },
});
