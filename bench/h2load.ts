/**
 * Drives HTTP/2 load with h2load (nghttp2-client) and reads its results.
 *
 * h2load sends one request body per process, so a mix of requests is several h2load processes
 * started together, each with its own pre-encoded gRPC body and its share of the connections;
 * their throughputs add up. Latency comes from h2load's --log-file (one row per request:
 * start time µs, HTTP status, duration µs), pooled over the processes of a mix.
 *
 * h2load sees only HTTP: a gRPC error is still HTTP 200 with grpc-status in the trailers, so
 * what the service decided is checked separately with a gRPC client (grpc-probe.ts).
 */
import { spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { percentile } from "./stats.js";

/** One h2load process of a mix. */
export interface LoadPart {
  readonly tag: string;
  /** File holding the request body (one gRPC frame). */
  readonly bodyFile: string;
  /** Connections (h2load -c). */
  readonly clients: number;
  /** Concurrent streams per connection (h2load -m). */
  readonly streams: number;
  /** Requests per second per connection (h2load --rps); absent: as fast as answers come. */
  readonly rps?: number;
  /** Whether the service should allow this body (for the reported allowed share). */
  readonly expectAllowed: boolean;
  /** Target port (parts of one mix may address different replicas). */
  readonly port: number;
}

/** Duration-bounded (-D, after a warm-up) or count-bounded (-n per part). */
export type LoadBound =
  | { readonly kind: "duration"; readonly seconds: number; readonly warmupSeconds: number }
  | { readonly kind: "requests"; readonly perClient: number };

export interface LoadSpec {
  readonly h2load: string;
  /** Method path, e.g. /licensing.v1.LicensingService/Check. */
  readonly path: string;
  readonly parts: readonly LoadPart[];
  readonly bound: LoadBound;
  /**
   * CPU list for taskset (e.g. "0"). Absent: not pinned, and h2load runs at nice 19 (UNPINNED_NICE)
   * so that, sharing CPUs with the servers it measures, it yields them.
   */
  readonly cpus?: string;
  /** Directory for per-request log files; absent: no latency figures. */
  readonly logDir?: string;
  /** Kills h2load if it runs longer than this, ms. */
  readonly timeoutMs: number;
}

export interface PartResult {
  readonly tag: string;
  readonly reqPerSec: number;
  readonly succeeded: number;
  readonly failed: number;
  readonly errored: number;
  /** HTTP 3xx/4xx/5xx answers (a gRPC server answers 200 even for errors). */
  readonly statusNot2xx: number;
  readonly expectAllowed: boolean;
}

export interface LoadResult {
  /** Sum over the parts. */
  readonly reqPerSec: number;
  readonly succeeded: number;
  /** Requests that did not complete with HTTP 2xx (failed, errored, timed out). */
  readonly failed: number;
  /** Share of completed requests sent with a body the service allows, 0..1. */
  readonly allowedShare: number;
  /** Milliseconds; present when logDir was given. */
  readonly p50Ms?: number;
  readonly p99Ms?: number;
  readonly parts: readonly PartResult[];
  /** The command lines run, for RESULTS.md. */
  readonly commands: readonly string[];
}

/** h2load's arguments for one part (without the taskset prefix). */
export function h2loadArgs(spec: LoadSpec, part: LoadPart, logFile: string | undefined): string[] {
  const args = [
    `-c${part.clients}`,
    `-m${part.streams}`,
    "-t1",
    "-d",
    part.bodyFile,
    "-H",
    "content-type: application/grpc",
    "-H",
    "te: trailers",
  ];
  if (spec.bound.kind === "duration") {
    args.push(`-D${spec.bound.seconds}`);
    if (spec.bound.warmupSeconds > 0) args.push(`--warm-up-time=${spec.bound.warmupSeconds}`);
  }
  else args.push(`-n${spec.bound.perClient * part.clients}`);
  if (part.rps !== undefined) args.push(`--rps=${part.rps}`);
  if (logFile !== undefined) args.push(`--log-file=${logFile}`);
  args.push(`http://127.0.0.1:${part.port}${spec.path}`);
  return args;
}

/**
 * Niceness of an unpinned h2load. Sharing both CPUs with two busy server processes (the workers
 * part), h2load at the default priority took CPU the servers were measured on: at nice 19 the
 * servers got about 5% more of the two CPUs (6.7 against 6.3 CPU-seconds in a 4.3 s run). It
 * keeps its streams full all the same: a server that runs out of requests idles, and h2load runs.
 */
const UNPINNED_NICE = 19;

/** Runs every part at once and sums the results. Rejects if any h2load fails to run. */
export async function runLoad(spec: LoadSpec): Promise<LoadResult> {
  const commands: string[] = [];
  const runs = spec.parts.map((part, i) => {
    const logFile = spec.logDir === undefined ? undefined : join(spec.logDir, `part-${i}.log`);
    const args = h2loadArgs(spec, part, logFile);
    const [command, argv] =
      spec.cpus === undefined ? ["nice", ["-n", String(UNPINNED_NICE), spec.h2load, ...args]] : ["taskset", ["-c", spec.cpus, spec.h2load, ...args]];
    commands.push([command, ...argv].map(shellQuote).join(" "));
    return runProcess(command, argv, spec.timeoutMs).then((output) => ({ part, logFile, result: parseH2loadOutput(part, output) }));
  });
  const finished = await Promise.all(runs);
  const parts = finished.map((f) => f.result);
  // "succeeded" covers the measured phase; the status counts also include the warm-up.
  const succeeded = sum(parts.map((p) => p.succeeded));
  const allowed = sum(parts.filter((p) => p.expectAllowed).map((p) => p.succeeded));
  const result: LoadResult = {
    reqPerSec: sum(parts.map((p) => p.reqPerSec)),
    succeeded,
    failed: sum(parts.map((p) => p.failed + p.errored + p.statusNot2xx)),
    allowedShare: succeeded === 0 ? 0 : allowed / succeeded,
    parts,
    commands,
  };
  const logFiles = finished.map((f) => f.logFile).filter((f): f is string => f !== undefined);
  if (logFiles.length === 0) return result;
  const latenciesUs = await readLatencies(logFiles);
  return { ...result, p50Ms: percentile(latenciesUs, 0.5) / 1000, p99Ms: percentile(latenciesUs, 0.99) / 1000 };
}

/** The per-request durations (µs) of h2load log files; rows are `start_us \t status \t duration_us`. */
export async function readLatencies(files: readonly string[]): Promise<Float64Array> {
  const values: number[] = [];
  for (const file of files) {
    const text = await readFile(file, "utf8");
    for (const line of text.split("\n")) {
      if (line === "") continue;
      const columns = line.split("\t");
      const duration = Number(columns[2]);
      if (columns.length >= 3 && Number.isFinite(duration)) values.push(duration);
    }
  }
  return Float64Array.from(values).sort();
}

const FINISHED = /finished in [\d.]+\w*, ([\d.]+) req\/s/;
const REQUESTS = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/;
const STATUS = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/;

/** Reads h2load's summary; throws with the output when it is not there. */
export function parseH2loadOutput(part: Pick<LoadPart, "tag" | "expectAllowed">, output: string): PartResult {
  const finished = FINISHED.exec(output);
  const requests = REQUESTS.exec(output);
  const status = STATUS.exec(output);
  if (finished === null || requests === null || status === null) {
    throw new Error(`h2load (${part.tag}) printed no summary:\n${output}`);
  }
  return {
    tag: part.tag,
    reqPerSec: Number(finished[1]),
    succeeded: Number(requests[4]),
    failed: Number(requests[5]),
    errored: Number(requests[6]) + Number(requests[7]),
    statusNot2xx: Number(status[2]) + Number(status[3]) + Number(status[4]),
    expectAllowed: part.expectAllowed,
  };
}

/** Runs a command to completion; resolves stdout+stderr, rejects on a non-zero exit or timeout. */
export function runProcess(command: string, args: readonly string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (output += chunk));
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (output += chunk));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${command} ${args.join(" ")} ran longer than ${timeoutMs} ms\n${output}`));
    }, timeoutMs);
    child.once("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    // "close", not "exit": exit can come before the last of stdout has been read.
    child.once("close", (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(output);
      else reject(new Error(`${command} exited with ${code}\n${output}`));
    });
  });
}

function sum(values: readonly number[]): number {
  let total = 0;
  for (const v of values) total += v;
  return total;
}

function shellQuote(word: string): string {
  return /^[\w./:=,-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}
