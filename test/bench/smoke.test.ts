/**
 * The bench must not rot: a tiny run of the real harness (built service, bare server, h2load,
 * gRPC sampling, RESULTS rendering) in a few seconds, written to a temporary file so
 * bench/RESULTS.md is never touched.
 *
 * Needs h2load (Debian: nghttp2-client). Missing h2load skips locally, but fails under CI
 * (process.env.CI), where the bench is expected to run.
 */
import { execFileSync, spawn } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { assertBuilt, ROOT } from "../support/service.js";

function h2loadAvailable(): boolean {
  try {
    execFileSync(process.env.H2LOAD ?? "h2load", ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

const HAS_H2LOAD = h2loadAvailable();
const RESULTS = join(ROOT, "bench/RESULTS.md");

function run(command: string, args: string[], env: Record<string, string>, timeoutMs: number): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: ROOT, env, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.setEncoding("utf8").on("data", (c: string) => (output += c));
    child.stderr.setEncoding("utf8").on("data", (c: string) => (output += c));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${command} ${args.join(" ")} did not finish in ${timeoutMs} ms\n${output}`));
    }, timeoutMs);
    child.once("close", (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

/** Numbers of the scenario table rows (service req/s, bare req/s, ratio, p50, p99, ...). */
function tableRows(markdown: string): string[][] {
  const lines = markdown.split("\n");
  const header = lines.findIndex((l) => l.startsWith("| scenario | load (conns × streams) |"));
  if (header < 0) return [];
  const rows: string[][] = [];
  for (const line of lines.slice(header + 2)) {
    if (!line.startsWith("|")) break;
    rows.push(line.split("|").slice(1, -1).map((c) => c.trim()));
  }
  return rows;
}

function numberOf(cell: string | undefined): number {
  return Number((cell ?? "").replace(/[,×%]/g, ""));
}

describe("bench smoke run", () => {
  let dir: string;
  const cleanups: (() => Promise<void>)[] = [];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "bench-smoke-"));
  });

  afterAll(async () => {
    for (const cleanup of cleanups) await cleanup();
    await rm(dir, { recursive: true, force: true });
  });

  it("h2load is installed wherever CI runs the bench smoke test", () => {
    if (process.env.CI && !HAS_H2LOAD) {
      throw new Error("h2load is missing: CI must install nghttp2-client (apt-get install -y nghttp2-client) so the bench smoke run cannot rot");
    }
    if (!HAS_H2LOAD) console.warn("h2load not installed: the bench smoke run is skipped (CI fails instead)");
  });

  it.skipIf(!HAS_H2LOAD)(
    "a tiny bench run measures the service and the bare server and writes a RESULTS table with numbers > 0, leaving bench/RESULTS.md alone",
    async () => {
      assertBuilt();
      const resultsBefore = existsSync(RESULTS) ? statSync(RESULTS).mtimeMs : undefined;
      // Its own output directory: compiling into dist/ would rewrite dist/src/gen while other
      // test files run the built service from it.
      const outDir = join(ROOT, "dist", `bench-smoke-${process.pid}`);
      const tsc = join(ROOT, "node_modules/.bin/tsc");
      const compiled = await run(tsc, ["-p", "bench/tsconfig.json", "--outDir", outDir], { PATH: process.env.PATH ?? "" }, 60_000);
      cleanups.push(() => rm(outDir, { recursive: true, force: true }));
      expect(compiled.output).toBe("");
      expect(compiled.code).toBe(0);

      const out = join(dir, "RESULTS.md");
      const env: Record<string, string> = { PATH: process.env.PATH ?? "" };
      if (process.env.DATABASE_URL) env.DATABASE_URL = process.env.DATABASE_URL;
      if (process.env.H2LOAD) env.H2LOAD = process.env.H2LOAD;
      const bench = await run(process.execPath, [join(outDir, "bench/run.js"), "--smoke", "--out", out], env, 90_000);
      expect(bench.code, bench.output).toBe(0);

      const markdown = await readFile(out, "utf8");
      const rows = tableRows(markdown);
      expect(rows.map((r) => `${r[0]} ${r[1]}`)).toEqual(["Check boolean 16 × 32", "Check boolean 4 × 4"]);
      for (const row of rows) {
        const [serviceRate, bareRate, ratio, p50, p99, bareP50, bareP99] = [2, 3, 4, 5, 6, 7, 8].map((i) => numberOf(row[i]));
        expect(serviceRate).toBeGreaterThan(0);
        expect(bareRate).toBeGreaterThan(0);
        expect(ratio).toBeGreaterThan(0);
        expect(p50).toBeGreaterThan(0);
        expect(p99).toBeGreaterThanOrEqual(p50 ?? 0);
        expect(bareP50).toBeGreaterThan(0);
        expect(bareP99).toBeGreaterThanOrEqual(bareP50 ?? 0);
        // 7 of 8 bodies are allowed; the denied one is FEATURE_NOT_ENTITLED.
        expect(numberOf(row[10])).toBeGreaterThan(50);
      }
      expect(markdown).toContain("| Check boolean throughput ≥ 0.85 × bare (16 × 32) |");
      expect(markdown).toContain("check-boolean: 7/8 bodies allowed");
      // Both servers under the service's production Node flags, and the commands say so.
      const flags = (JSON.parse(await readFile(join(ROOT, "package.json"), "utf8")) as { config: { nodeFlags: string } }).config.nodeFlags;
      expect(markdown).toContain(`under the service's production Node flags, \`${flags}\``);
      expect(markdown).toContain(`node ${flags} dist/src/cli/main.js serve`);
      expect(markdown).toContain(`node ${flags} dist/bench/bare-server.js`);

      const json = JSON.parse(await readFile(join(dir, "RESULTS.json"), "utf8")) as {
        scenarios: { service: { reqPerSec: number; failed: number }[]; bare: { reqPerSec: number }[] }[];
      };
      expect(json.scenarios).toHaveLength(2);
      for (const scenario of json.scenarios) {
        expect(scenario.service[0]?.reqPerSec).toBeGreaterThan(0);
        expect(scenario.service[0]?.failed).toBe(0);
        expect(scenario.bare[0]?.reqPerSec).toBeGreaterThan(0);
      }
      expect(existsSync(RESULTS) ? statSync(RESULTS).mtimeMs : undefined).toBe(resultsBefore);
    },
    120_000,
  );
});
