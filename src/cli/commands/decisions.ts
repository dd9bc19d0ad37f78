/**
 * `licensing decisions verify`: checks the decision log's hash chains in the database the
 * command is pointed at (DATABASE_URL, or the embedded database in DATA_DIR, like `migrate`).
 * main.ts opens the store and passes it in; this file reads no environment.
 *
 * Exit codes: 0 every chain checks out, 1 a chain is broken (tampering or loss), 2 bad usage.
 */
import { parseArgs } from "node:util";
import { verifyDecisionLog, type ReplicaVerdict, type VerifyOptions } from "../../licensing/decision-log.js";
import type { Store } from "../../store/database.js";
import { json, table, type OutputFormat } from "../output.js";

export const HELP = `Usage: licensing decisions verify [--replica R] [--from TIME] [--to TIME] [--output table|json]

Recomputes every hash of the decision log and checks that each replica's seq runs without gaps.
Runs against DATABASE_URL, or the embedded database in DATA_DIR (default ./.data). Exits 1 and
names the replica and its first bad seq when a row was changed, deleted, moved or inserted.
  --replica R       only replica R's chain (default: every replica)
  --from TIME       only rows from TIME (ISO 8601, e.g. 2026-11-21T00:00:00Z), inclusive
  --to TIME         only rows before TIME, exclusive
  -o, --output FMT  table (default) or json`;

/** Where the command writes; the process's streams unless a test passes its own. */
export interface CommandIo {
  stdout: { write(text: string): unknown };
  stderr: { write(text: string): unknown };
}

class UsageError extends Error {}

const PROCESS_IO: CommandIo = { stdout: process.stdout, stderr: process.stderr };

export async function decisionsCommand(args: string[], store: Store, io: CommandIo = PROCESS_IO): Promise<number> {
  try {
    const [subcommand, ...rest] = args;
    if (subcommand === "--help" || subcommand === "-h" || rest.includes("--help") || rest.includes("-h")) {
      io.stdout.write(`${HELP}\n`);
      return 0;
    }
    if (subcommand !== "verify") throw new UsageError(subcommand === undefined ? "decisions needs a subcommand: verify" : `unknown subcommand "${subcommand}"`);
    const { options, output } = parseVerifyArgs(rest);
    const report = await verifyDecisionLog(store.db, options);
    io.stdout.write(`${output === "json" ? json(report) : verdictTable(report.replicas)}\n`);
    return report.replicas.some((replica) => replica.firstBadSeq !== undefined) ? 1 : 0;
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    io.stderr.write(`licensing: ${error.message}\nRun "licensing decisions --help" for usage.\n`);
    return 2;
  }
}

const VERIFY_OPTIONS = {
  replica: { type: "string" },
  from: { type: "string" },
  to: { type: "string" },
  output: { type: "string", short: "o", default: "table" },
} as const;

function parseVerifyArgs(args: string[]): { options: VerifyOptions; output: OutputFormat } {
  const values = parseStrict(args);
  if (values.output !== "table" && values.output !== "json") {
    throw new UsageError(`--output must be table or json, got "${values.output}"`);
  }
  const options: VerifyOptions = {};
  if (values.replica !== undefined) options.replicaId = values.replica;
  if (values.from !== undefined) options.from = parseTime("--from", values.from);
  if (values.to !== undefined) options.to = parseTime("--to", values.to);
  return { options, output: values.output };
}

/** node:util parseArgs, its errors (unknown option, missing value) turned into usage errors. */
function parseStrict(args: string[]) {
  try {
    return parseArgs({ args, options: VERIFY_OPTIONS, allowPositionals: false, strict: true }).values;
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message : String(error));
  }
}

function parseTime(flag: string, text: string): Date {
  const time = new Date(text);
  if (Number.isNaN(time.getTime())) throw new UsageError(`${flag} must be an ISO 8601 time, got "${text}"`);
  return time;
}

function verdictTable(replicas: readonly ReplicaVerdict[]): string {
  if (replicas.length === 0) return "no decisions logged";
  const rows = replicas.map((r) => [
    r.replicaId,
    `${r.rows} rows`,
    r.firstBadSeq === undefined ? "ok" : `BROKEN at seq ${r.firstBadSeq}: ${r.problem ?? ""}`,
  ]);
  return table([["REPLICA", "ROWS", "CHAIN"], ...rows]);
}
