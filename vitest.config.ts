import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Each test file owns its data (a fresh PGlite, or a fresh PostgreSQL database), so files
    // run in parallel safely; forks isolate PGlite's WASM heaps from one another.
    pool: "forks",
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // CI also writes a machine-readable report that .ci/run turns into "N passed, N failed".
    reporters: process.env.CI ? ["default", "json"] : ["default"],
    outputFile: { json: ".vitest-results.json" },
  },
});
