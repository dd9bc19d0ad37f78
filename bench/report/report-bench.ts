/**
 * Durable Report ingest into PostgreSQL, standalone:
 *
 *   npm run build && npx tsc -p bench/tsconfig.json && \
 *     DATABASE_URL=postgres://postgres@127.0.0.1:5432/test node dist/bench/report/report-bench.js \
 *       [--seconds 20] [--streams 8] [--batch 500] [--kind quota|boolean] [--licences 1] [--cpu-prof DIR]
 *
 * Creates its own database on the server (dropped at the end), starts the built service on it
 * (which migrates it), seeds `--licences` licences with an API key each (a batch's events take
 * the keys in turn, so it touches that many quota counters), drives Report through the real gRPC
 * server (bench/report/index.ts), prints events/s and the durability check. Reads DATABASE_URL
 * here only. Exit codes: 0 measured; 1 failed; 2 bad usage.
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import pg from "pg";
import { hashApiKey } from "../../src/licensing/api-keys.js";
import { startService } from "../processes.js";
import { runReportBench } from "./index.js";

const ROOT = resolve(import.meta.dirname, "../../..");

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      seconds: { type: "string", default: "20" },
      streams: { type: "string", default: "8" },
      batch: { type: "string", default: "500" },
      kind: { type: "string", default: "quota" },
      licences: { type: "string", default: "1" },
      "cpu-prof": { type: "string" },
    },
  });
  const baseUrl = process.env.DATABASE_URL;
  if (baseUrl === undefined) {
    process.stderr.write("report-bench: set DATABASE_URL to a PostgreSQL server (the bench creates its own database on it)\n");
    return 2;
  }
  const kind = values.kind === "boolean" ? "boolean" : "quota";
  const licences = Number(values.licences);
  if (!Number.isInteger(licences) || licences < 1 || licences > 10_000) {
    process.stderr.write(`report-bench: --licences must be 1-10000, got "${values.licences}"\n`);
    return 2;
  }
  const name = `lic_bench_report_${randomBytes(4).toString("hex")}`;
  await admin(baseUrl, `create database ${name}`);
  const url = new URL(baseUrl);
  url.pathname = `/${name}`;
  const databaseUrl = url.toString();
  const dataDir = await mkdtemp(join(tmpdir(), "report-bench-"));
  const nodeArgs = values["cpu-prof"] === undefined ? [] : ["--cpu-prof", `--cpu-prof-dir=${values["cpu-prof"]}`];
  const service = await startService({
    name: "service",
    root: ROOT,
    nodeArgs,
    env: { DATABASE_URL: databaseUrl, DATA_DIR: dataDir, ADMIN_TOKEN: "report-bench-admin-token", DB_POOL_MAX: "16" },
    startTimeoutMs: 60_000,
  });
  try {
    const apiKeys = Array.from({ length: licences }, () => `lk_live_bench_${randomBytes(12).toString("hex")}`);
    await seed(databaseUrl, apiKeys, kind);
    const result = await runReportBench({
      grpcAddress: `127.0.0.1:${service.grpcPort}`,
      apiKeys,
      feature: "tokens",
      batchSize: Number(values.batch),
      streams: Number(values.streams),
      durationSeconds: Number(values.seconds),
      databaseUrl,
      cpus: undefined,
    });
    process.stdout.write(
      `Report ingest (${kind} feature, ${licences} licence(s), ${values.streams} streams x ${values.batch} events, ${values.seconds} s): ` +
        `${Math.round(result.eventsPerSecond)} events/s, ${result.batchesPerSecond.toFixed(1)} batches/s, ` +
        `p50 ${result.p50Ms?.toFixed(1)} ms, p99 ${result.p99Ms?.toFixed(1)} ms\n${result.durability}\n`,
    );
    return result.durability.startsWith("MISMATCH") ? 1 : 0;
  } finally {
    await service.stop();
    await admin(baseUrl, `drop database if exists ${name} with (force)`);
    await rm(dataDir, { recursive: true, force: true });
  }
}

/** One plan with a quota (or boolean) feature "tokens"; per API key, an account and a licence on it. */
async function seed(databaseUrl: string, apiKeys: readonly string[], kind: "quota" | "boolean"): Promise<void> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    await client.query("insert into plans (name) values ('bench')");
    await client.query(
      kind === "quota"
        ? `insert into entitlements (plan, feature, kind, "limit", period, overage, unit_price) values ('bench', 'tokens', 'quota', 1000000000, 'month', 'allow_and_bill', 1)`
        : `insert into entitlements (plan, feature, kind) values ('bench', 'tokens', 'boolean')`,
    );
    for (const [i, apiKey] of apiKeys.entries()) {
      const id = `bench-${i}`;
      await client.query("insert into accounts (id, name) values ($1, $1)", [id]);
      await client.query("insert into licenses (id, account_id, plan) values ($1, $1, 'bench')", [id]);
      await client.query("insert into api_keys (id, license_id, prefix, secret_hash) values ($1, $1, $2, $3)", [id, apiKey.slice(0, 12), hashApiKey(apiKey)]);
    }
  } finally {
    await client.end();
  }
}

async function admin(baseUrl: string, statement: string): Promise<void> {
  const client = new pg.Client({ connectionString: baseUrl });
  await client.connect();
  try {
    await client.query(statement);
  } finally {
    await client.end();
  }
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`report-bench: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(1);
  },
);
