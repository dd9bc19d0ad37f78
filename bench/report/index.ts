/**
 * The Report load driver (the contract is bench/report-hook.ts): `streams` concurrent callers
 * each send ReportRequests of `batchSize` fresh events, back to back, for `durationSeconds`,
 * over one grpc-js channel per stream. Counts only events the service accepted (durable by the
 * time it answers), and, with a PostgreSQL URL, checks afterwards that usage_events holds
 * exactly that many of this run's ids.
 *
 * Requests are encoded before the clock starts (a pool per stream, each batch with its own
 * ids), so the figure measures the service, not this process's protobuf encoder.
 */
import { randomBytes } from "node:crypto";
import { create, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import pg from "pg";
import { ReportRequestSchema, ReportResponseSchema } from "../../src/gen/licensing/v1/licensing_pb.js";
import { fromBinary } from "@bufbuild/protobuf";
import type { ReportBenchResult, ReportBenchTarget } from "../report-hook.js";

export type { ReportBenchResult, ReportBenchTarget };

const REPORT = "/licensing.v1.LicensingService/Report";
/** Upper bound of batches encoded ahead per stream (the run stops early if it uses them all). */
const MAX_BATCHES_PER_STREAM = 4000;

export async function runReportBench(target: ReportBenchTarget): Promise<ReportBenchResult> {
  const runId = randomBytes(4).toString("hex");
  const perStream = Math.min(MAX_BATCHES_PER_STREAM, Math.ceil((60_000 * target.durationSeconds) / target.batchSize / target.streams) + 10);
  const pools = Array.from({ length: target.streams }, (_, s) => encodeBatches(target, `${runId}-${s}`, perStream));
  const latencies: number[] = [];
  let accepted = 0;
  let batches = 0;
  let failures = 0;
  const startedAt = performance.now();
  const deadline = startedAt + target.durationSeconds * 1000;

  await Promise.all(
    pools.map(async (pool) => {
      const client = new grpc.Client(target.grpcAddress, grpc.credentials.createInsecure());
      try {
        for (const body of pool) {
          if (performance.now() >= deadline) break;
          const t0 = performance.now();
          try {
            const answer = fromBinary(ReportResponseSchema, await call(client, body));
            accepted += answer.accepted;
            batches += 1;
          } catch {
            failures += 1;
          }
          latencies.push(performance.now() - t0);
        }
      } finally {
        client.close();
      }
    }),
  );
  const seconds = (performance.now() - startedAt) / 1000;
  latencies.sort((a, b) => a - b);
  const durability = target.databaseUrl === undefined ? "not verified (embedded database)" : await verify(target.databaseUrl, runId, accepted);
  return {
    eventsPerSecond: accepted / seconds,
    batchesPerSecond: batches / seconds,
    p50Ms: percentile(latencies, 0.5),
    p99Ms: percentile(latencies, 0.99),
    durability: failures === 0 ? durability : `${durability}; ${failures} call(s) failed`,
  };
}

function encodeBatches(target: ReportBenchTarget, prefix: string, count: number): Buffer[] {
  const batches: Buffer[] = [];
  for (let b = 0; b < count; b += 1) {
    const events = Array.from({ length: target.batchSize }, (_, i) => ({
      id: `${prefix}-${b}-${i}`,
      credential: { case: "apiKey" as const, value: target.apiKeys[(b + i) % target.apiKeys.length] ?? "" },
      feature: target.feature,
      quantity: 1n,
      attributes: { model: "bench" },
    }));
    batches.push(Buffer.from(toBinary(ReportRequestSchema, create(ReportRequestSchema, { events }))));
  }
  return batches;
}

function call(client: grpc.Client, body: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(
      REPORT,
      (b: Buffer) => b,
      (b: Buffer) => b,
      body,
      new grpc.Metadata(),
      { deadline: Date.now() + 30_000 },
      (error, value) => (error ? reject(error) : resolve(value ?? Buffer.alloc(0))),
    );
  });
}

/** count(*) of this run's events in usage_events must equal what the service acknowledged. */
async function verify(databaseUrl: string, runId: string, accepted: number): Promise<string> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    const { rows } = await client.query<{ n: string }>("select count(*) as n from usage_events where id like $1", [`${runId}-%`]);
    const stored = Number(rows[0]?.n ?? 0);
    return stored === accepted
      ? `count(*) of usage_events after the run = ${stored} = events acknowledged`
      : `MISMATCH: ${stored} events stored, ${accepted} acknowledged`;
  } finally {
    await client.end();
  }
}

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? 0;
}
