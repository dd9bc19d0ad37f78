/**
 * `npm run bench`: measures the built service against a bare grpc-js server in the same run and
 * writes bench/RESULTS.md. See bench/README.md for what each scenario does.
 *
 *   node dist/bench/run.js [--smoke] [--out FILE] [--reps N] [--duration SECONDS] [--no-profile]
 *                          [--only ID,ID,...]
 *   node dist/bench/run.js --render RESULTS.json [--out FILE]   (re-renders a run's results, measures nothing)
 *
 * Environment (read here only): DATABASE_URL (PostgreSQL server; the bench creates and drops its
 * own database on it; unset: the embedded database in a temporary DATA_DIR), H2LOAD (path to
 * h2load, default "h2load").
 *
 * Exit codes: 0 written; 1 the bench failed (nothing written); 2 bad usage.
 */
import { execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, open, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { parseArgs } from "node:util";
import pg from "pg";
import { isImplemented, PATHS, ProbeClient, sampleMix, type SampledBody } from "./grpc-probe.js";
import { runLoad, type LoadBound, type LoadResult } from "./h2load.js";
import { codeCommit, hasH2load, hasTaskset, machineInfo } from "./machine.js";
import { createRoundTripCounter, type RoundTripCounter } from "./pg-counter.js";
import { childPids, productionNodeFlags, repositoryRoot, startBare, startService, type ServerProcess } from "./processes.js";
import { bucketShares, perRequestComparison, profileMarkdown, summarizeProfile, type CpuProfile, type ProfileSummary } from "./profile-summary.js";
import { loadReportBench } from "./report-hook.js";
import {
  renderResults,
  summarizeScenario,
  fmtRate,
  type BenchResults,
  type ExtraResult,
  type Measurement,
  type ScenarioResult,
  type Skipped,
  type StatementsResult,
  type WorkersResult,
} from "./results.js";
import { loadLabel, partsFor, type Mix, type Scenario } from "./scenarios.js";
import { median, medianRatio } from "./stats.js";
import { benchRules, checkMix, extAuthzMix, FEATURES, keyId, scaleMix, type MixBody } from "./workload.js";

const ROOT = repositoryRoot(import.meta.dirname);

export interface BenchOptions {
  readonly mode: "full" | "smoke";
  readonly out: string;
  readonly reps: number;
  /** Measured seconds per run (-D), after warmupSeconds. */
  readonly durationSeconds: number;
  readonly warmupSeconds: number;
  /** Smoke mode: requests per h2load connection (-n), instead of a duration. */
  readonly smokeRequestsPerClient: number;
  readonly databaseUrl: string | undefined;
  readonly h2load: string;
  readonly profile: boolean;
  readonly licences: number;
  readonly keys: number;
  /**
   * Run only these parts (scenario ids such as `check-boolean-16x32`, or `statements`,
   * `workers`, `report`, `scale`, `profile`); undefined: everything. For iterating on one
   * figure: a partial run's RESULTS.md says what it left out.
   */
  readonly only: ReadonlySet<string> | undefined;
  /** Re-render this RESULTS.json (after a change to the report's layout) instead of measuring. */
  readonly render: string | undefined;
}

/** The parts of a full run that `--only` can name besides the scenarios. */
export const EXTRA_PARTS = ["statements", "workers", "report", "scale", "profile", "profile-ext-authz"] as const;

class UsageError extends Error {}

export function parseOptions(argv: readonly string[], env: Readonly<Record<string, string | undefined>>): BenchOptions {
  let values;
  try {
    values = parseArgs({
      args: [...argv],
      options: {
        smoke: { type: "boolean" },
        out: { type: "string" },
        reps: { type: "string" },
        duration: { type: "string" },
        "no-profile": { type: "boolean" },
        only: { type: "string" },
        render: { type: "string" },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const smoke = values.smoke === true;
  const reps = Number(values.reps ?? (smoke ? "1" : "5"));
  const duration = Number(values.duration ?? "3");
  if (!Number.isInteger(reps) || reps < 1 || reps > 50) throw new UsageError(`--reps must be 1-50, got "${values.reps}"`);
  if (!Number.isInteger(duration) || duration < 1 || duration > 600) throw new UsageError(`--duration must be 1-600 seconds, got "${values.duration}"`);
  const only = values.only === undefined ? undefined : parseOnly(values.only);
  if (only !== undefined && smoke) throw new UsageError("--only cannot be combined with --smoke");
  return {
    mode: smoke ? "smoke" : "full",
    out: resolve(values.out ?? join(ROOT, "bench/RESULTS.md")),
    reps,
    durationSeconds: duration,
    warmupSeconds: 1,
    smokeRequestsPerClient: 25,
    databaseUrl: env.DATABASE_URL?.trim() || undefined,
    h2load: env.H2LOAD?.trim() || "h2load",
    profile: !smoke && values["no-profile"] !== true,
    licences: smoke ? 20 : 200,
    keys: smoke ? 100 : 1000,
    only,
    render: values.render === undefined ? undefined : resolve(values.render),
  };
}

/** The ids a full run measures, in order: its scenarios, then the extra parts. */
export const FULL_RUN_PARTS = [
  "check-boolean-16x32",
  "check-boolean-4x4",
  "check-quota-16x32",
  "check-quota-4x4",
  "check-rate-16x32",
  "check-rate-4x4",
  "ext-authz-16x32",
  ...EXTRA_PARTS,
] as const;

function parseOnly(value: string): ReadonlySet<string> {
  const ids = value.split(",").map((id) => id.trim()).filter((id) => id.length > 0);
  const known = new Set<string>(FULL_RUN_PARTS);
  const unknown = ids.filter((id) => !known.has(id));
  if (ids.length === 0 || unknown.length > 0) {
    throw new UsageError(`--only takes a comma-separated list of ${FULL_RUN_PARTS.join(", ")}; got "${value}"`);
  }
  return new Set(ids);
}

/** Where the bench's processes run: servers on CPU 1, h2load on CPU 0, when there are two. */
interface Placement {
  readonly server: string | undefined;
  readonly load: string | undefined;
  readonly text: string;
}

function placement(): Placement {
  const cpus = Number(execFileSync("nproc", { encoding: "utf8" }).trim());
  if (cpus >= 2 && hasTaskset()) {
    return {
      server: "1",
      load: "0",
      text: "each server process pinned to CPU 1 (`taskset -c 1`), every h2load process to CPU 0 (`taskset -c 0`), so load generation never competes with the server measured",
    };
  }
  return { server: undefined, load: undefined, text: `not pinned (${cpus} CPU(s)${hasTaskset() ? "" : ", no taskset"}): servers and h2load share the CPUs` };
}

/** The database the service uses, and how to count its traffic. */
interface BenchDatabase {
  readonly describe: string;
  /** Service environment: DATABASE_URL through the counting proxy, or nothing (embedded). */
  readonly serviceEnv: Readonly<Record<string, string>>;
  readonly counter: RoundTripCounter | undefined;
  /** Service environment reaching the bench database without the proxy (PostgreSQL only). */
  readonly directEnv: Readonly<Record<string, string>> | undefined;
  /** pg_stat_database.xact_commit of the bench database (PostgreSQL only). */
  xactCommits(): Promise<number | undefined>;
  /**
   * Finishes PostgreSQL's background work left by the scenarios before (flushes dirty buffers,
   * vacuums the rows they wrote), so a comparison that needs both CPUs does not pay for it.
   */
  settle(): Promise<void>;
  drop(): Promise<void>;
}

async function prepareDatabase(databaseUrl: string | undefined): Promise<BenchDatabase> {
  if (databaseUrl === undefined) {
    return {
      describe: "embedded PostgreSQL (PGlite) in a temporary DATA_DIR",
      serviceEnv: {},
      counter: undefined,
      directEnv: undefined,
      xactCommits: () => Promise.resolve(undefined),
      settle: () => Promise.resolve(),
      drop: () => Promise.resolve(),
    };
  }
  const admin = new pg.Client({ connectionString: databaseUrl });
  await admin.connect();
  const name = `licensing_bench_${randomBytes(5).toString("hex")}`;
  await admin.query(`create database ${name}`);
  const version = (await admin.query<{ server_version: string }>("show server_version")).rows[0]?.server_version ?? "?";
  const direct = new URL(databaseUrl);
  direct.pathname = `/${name}`;
  const directUrl = direct.toString();
  const counter = await createRoundTripCounter({ host: direct.hostname, port: Number(direct.port || "5432") });
  const proxied = new URL(direct);
  proxied.hostname = "127.0.0.1";
  proxied.port = String(counter.port);
  return {
    describe: `PostgreSQL ${version} (a fresh database ${name} on DATABASE_URL's server, reached through the bench's round-trip-counting proxy)`,
    serviceEnv: { DATABASE_URL: proxied.toString() },
    counter,
    directEnv: { DATABASE_URL: directUrl },
    async settle() {
      const direct = new pg.Client({ connectionString: directUrl });
      await direct.connect();
      try {
        await direct.query("vacuum (analyze)");
        await direct.query("checkpoint");
      } finally {
        await direct.end();
      }
    },
    async xactCommits() {
      const row = await admin.query<{ xact_commit: string }>("select xact_commit from pg_stat_database where datname = $1", [name]);
      const value = row.rows[0]?.xact_commit;
      return value === undefined ? undefined : Number(value);
    },
    async drop() {
      await counter.close();
      await admin.query(`drop database if exists ${name} with (force)`);
      await admin.end();
    },
  };
}

/** Applies the rules document through the CLI; returns the new keys' secrets in key order. */
async function applyRules(file: string, grpcPort: number, adminToken: string, keys: number, commands: string[]): Promise<string[]> {
  const args = [join(ROOT, "dist/src/cli/main.js"), "apply", "-f", file, "-o", "json", "--server", `http://127.0.0.1:${grpcPort}`];
  commands.push(`node dist/src/cli/main.js apply -f $BENCH_TMP/rules.json -o json --server http://127.0.0.1:${grpcPort} --token "$ADMIN_TOKEN"`);
  // stdout goes to a file: the CLI exits right after writing, and a pipe would lose the tail of
  // a large answer (1000 keys) that a file, written synchronously, keeps.
  const outFile = `${file}.applied.json`;
  const out = await open(outFile, "w");
  try {
    await new Promise<void>((resolveRun, reject) => {
      const child = spawn(process.execPath, [...args, "--token", adminToken], { stdio: ["ignore", out.fd, "pipe"] });
      let stderr = "";
      child.stderr?.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
      const timer = setTimeout(() => child.kill("SIGKILL"), 120_000);
      child.once("error", reject);
      child.once("close", (code) => {
        clearTimeout(timer);
        if (code === 0) resolveRun();
        else reject(new Error(`licensing apply exited with ${code}: ${stderr}`));
      });
    });
  } finally {
    await out.close();
  }
  const parsed = JSON.parse(await readFile(outFile, "utf8")) as { issued_keys: { id: string; secret: string }[] };
  const byId = new Map(parsed.issued_keys.map((k) => [k.id, k.secret]));
  const secrets: string[] = [];
  for (let i = 0; i < keys; i++) {
    const secret = byId.get(keyId(i));
    if (secret === undefined) throw new Error(`apply issued no secret for ${keyId(i)}`);
    secrets.push(secret);
  }
  return secrets;
}

async function writeMix(dir: string, id: string, path: string, response: Mix["response"], bodies: readonly MixBody[]): Promise<Mix> {
  const bodyFiles: string[] = [];
  for (const [i, body] of bodies.entries()) {
    const file = join(dir, `${id}-${i}.bin`);
    await writeFile(file, body.frame);
    bodyFiles.push(file);
  }
  return { id, path, response, bodies, bodyFiles };
}

function progress(message: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}\n`);
}

/** A command line as RESULTS.md shows it: paths relative to the repository, the temp dir named. */
function neutral(ctx: Pick<Context, "tmp">, command: string): string {
  return command.split(ctx.tmp).join("$BENCH_TMP").split(`${ROOT}/`).join("");
}

interface Context {
  readonly options: BenchOptions;
  readonly place: Placement;
  readonly tmp: string;
  readonly db: BenchDatabase;
  readonly serviceEnv: Readonly<Record<string, string>>;
  readonly commands: string[];
  /** The service's production Node flags, which both servers run under (for the commands shown). */
  readonly nodeFlags: string;
  service: ServerProcess;
  bare: ServerProcess;
}

function bound(options: BenchOptions, seconds = options.durationSeconds): LoadBound {
  return options.mode === "smoke"
    ? { kind: "requests", perClient: options.smokeRequestsPerClient }
    : { kind: "duration", seconds, warmupSeconds: options.warmupSeconds };
}

interface LoadOptions {
  /** Rate of the paced (denied) connection of a 4 × 4 run; unused at 16 × 32. */
  readonly pacedRps?: number;
  /** CPUs h2load is pinned to (`taskset -c`); unpinned when absent. */
  readonly cpus?: string | undefined;
  /** Seconds of load (after the usual warm-up), or an explicit bound; default the run's duration. */
  readonly seconds?: number | LoadBound;
  /**
   * Whether p50/p99 are wanted: h2load then writes a line per request (--log-file), which
   * costs it about a third more CPU per request. Runs that report only throughput skip it, so
   * an unpinned run (the workers part) leaves that CPU to the servers.
   */
  readonly latency?: boolean;
}

/** One h2load run of a scenario against `ports`; fails if any request failed. */
async function load(ctx: Context, scenario: Scenario, ports: readonly number[], options: LoadOptions = {}): Promise<LoadResult> {
  const logDir = options.latency === true ? await mkdtemp(join(ctx.tmp, "log-")) : undefined;
  const seconds = options.seconds;
  try {
    const result = await runLoad({
      h2load: ctx.options.h2load,
      path: scenario.mix.path,
      parts: partsFor(scenario, ports, options.pacedRps ?? 0),
      bound: typeof seconds === "object" ? seconds : bound(ctx.options, seconds),
      ...(options.cpus === undefined ? {} : { cpus: options.cpus }),
      ...(logDir === undefined ? {} : { logDir }),
      timeoutMs: 120_000,
    });
    if (result.failed > 0 || result.succeeded === 0) {
      const parts = result.parts.map((p) => `${p.tag}: ${p.succeeded} succeeded, ${p.failed} failed, ${p.errored} errored/timed out, ${p.statusNot2xx} not 2xx`).join("; ");
      throw new Error(`${scenario.title} ${loadLabel(scenario.shape)}: ${result.failed} request(s) failed, ${result.succeeded} succeeded (ports ${ports.join(",")}): ${parts}`);
    }
    return result;
  } finally {
    if (logDir !== undefined) await rm(logDir, { recursive: true, force: true });
  }
}

function measurement(result: LoadResult, roundTrips: number | undefined): Measurement {
  return {
    reqPerSec: result.reqPerSec,
    requests: result.succeeded,
    failed: result.failed,
    allowedShare: result.allowedShare,
    ...(result.p50Ms === undefined ? {} : { p50Ms: result.p50Ms }),
    ...(result.p99Ms === undefined ? {} : { p99Ms: result.p99Ms }),
    ...(roundTrips === undefined ? {} : { pgRoundTrips: roundTrips }),
  };
}

/** Service and bare, repetition by repetition, alternating which goes first. */
async function measureScenarios(ctx: Context, scenarios: readonly Scenario[]): Promise<ScenarioResult[]> {
  const results = new Map(scenarios.map((s) => [s.id, { service: [] as Measurement[], bare: [] as Measurement[] }]));
  /** Latest throughput per variant and mix, to pace the denied connection of 4 × 4 runs. */
  const lastThroughput = new Map<string, number>();
  const recorded = new Set<string>();
  for (let rep = 0; rep < ctx.options.reps; rep++) {
    for (const scenario of scenarios) {
      const order: ("service" | "bare")[] = rep % 2 === 0 ? ["service", "bare"] : ["bare", "service"];
      for (const variant of order) {
        const server = variant === "service" ? ctx.service : ctx.bare;
        const paced = 0.1 * (lastThroughput.get(`${variant}:${scenario.mix.id}`) ?? 1000);
        const before = variant === "service" ? ctx.db.counter?.roundTrips() : undefined;
        const result = await load(ctx, scenario, [server.grpcPort], { pacedRps: paced, cpus: ctx.place.load, latency: true });
        const trips = before === undefined ? undefined : (ctx.db.counter?.roundTrips() ?? before) - before;
        if (scenario.shape === "16x32") lastThroughput.set(`${variant}:${scenario.mix.id}`, result.reqPerSec);
        results.get(scenario.id)?.[variant].push(measurement(result, trips));
        if (variant === "service" && !recorded.has(scenario.id)) {
          recorded.add(scenario.id);
          ctx.commands.push(`# ${scenario.title} ${loadLabel(scenario.shape)} (service; the bare run is the same against the bare port)`, ...result.commands.map((c) => neutral(ctx, c)));
        }
        progress(`rep ${rep + 1}/${ctx.options.reps} ${scenario.title} ${loadLabel(scenario.shape)} ${variant}: ${fmtRate(result.reqPerSec)} req/s, p99 ${result.p99Ms?.toFixed(2)} ms, allowed ${(100 * result.allowedShare).toFixed(1)}%`);
      }
    }
  }
  return scenarios.map((s) => {
    const r = results.get(s.id) ?? { service: [], bare: [] };
    return { id: s.id, title: s.title, load: loadLabel(s.shape), measure: s.shape === "16x32" ? "throughput" : "latency", service: r.service, bare: r.bare };
  });
}

/** Short untimed runs so both servers are JIT-warm and the service holds keys, snapshots and leases. */
async function warmUp(ctx: Context, mixes: readonly Mix[]): Promise<void> {
  for (const mix of mixes) {
    const scenario: Scenario = { id: `warm-${mix.id}`, title: `warm-up ${mix.id}`, mix, shape: "16x32" };
    for (const server of [ctx.service, ctx.bare]) await load(ctx, scenario, [server.grpcPort], { cpus: ctx.place.load, seconds: 2 });
  }
}

async function sampleMixes(ctx: Context, mixes: readonly Mix[]): Promise<{ mix: string; bodies: SampledBody[] }[]> {
  const client = new ProbeClient(ctx.service.grpcPort);
  try {
    const samples = [];
    for (const mix of mixes) {
      const bodies = await sampleMix(client, mix.path, mix.response, mix.bodies);
      const wrong = bodies.filter((b) => b.allowed !== b.expectAllowed);
      if (wrong.length > 0) {
        throw new Error(`mix ${mix.id} is not what the bench assumes: ${wrong.map((b) => `${b.label} answered ${b.answer}`).join("; ")}`);
      }
      samples.push({ mix: mix.id, bodies });
    }
    return samples;
  } finally {
    client.close();
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Round trips per 1,000 allowed quota Checks: an idle window first (background only), then a
 * count-bounded quota load on allowed bodies only, then one settle interval and a second so the
 * consumption is written back; everything the proxy saw in that window counts.
 */
async function measureStatements(ctx: Context, quota: Mix): Promise<StatementsResult | Skipped> {
  const counter = ctx.db.counter;
  if (counter === undefined) {
    return { title: "Postgres round trips per 1,000 allowed quota Checks", reason: "needs PostgreSQL (set DATABASE_URL): the embedded database has no wire to count" };
  }
  const allowedOnly: Mix = {
    ...quota,
    id: `${quota.id}-allowed`,
    bodies: quota.bodies.filter((b) => b.expectAllowed),
    bodyFiles: quota.bodyFiles.filter((_, i) => quota.bodies[i]?.expectAllowed === true),
  };
  const scenario: Scenario = { id: "statements", title: "quota (allowed only)", mix: allowedOnly, shape: "16x32" };
  const idleMs = 5000;
  const idleStart = counter.roundTrips();
  await sleep(idleMs);
  const idlePerMs = (counter.roundTrips() - idleStart) / idleMs;

  const xactBefore = await ctx.db.xactCommits();
  const before = counter.roundTrips();
  const started = performance.now();
  const perClient = Math.ceil(100_000 / (allowedOnly.bodies.length * 2));
  const result = await runLoad({
    h2load: ctx.options.h2load,
    path: allowedOnly.path,
    parts: partsFor(scenario, [ctx.service.grpcPort], 0),
    bound: { kind: "requests", perClient },
    ...(ctx.place.load === undefined ? {} : { cpus: ctx.place.load }),
    timeoutMs: 120_000,
  });
  const loadSeconds = (performance.now() - started) / 1000;
  // One settle interval (SETTLE_INTERVAL_MS, default 1000) and a margin: consumption is written back.
  await sleep(2000);
  const roundTrips = counter.roundTrips() - before;
  const windowMs = performance.now() - started;
  // pg_stat_database is flushed by backends about once a second when idle.
  await sleep(1500);
  const xactAfter = await ctx.db.xactCommits();
  ctx.commands.push("# Postgres round trips: allowed quota Checks, count-bounded", ...result.commands.map((c) => neutral(ctx, c)));
  if (result.failed > 0) throw new Error(`statements run: ${result.failed} request(s) failed`);
  return {
    method:
      "a TCP proxy between the service and PostgreSQL counts frontend Query and Sync messages (one per round trip, BEGIN/COMMIT included); pg_stat_statements is not loaded on this server",
    allowedChecks: result.succeeded,
    licences: allowedOnly.bodies.length,
    loadSeconds,
    roundTrips,
    idleRoundTrips: Math.round(idlePerMs * windowMs),
    xactCommits: xactBefore === undefined || xactAfter === undefined ? undefined : xactAfter - xactBefore,
  };
}

/**
 * 1 against 2 workers (WORKERS=2 when honoured, else 2 replica processes on one database).
 *
 * Both variants are fresh processes started for this comparison and warmed with the same load:
 * the main service has run every scenario before this one, and a process that has been optimised
 * (and its heap sized) by a quarter of an hour of traffic is not the same 1 worker as one started
 * a second ago. Both reach PostgreSQL directly, not through the round-trip-counting proxy: that
 * proxy runs in this process, on the same two CPUs, and relays every decision-log write.
 */
async function measureWorkers(ctx: Context, mix: Mix): Promise<WorkersResult | Skipped> {
  const title = "1 and 2 workers";
  if (ctx.db.directEnv === undefined) {
    return { title, reason: "needs PostgreSQL (set DATABASE_URL): two processes cannot share the embedded database, and this build may not honour WORKERS" };
  }
  const cpus = Number(execFileSync("nproc", { encoding: "utf8" }).trim());
  if (cpus < 2) return { title, reason: "needs at least 2 CPUs" };
  await ctx.db.settle().catch((error: unknown) => progress(`workers: could not settle PostgreSQL first (${(error as Error).message}); measuring anyway`));
  const started: ServerProcess[] = [];
  const start = async (workers: 1 | 2) => {
    const env = { ...ctx.serviceEnv, ...ctx.db.directEnv, DATA_DIR: join(ctx.tmp, `workers-${workers}`), WORKERS: String(workers) };
    const service = await startService({ name: `service (WORKERS=${workers})`, root: ROOT, env, startTimeoutMs: 60_000 });
    started.push(service);
    return service;
  };
  try {
    const single = await start(1);
    const second = await start(2);
    const workers = (await childPids(second.pid)).length;
    const mode: WorkersResult["mode"] = workers >= 2 ? "workers" : "replicas";
    progress(`workers: WORKERS=2 ${mode === "workers" ? `honoured (${workers} worker processes)` : "not honoured: measuring 2 replica processes instead"}`);
    const scenario: Scenario = { id: "workers", title: "Check boolean", mix, shape: "16x32" };
    const ports = { 1: [single.grpcPort], 2: mode === "workers" ? [second.grpcPort] : [single.grpcPort, second.grpcPort] };
    ctx.commands.push(
      "# 1 and 2 workers: two fresh services, unpinned, DATABASE_URL straight to the bench database",
      `env ... WORKERS=1 DATABASE_URL=<bench database> node ${ctx.nodeFlags} dist/src/cli/main.js serve`,
      `env ... WORKERS=2 DATABASE_URL=<bench database> node ${ctx.nodeFlags} dist/src/cli/main.js serve`,
    );
    // The same warm-up for both, alternating, so neither has seen more traffic than the other.
    const warmSeconds = ctx.options.mode === "smoke" ? undefined : WORKERS_WARMUP_SECONDS;
    for (let round = 0; round < 2; round++) {
      for (const n of [1, 2] as const) await load(ctx, scenario, ports[n], { seconds: warmSeconds });
    }
    const one: number[] = [];
    const two: number[] = [];
    for (let rep = 0; rep < ctx.options.reps; rep++) {
      const order = rep % 2 === 0 ? ([1, 2] as const) : ([2, 1] as const);
      for (const n of order) {
        const result = await load(ctx, scenario, ports[n]);
        (n === 1 ? one : two).push(result.reqPerSec);
        progress(`rep ${rep + 1}/${ctx.options.reps} ${n} worker(s): ${fmtRate(result.reqPerSec)} req/s`);
      }
    }
    return {
      mode,
      placement:
        "two fresh services started for this comparison (WORKERS=1 and WORKERS=2), warmed alike, nothing pinned (two server processes need both CPUs): servers and h2load share the 2 CPUs in both variants, h2load at nice 19 and without a per-request log",
      one,
      two,
    };
  } finally {
    await Promise.all(started.map((s) => s.stop()));
  }
}

/** Seconds of load each workers variant gets, twice, before it is measured. */
const WORKERS_WARMUP_SECONDS = 10;

async function measureReport(ctx: Context, secrets: readonly string[]): Promise<ExtraResult | Skipped> {
  const title = "Report (batches of 500 events, 8 streams)";
  const client = new ProbeClient(ctx.service.grpcPort);
  try {
    if (!(await isImplemented(client, PATHS.report))) return { title, reason: "the service answers UNIMPLEMENTED to Report in this build (metering not built yet)" };
  } finally {
    client.close();
  }
  const bench = await loadReportBench();
  if (typeof bench === "string") return { title, reason: bench };
  const result = await bench({
    grpcAddress: `127.0.0.1:${ctx.service.grpcPort}`,
    apiKeys: secrets,
    feature: FEATURES.quota,
    batchSize: 500,
    streams: 8,
    durationSeconds: ctx.options.mode === "smoke" ? 1 : 10,
    databaseUrl: ctx.serviceEnv.DATABASE_URL,
    cpus: ctx.place.load,
  });
  return {
    title,
    figure: `${fmtRate(result.eventsPerSecond)} events/s`,
    detail: `${fmtRate(result.batchesPerSecond)} batches/s${result.p99Ms === undefined ? "" : `, p50 ${result.p50Ms?.toFixed(1)} ms, p99 ${result.p99Ms.toFixed(1)} ms`}; durable: ${result.durability}`,
  };
}

async function measureScale(ctx: Context, secrets: readonly string[]): Promise<ExtraResult | Skipped> {
  const title = "Scale (observed utilization, 16 × 32)";
  const client = new ProbeClient(ctx.service.grpcPort);
  try {
    if (!(await isImplemented(client, PATHS.scale))) return { title, reason: "the service answers UNIMPLEMENTED to Scale in this build (capacity scaling not built yet)" };
    const bodies = scaleMix(secrets, 8);
    for (const body of bodies) await client.call(PATHS.scale, body.message);
    const mix = await writeMix(ctx.tmp, "scale", PATHS.scale, "check", bodies);
    const scenario: Scenario = { id: "scale", title: "Scale", mix, shape: "16x32" };
    const checkScenario: Scenario = { id: "scale-ref", title: "bare", mix, shape: "16x32" };
    const service: number[] = [];
    const bare: number[] = [];
    for (let rep = 0; rep < Math.min(3, ctx.options.reps); rep++) {
      service.push((await load(ctx, scenario, [ctx.service.grpcPort], { cpus: ctx.place.load })).reqPerSec);
      // The bare server answers Check only; its Check rate is the transport's ceiling.
      const bareMix = { ...checkScenario, mix: { ...mix, path: PATHS.check } };
      bare.push((await load(ctx, bareMix, [ctx.bare.grpcPort], { cpus: ctx.place.load })).reqPerSec);
    }
    return { title, figure: `${fmtRate(median(service))} req/s`, detail: `${medianRatio(service, bare).toFixed(2)}× the bare server's Check rate; every call succeeded` };
  } finally {
    client.close();
  }
}

interface ProfiledRun {
  readonly summary: ProfileSummary;
  /** Requests answered in the profiled window. */
  readonly requests: number;
  readonly reqPerSec: number;
}

const PROFILE_SECONDS = 10;

/**
 * Restarts one server under node --cpu-prof, lets it idle a second, drives the mix for 10 s
 * (no h2load warm-up, so every answered request is inside the window), stops it and
 * summarizes the profile from just after it was serving (start-up excluded).
 */
async function profileRun(ctx: Context, variant: "service" | "bare", mix: Mix, title: string): Promise<ProfiledRun> {
  const dir = await mkdtemp(join(ctx.tmp, `profile-${variant}-`));
  const nodeArgs = ["--cpu-prof", `--cpu-prof-dir=${dir}`];
  const cpus = ctx.place.server === undefined ? {} : { cpus: ctx.place.server };
  // Free CPU 1 (and, for the service, the database: PGlite allows one process).
  await (variant === "service" ? ctx.service : ctx.bare).stop();
  const spawnedAt = Date.now();
  const profiled =
    variant === "service"
      ? await startService({ name: "service (--cpu-prof)", root: ROOT, nodeArgs, env: ctx.serviceEnv, ...cpus, startTimeoutMs: 60_000 })
      : await startBare({ root: ROOT, nodeArgs, ...cpus, startTimeoutMs: 20_000 });
  const servingAfterMs = Date.now() - spawnedAt;
  try {
    await sleep(1000);
    const scenario: Scenario = { id: `profile-${variant}`, title, mix, shape: "16x32" };
    const result = await load(ctx, scenario, [profiled.grpcPort], { cpus: ctx.place.load, seconds: { kind: "duration", seconds: PROFILE_SECONDS, warmupSeconds: 0 } });
    if (variant === "service") {
      ctx.commands.push(
        `# profile: each server restarted once as node --cpu-prof --cpu-prof-dir=DIR ..., idle 1 s, then this load for ${PROFILE_SECONDS} s (same against the bare server)`,
        ...result.commands.map((c) => neutral(ctx, c)),
      );
    }
    await profiled.stop();
    const file = (await readdir(dir)).find((f) => f.endsWith(".cpuprofile"));
    if (file === undefined) throw new Error(`node --cpu-prof wrote no profile for the ${variant} server`);
    const profile = JSON.parse(await readFile(join(dir, file), "utf8")) as CpuProfile;
    // Half a second into the idle second: start-up is behind, the load not yet begun.
    const summary = summarizeProfile(profile, ROOT, { top: 25, fromOffsetMs: servingAfterMs + 500 });
    return { summary, requests: result.succeeded, reqPerSec: result.reqPerSec };
  } finally {
    await profiled.stop();
  }
}

/**
 * Profiles service and bare under the same load and explains the difference; `load` says what
 * the mix is, for the note.
 */
async function profileBoth(ctx: Context, mix: Mix, load: string): Promise<{ markdown: string; note: string }> {
  const service = await profileRun(ctx, "service", mix, load);
  const bare = await profileRun(ctx, "bare", mix, load);
  const perRequest = (run: ProfiledRun) => (1000 * run.summary.busyMs) / Math.max(1, run.requests);
  const top = service.summary.functions
    .filter((f) => f.area.startsWith("src/"))
    .slice(0, 6)
    .map((f) => `${f.name} ${f.percent.toFixed(1)}%`)
    .join("; ");
  const note = [
    `Both servers were profiled (node --cpu-prof, pinned as above) under the same load for ${PROFILE_SECONDS} s: ${load}, 16 × 32. ` +
      `The service answered ${fmtRate(service.reqPerSec)} req/s using ${perRequest(service).toFixed(1)} µs of CPU per request; the bare server ${fmtRate(bare.reqPerSec)} req/s using ${perRequest(bare).toFixed(1)} µs. ` +
      "On one saturated core the throughput ratio is the inverse of this CPU ratio, so the table below is where the two differ (busy CPU only; start-up excluded).",
    "",
    perRequestComparison(service.summary, service.requests, bare.summary, bare.requests),
    "",
    `Service self time by area: ${bucketShares(service.summary).map((b) => `${b.bucket} ${b.percent.toFixed(1)}%`).join(", ")}. ` +
      `Heaviest functions of our own code: ${top === "" ? "none in the top 25" : top}.`,
    "",
    "The service's top functions and areas (percentages of its busy time):",
  ].join("\n");
  return { markdown: profileMarkdown(service.summary), note };
}

export async function runBench(options: BenchOptions): Promise<BenchResults> {
  const started = Date.now();
  // Read before measuring: what `npm run bench` just built, not what the tree holds by the end.
  const commit = codeCommit(ROOT);
  if (!hasH2load(options.h2load)) throw new Error(`h2load not found ("${options.h2load}"): apt-get install nghttp2-client, or set H2LOAD`);
  const place = placement();
  const tmp = await mkdtemp(join(tmpdir(), "licensing-bench-"));
  const commands: string[] = [];
  const cleanups: (() => Promise<unknown>)[] = [() => rm(tmp, { recursive: true, force: true })];
  try {
    const db = await prepareDatabase(options.databaseUrl);
    cleanups.push(() => db.drop());
    const adminToken = randomBytes(24).toString("hex");
    const serviceEnv = { ...db.serviceEnv, DATA_DIR: join(tmp, "data"), ADMIN_TOKEN: adminToken };
    progress(`database: ${db.describe}; placement: ${place.text}`);
    const service = await startService({ name: "service", root: ROOT, env: serviceEnv, ...(place.server === undefined ? {} : { cpus: place.server }), startTimeoutMs: 60_000 });
    cleanups.push(() => service.stop());
    const bare = await startBare({ root: ROOT, ...(place.server === undefined ? {} : { cpus: place.server }), startTimeoutMs: 20_000 });
    cleanups.push(() => bare.stop());
    const pinned = place.server === undefined ? "" : `taskset -c ${place.server} `;
    const nodeFlags = productionNodeFlags(ROOT).join(" ");
    commands.push(
      `${pinned}env HOST=127.0.0.1 GRPC_PORT=<free> HTTP_PORT=<free> DEMO_SEED=off LOG_LEVEL=warn DATA_DIR=<tmp> ADMIN_TOKEN=<random>${db.counter === undefined ? "" : " DATABASE_URL=<bench database via proxy>"} node ${nodeFlags} dist/src/cli/main.js serve`,
      `${pinned}node ${nodeFlags} dist/bench/bare-server.js <free port>`,
    );
    const ctx: Context = { options, place, tmp, db, serviceEnv, commands, nodeFlags, service, bare };

    const rulesFile = join(tmp, "rules.json");
    await writeFile(rulesFile, benchRules({ licences: options.licences, keys: options.keys }));
    progress(`applying ${options.licences} licences and ${options.keys} keys`);
    const secrets = await applyRules(rulesFile, service.grpcPort, adminToken, options.keys, commands);

    const mixes = {
      boolean: await writeMix(tmp, "check-boolean", PATHS.check, "check", checkMix("boolean", secrets, 7, 1)),
      quota: await writeMix(tmp, "check-quota", PATHS.check, "check", checkMix("quota", secrets, 7, 1)),
      rate: await writeMix(tmp, "check-rate", PATHS.check, "check", checkMix("rate", secrets, 7, 1)),
      extAuthz: await writeMix(tmp, "ext-authz", PATHS.extAuthz, "extAuthz", extAuthzMix(secrets, 7, 1)),
    };
    const profileMix = await writeMix(tmp, "check-profile", PATHS.check, "check", [
      ...checkMix("boolean", secrets, 3, 0),
      ...checkMix("quota", secrets, 2, 0),
      ...checkMix("rate", secrets, 2, 1),
    ]);
    const planned: Scenario[] =
      options.mode === "smoke"
        ? [
            { id: "check-boolean-16x32", title: "Check boolean", mix: mixes.boolean, shape: "16x32" },
            { id: "check-boolean-4x4", title: "Check boolean", mix: mixes.boolean, shape: "4x4" },
          ]
        : [
            { id: "check-boolean-16x32", title: "Check boolean", mix: mixes.boolean, shape: "16x32" },
            { id: "check-boolean-4x4", title: "Check boolean", mix: mixes.boolean, shape: "4x4" },
            { id: "check-quota-16x32", title: "Check quota (leases)", mix: mixes.quota, shape: "16x32" },
            { id: "check-quota-4x4", title: "Check quota (leases)", mix: mixes.quota, shape: "4x4" },
            { id: "check-rate-16x32", title: "Check rate limit", mix: mixes.rate, shape: "16x32" },
            { id: "check-rate-4x4", title: "Check rate limit", mix: mixes.rate, shape: "4x4" },
            { id: "ext-authz-16x32", title: "ext_authz Check (Envoy)", mix: mixes.extAuthz, shape: "16x32" },
          ];
    const wanted = (id: string) => options.only === undefined || options.only.has(id);
    const scenarios = planned.filter((s) => wanted(s.id));
    const usedMixes = [...new Set(scenarios.map((s) => s.mix))];
    const samples = await sampleMixes(ctx, usedMixes);
    progress(`mixes verified through a gRPC client: ${samples.map((s) => `${s.mix} ${s.bodies.filter((b) => b.allowed).length}/${s.bodies.length} allowed`).join(", ")}`);
    if (options.mode === "full" && usedMixes.length > 0) await warmUp(ctx, usedMixes);

    const results = await measureScenarios(ctx, scenarios);
    const skipped: Skipped[] = [];
    const extras: ExtraResult[] = [];
    let statements: StatementsResult | undefined;
    let workers: WorkersResult | undefined;
    let profile: { markdown: string; note: string } | undefined;
    let extAuthzProfile: { markdown: string; note: string } | undefined;
    const pushExtra = (extra: ExtraResult | Skipped) => {
      if ("reason" in extra) skipped.push(extra);
      else extras.push(extra);
    };
    if (options.mode === "full") {
      if (wanted("statements")) {
        const s = await measureStatements(ctx, mixes.quota);
        if ("reason" in s) skipped.push(s);
        else statements = s;
      }
      if (wanted("workers")) {
        const w = await measureWorkers(ctx, mixes.boolean);
        if ("reason" in w) skipped.push(w);
        else workers = w;
      }
      if (wanted("report")) pushExtra(await measureReport(ctx, secrets));
      if (wanted("scale")) pushExtra(await measureScale(ctx, secrets));
      for (const s of skipped) progress(`skipped ${s.title}: ${s.reason}`);
      if (options.profile && wanted("profile")) {
        profile = await profileBoth(ctx, profileMix, "a Check mix of 3 boolean, 2 quota and 2 rate bodies on 7 licences plus 1 denied");
      }
      if (options.profile && wanted("profile-ext-authz")) {
        extAuthzProfile = await profileBoth(ctx, mixes.extAuthz, "the ext_authz mix of the table above (7 allowed Envoy requests on 7 licences, 1 denied)");
      }
      if (options.only !== undefined) {
        const left = FULL_RUN_PARTS.filter((id) => !options.only?.has(id));
        skipped.push({ title: `Not run (--only ${[...options.only].join(",")})`, reason: left.join(", ") });
      }
    } else {
      skipped.push({ title: "Everything but Check boolean", reason: "smoke mode runs only Check boolean and the bare server" });
    }
    const workload = `${options.licences} licences (one account each) on one plan (boolean ${FEATURES.boolean}, quota ${FEATURES.quota} 10^12/month, rate ${FEATURES.rate} 10^7/s, capacity ${FEATURES.capacity}) and ${options.keys} API keys, applied with \`licensing apply\`.`;
    return {
      machine: machineInfo(options.h2load, new Date(started), commit),
      mode: options.mode,
      database: db.describe,
      placement: place.text,
      repetitions: options.reps,
      bound: options.mode === "smoke" ? `-n ${options.smokeRequestsPerClient} requests per connection` : `-D ${options.durationSeconds} s after --warm-up-time=${options.warmupSeconds} s each`,
      workload,
      nodeFlags,
      scenarios: results,
      workers,
      statements,
      extras,
      skipped,
      samples,
      profile: profile?.markdown,
      profileNote: profile?.note ?? "Not profiled in this run (smoke mode, --no-profile or --only).",
      extAuthzProfile: extAuthzProfile?.markdown,
      extAuthzProfileNote: extAuthzProfile?.note,
      commands,
      elapsedSeconds: (Date.now() - started) / 1000,
    };
  } finally {
    for (const cleanup of cleanups.reverse()) {
      // Every cleanup runs; a failing one must not keep the others (or the error) from happening.
      await Promise.resolve()
        .then(cleanup)
        .catch((error: unknown) => progress(`cleanup failed: ${(error as Error).message}`));
    }
  }
}

async function main(): Promise<number> {
  let options: BenchOptions;
  try {
    options = parseOptions(process.argv.slice(2), process.env);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`bench: ${error.message}\n`);
    return 2;
  }
  if (options.render !== undefined) {
    const markdown = renderResults(JSON.parse(await readFile(options.render, "utf8")) as BenchResults);
    await writeFile(options.out, markdown);
    process.stdout.write(`re-rendered ${options.render} into ${options.out}\n`);
    return 0;
  }
  const results = await runBench(options);
  const markdown = renderResults(results);
  await mkdir(dirname(options.out), { recursive: true });
  await writeFile(options.out, markdown);
  await writeFile(options.out.replace(/\.md$/, "") + ".json", `${JSON.stringify(results, null, 2)}\n`);
  const summary = results.scenarios.map((s) => {
    const m = summarizeScenario(s);
    return `${s.title} ${s.load}: ${fmtRate(m.serviceReqPerSec)} req/s (${m.throughputRatio.toFixed(2)}× bare), p99 ${m.serviceP99Ms.toFixed(2)} ms (${m.p99Ratio.toFixed(2)}× bare)`;
  });
  process.stdout.write(`${summary.join("\n")}\nwrote ${options.out}\n`);
  return 0;
}

if (process.argv[1] !== undefined && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  main().then(
    (code) => process.exit(code),
    (error: unknown) => {
      process.stderr.write(`bench: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
      process.exit(1);
    },
  );
}
