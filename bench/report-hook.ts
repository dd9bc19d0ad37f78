/**
 * The Report scenario is driven by the metering work's own script (bench/report/**, owned by
 * that helper), because a Report load needs fresh event ids on every batch, which h2load's one
 * fixed body cannot give. This file is the contract between the two:
 *
 *   bench/report/index.ts exports
 *     runReportBench(target: ReportBenchTarget): Promise<ReportBenchResult>
 *
 * run.ts calls it when the module is built (dist/bench/report/index.js) and the service answers
 * Report; otherwise the scenario is skipped with the reason printed and written to RESULTS.md.
 */
import { existsSync } from "node:fs";
import { fileURLToPath, pathToFileURL } from "node:url";

export interface ReportBenchTarget {
  /** "127.0.0.1:PORT" of the service's gRPC listener. */
  readonly grpcAddress: string;
  /** API key secrets the service knows (each resolves to one licence). */
  readonly apiKeys: readonly string[];
  /** A quota feature every key's licence is entitled to. */
  readonly feature: string;
  /** Events per ReportRequest. */
  readonly batchSize: number;
  /** Concurrent Report calls in flight. */
  readonly streams: number;
  readonly durationSeconds: number;
  /** The service's database when it is PostgreSQL (to verify durability), else undefined. */
  readonly databaseUrl: string | undefined;
  /** CPU list the load generator should be pinned to, when pinning. */
  readonly cpus: string | undefined;
}

export interface ReportBenchResult {
  /** Events accepted and durable per second. */
  readonly eventsPerSecond: number;
  readonly batchesPerSecond: number;
  readonly p50Ms?: number;
  readonly p99Ms?: number;
  /** How durability was established, e.g. "count(*) of usage_events after the run". */
  readonly durability: string;
}

export type ReportBench = (target: ReportBenchTarget) => Promise<ReportBenchResult>;

/** The compiled driver, if the metering helper's script exists in this build. */
export async function loadReportBench(): Promise<ReportBench | string> {
  // Compiled next to this module (dist/bench/report/index.js after npm run bench).
  const file = fileURLToPath(new URL("./report/index.js", import.meta.url));
  if (!existsSync(file)) return "bench/report/index.ts (the metering driver) is not in this build";
  const loaded = (await import(pathToFileURL(file).href)) as { runReportBench?: unknown };
  if (typeof loaded.runReportBench !== "function") return "bench/report/index.ts does not export runReportBench(target)";
  return loaded.runReportBench as ReportBench;
}
