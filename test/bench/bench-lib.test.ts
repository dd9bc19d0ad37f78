/**
 * The bench's parsing and counting, without running any load: what it reads from h2load, what
 * it counts on the PostgreSQL wire, how it summarizes a CPU profile, and that the ghz configs
 * still describe real methods and messages.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createRegistry, fromBinary, fromJson, type JsonValue } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { file_envoy_service_auth_v3_external_auth } from "../../src/gen/envoy/service/auth/v3/external_auth_pb.js";
import { CheckRequestSchema, file_licensing_v1_licensing } from "../../src/gen/licensing/v1/licensing_pb.js";
import { h2loadArgs, parseH2loadOutput } from "../../bench/h2load.js";
import { codeCommit } from "../../bench/machine.js";
import { FrontendStreamParser } from "../../bench/pg-counter.js";
import { FULL_RUN_PARTS, parseOptions } from "../../bench/run.js";
import { summarizeProfile, type CpuProfile } from "../../bench/profile-summary.js";
import { evaluateTargets, scenarioTable, type BenchResults } from "../../bench/results.js";
import { median, medianRatio, pairedRatios, percentile } from "../../bench/stats.js";
import { partsFor, type Scenario } from "../../bench/scenarios.js";
import { checkMix, grpcFrame } from "../../bench/workload.js";
import { ROOT } from "../support/service.js";

const H2LOAD_OUTPUT = `finished in 3.00s, 18608.00 req/s, 2.61MB/s
requests: 37216 total, 37216 started, 37216 done, 37216 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 37280 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 5.23MB (5479600) total, 252.19KB (258238) headers (space savings 96.40%), 5.56MB (5828992) data
`;

describe("bench options", () => {
  it("runs everything by default and only the named parts with --only", () => {
    expect(parseOptions([], {}).only).toBeUndefined();
    const only = parseOptions(["--only", "ext-authz-16x32, profile-ext-authz"], {}).only;
    expect(only === undefined ? [] : [...only]).toEqual(["ext-authz-16x32", "profile-ext-authz"]);
  });

  it("refuses an --only part a full run does not have, naming the ones it does", () => {
    expect(() => parseOptions(["--only", "check-boolean-16x32,ext-authz"], {})).toThrow(/--only takes a comma-separated list of check-boolean-16x32, .*profile-ext-authz; got "check-boolean-16x32,ext-authz"/);
    expect(() => parseOptions(["--only", ","], {})).toThrow(/--only/);
    expect(() => parseOptions(["--smoke", "--only", "profile"], {})).toThrow("--only cannot be combined with --smoke");
    expect(parseOptions(["--render", "bench/RESULTS.json"], {}).render).toMatch(/\/bench\/RESULTS\.json$/);
    expect(FULL_RUN_PARTS).toContain("statements");
  });
});

describe("h2load results", () => {
  it("reads req/s, completed requests and non-2xx answers from h2load's summary", () => {
    expect(parseH2loadOutput({ tag: "t", expectAllowed: true }, H2LOAD_OUTPUT)).toEqual({
      tag: "t",
      reqPerSec: 18608,
      succeeded: 37216,
      failed: 0,
      errored: 0,
      statusNot2xx: 0,
      expectAllowed: true,
    });
  });

  it("refuses output without a summary rather than reporting zero", () => {
    expect(() => parseH2loadOutput({ tag: "t", expectAllowed: true }, "progress: 50% done\n")).toThrow(/printed no summary/);
  });

  it("sends the body as a gRPC POST with content-type application/grpc and te: trailers", () => {
    const args = h2loadArgs(
      { h2load: "h2load", path: "/licensing.v1.LicensingService/Check", parts: [], bound: { kind: "duration", seconds: 3, warmupSeconds: 1 }, timeoutMs: 1 },
      { tag: "t", bodyFile: "/tmp/b.bin", clients: 2, streams: 32, expectAllowed: true, port: 5000 },
      "/tmp/log",
    );
    expect(args).toEqual([
      "-c2",
      "-m32",
      "-t1",
      "-d",
      "/tmp/b.bin",
      "-H",
      "content-type: application/grpc",
      "-H",
      "te: trailers",
      "-D3",
      "--warm-up-time=1",
      "--log-file=/tmp/log",
      "http://127.0.0.1:5000/licensing.v1.LicensingService/Check",
    ]);
  });
});

describe("request bodies and mixes", () => {
  it("frames a message as flag 0, 4-byte big-endian length, then the protobuf bytes", () => {
    const frame = grpcFrame(CheckRequestSchema, { credential: { case: "apiKey", value: "lk_live_x" }, feature: "bench.flag" });
    expect(frame[0]).toBe(0);
    expect(frame.readUInt32BE(1)).toBe(frame.length - 5);
    expect(fromBinary(CheckRequestSchema, frame.subarray(5)).feature).toBe("bench.flag");
  });

  it("splits 16 × 32 into 8 processes of 2 connections, 7 allowed and 1 denied", () => {
    const secrets = Array.from({ length: 1000 }, (_, i) => `lk_live_${i}`);
    const bodies = checkMix("quota", secrets, 7, 1);
    const mix = { id: "m", path: "/p", response: "check" as const, bodies, bodyFiles: bodies.map((_, i) => `/b${i}`) };
    const throughput: Scenario = { id: "t", title: "t", mix, shape: "16x32" };
    const parts = partsFor(throughput, [1], 0);
    expect(parts.map((p) => p.clients * p.streams)).toEqual(Array(8).fill(64));
    expect(parts.filter((p) => p.expectAllowed)).toHaveLength(7);
    // Seven different keys, on seven different licences (keys are spread round-robin over 200).
    expect(new Set(bodies.slice(0, 7).map((b) => b.label)).size).toBe(7);
    const latency = partsFor({ ...throughput, shape: "4x4" }, [1], 1500);
    expect(latency.map((p) => [p.clients, p.streams, p.expectAllowed, p.rps])).toEqual([
      [1, 4, true, undefined],
      [1, 4, true, undefined],
      [1, 4, true, undefined],
      [1, 4, false, 1500],
    ]);
  });
});

describe("PostgreSQL round-trip counting", () => {
  function message(type: string, payload = Buffer.alloc(0)): Buffer {
    const head = Buffer.alloc(5);
    head.write(type, 0, "latin1");
    head.writeUInt32BE(4 + payload.length, 1);
    return Buffer.concat([head, payload]);
  }

  it("counts each simple Query and each Sync once, after the startup packet, however the bytes are split", () => {
    const startup = Buffer.alloc(8);
    startup.writeUInt32BE(8, 0);
    startup.writeUInt32BE(196608, 4);
    const stream = Buffer.concat([
      startup,
      message("p", Buffer.from("secret\0")),
      message("Q", Buffer.from("begin\0")),
      message("P", Buffer.from("\0select 1\0\0\0")),
      message("B", Buffer.alloc(10)),
      message("E", Buffer.alloc(5)),
      message("S"),
      message("Q", Buffer.from("commit\0")),
    ]);
    const parser = new FrontendStreamParser();
    for (let i = 0; i < stream.length; i += 3) parser.push(stream.subarray(i, i + 3));
    expect(parser.roundTrips).toBe(3);
  });
});

describe("profile summary", () => {
  it("attributes sample time to functions and areas, ignores idle and samples before the offset", () => {
    const profile: CpuProfile = {
      nodes: [
        { id: 1, callFrame: { functionName: "(root)", url: "", lineNumber: -1, columnNumber: -1 } },
        { id: 2, callFrame: { functionName: "(idle)", url: "", lineNumber: -1, columnNumber: -1 } },
        { id: 3, callFrame: { functionName: "respond", url: "node:internal/http2/core", lineNumber: 10, columnNumber: 1 } },
        { id: 4, callFrame: { functionName: "(garbage collector)", url: "", lineNumber: -1, columnNumber: -1 } },
      ],
      samples: [3, 3, 2, 3, 4, 2],
      timeDeltas: [1000, 1000, 1000, 1000, 1000, 1000],
    };
    const summary = summarizeProfile(profile, ROOT, { fromOffsetMs: 1.5 });
    // The first sample (at 1 ms) is before the offset; then respond ×2, idle ×2, GC ×1.
    expect(summary.idleMs).toBe(2);
    expect(summary.busyMs).toBe(3);
    expect(summary.areas.map((a) => [a.area, a.selfMs, Math.round(a.percent)])).toEqual([
      ["node:http2", 2, 67],
      ["(garbage collector)", 1, 33],
    ]);
    expect(summary.functions[0]?.name).toBe("respond (node:internal/http2/core:11)");
  });
});

describe("the code measured", () => {
  it("names the commit, says when tracked files were changed, and says when there is no checkout", () => {
    const dir = mkdtempSync(join(tmpdir(), "bench-commit-"));
    try {
      expect(codeCommit(dir)).toBe("(not a git checkout)");
      const git = (...args: string[]) => execFileSync("git", ["-c", "user.name=t", "-c", "user.email=t@example.com", ...args], { cwd: dir, stdio: "pipe" }).toString().trim();
      git("init", "-q");
      writeFileSync(join(dir, "a.txt"), "1");
      git("add", "a.txt");
      git("commit", "-qm", "first");
      const head = git("rev-parse", "--short", "HEAD");
      writeFileSync(join(dir, "untracked.txt"), "x");
      expect(codeCommit(dir)).toBe(head);
      writeFileSync(join(dir, "a.txt"), "2");
      expect(codeCommit(dir)).toBe(`${head} with uncommitted changes`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("statistics", () => {
  it("takes medians, nearest-rank percentiles and medians of paired ratios", () => {
    expect(median([5, 1, 3])).toBe(3);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(percentile(Float64Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]), 0.99)).toBe(10);
    expect(percentile(Float64Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]), 0.5)).toBe(5);
    expect(medianRatio([10, 30, 20], [20, 30, 10])).toBe(1);
    expect(pairedRatios([10, 30, 20], [20, 0, 10])).toEqual([0.5, 2]);
  });

  it("shows how far the per-repetition throughput ratios spread, next to their median", () => {
    const run = (reqPerSec: number) => ({ reqPerSec, requests: 1000, failed: 0, allowedShare: 0.875 });
    const scenario = {
      id: "check-boolean-16x32",
      title: "Check boolean",
      load: "16 × 32",
      measure: "throughput" as const,
      service: [600, 1070, 800].map(run),
      bare: [1000, 1000, 1000].map(run),
    };
    const row = scenarioTable([scenario]).split("\n")[2]?.split("|").map((c) => c.trim());
    expect(row?.[5]).toBe("0.80×");
    expect(row?.[13]).toBe("0.60–1.07×");
  });

  it("shows a third decimal where two would round a missed target onto its threshold", () => {
    const run = (reqPerSec: number) => ({ reqPerSec, requests: 1000, failed: 0, allowedShare: 0.875 });
    const throughput = (id: string, service: number) => ({
      id,
      title: id,
      load: "16 × 32",
      measure: "throughput" as const,
      service: [run(service)],
      bare: [run(1000)],
    });
    const results = {
      scenarios: [throughput("check-boolean-16x32", 846), throughput("check-quota-16x32", 850), throughput("check-rate-16x32", 910)],
      extras: [],
      skipped: [],
      workers: undefined,
      statements: undefined,
    } as unknown as BenchResults;
    const measured = evaluateTargets(results).slice(0, 3).map((t) => [t.measured.split(" ")[0], t.status]);
    expect(measured).toEqual([
      ["0.846×", "MISS"],
      ["0.85×", "PASS"],
      ["0.91×", "PASS"],
    ]);
  });
});

describe("ghz configs", () => {
  const registry = createRegistry(file_licensing_v1_licensing, file_envoy_service_auth_v3_external_auth);
  const dir = join(ROOT, "bench/ghz");
  const files = readdirSync(dir).filter((f) => f.endsWith(".json"));

  it("cover Check, quota Check, ext_authz and Report", () => {
    expect(files.sort()).toEqual(["check-quota.json", "check.json", "ext-authz.json", "report.json"]);
  });

  it.each(files)("%s calls a served method with data its request message accepts (templates filled in)", (file) => {
    const config = JSON.parse(readFileSync(join(dir, file), "utf8")) as { call: string; host: string; insecure: boolean; data: JsonValue; proto?: string };
    // Reflection only: no proto or protoset.
    expect(config.proto).toBeUndefined();
    expect(config.insecure).toBe(true);
    const serviceName = config.call.slice(0, config.call.lastIndexOf("."));
    const methodName = config.call.slice(config.call.lastIndexOf(".") + 1);
    const service = registry.getService(serviceName);
    const method = service?.methods.find((m) => m.name === methodName);
    expect(method, config.call).toBeDefined();
    const filled = JSON.parse(JSON.stringify(config.data).replace(/\{\{[^}]*\}\}/g, "x")) as JsonValue;
    if (method !== undefined) expect(() => fromJson(method.input, filled)).not.toThrow();
  });
});
