/**
 * What the admin CLI commands share: argument parsing with usage errors (exit 2), the output
 * format switch, and small formatters. RPC errors are not caught here: main.ts reports them
 * (exit 1) with the server's message.
 */
import { parseArgs, type ParseArgsConfig } from "node:util";
import { timestampDate, timestampFromDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { json } from "../output.js";

/** Output sinks, injectable for tests. */
export interface CommandIo {
  readonly stdout: (text: string) => void;
  readonly stderr: (text: string) => void;
  /** Epoch ms: relative times ("--since 1h") and "in 5m" are computed from it. */
  readonly now: () => number;
}

export const processIo: CommandIo = {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
  now: Date.now,
};

export class UsageError extends Error {}

/** --server and --token (main.ts connects with them); accepted by every admin command. */
export const CONNECTION = {
  server: { type: "string" },
  token: { type: "string" },
} as const satisfies ParseArgsConfig["options"];

export const OUTPUT = { output: { type: "string", short: "o", default: "table" } } as const satisfies ParseArgsConfig["options"];

/** Runs a command; a UsageError is reported with a pointer to --help and becomes exit code 2. */
export async function withUsage(io: CommandIo, command: string, run: () => Promise<number>): Promise<number> {
  try {
    return await run();
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    io.stderr(`licensing: ${error.message}\nRun "licensing ${command} --help" for usage.\n`);
    return 2;
  }
}

/** Parses options (strict) and positionals; unknown options are usage errors. */
export function parse<O extends NonNullable<ParseArgsConfig["options"]>>(
  args: string[],
  options: O,
  positionals = false,
): { values: ReturnType<typeof parseArgs<{ options: O & typeof CONNECTION; strict: true; allowPositionals: boolean }>>["values"]; positionals: string[] } {
  try {
    const parsed = parseArgs({ args, options: { ...CONNECTION, ...options }, allowPositionals: positionals, strict: true });
    return { values: parsed.values, positionals: parsed.positionals };
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

export function outputFormat(value: string | undefined): "table" | "json" {
  if (value === "table" || value === "json") return value;
  throw new UsageError(`--output must be table or json, got "${value}"`);
}

/** Exactly one positional argument, named `what` in the error. */
export function onePositional(positionals: string[], usage: string): string {
  const [first, extra] = positionals;
  if (first === undefined || first === "" || extra !== undefined) throw new UsageError(usage);
  return first;
}

export function isoOf(timestamp: Timestamp | undefined): string {
  return timestamp === undefined ? "" : timestampDate(timestamp).toISOString();
}

const RELATIVE_UNITS: Readonly<Record<string, number>> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * A time option: an ISO 8601 date or date-time ("2026-12-31", "2026-12-31T23:59:59Z"), or a
 * duration ago ("15m", "2h", "7d") for --since/--until; `future` makes durations count forward
 * (for --until of a renewal: "30d" from now).
 */
export function parseTime(option: string, text: string, nowMs: number, future = false): Timestamp {
  const relative = /^(\d+)([smhd])$/.exec(text.trim());
  if (relative?.[1] !== undefined && relative[2] !== undefined) {
    const offset = Number(relative[1]) * (RELATIVE_UNITS[relative[2]] ?? 0);
    return timestampFromDate(new Date(future ? nowMs + offset : nowMs - offset));
  }
  const ms = Date.parse(text);
  if (!/^\d{4}-\d{2}-\d{2}/.test(text) || Number.isNaN(ms)) {
    throw new UsageError(`${option} must be an ISO date or time (2026-12-31, 2026-12-31T12:00:00Z) or a duration like 30m, 12h, 7d; got "${text}"`);
  }
  return timestampFromDate(new Date(ms));
}

/** JSON for scripts: bigints as numbers when safe (strings otherwise), Timestamps as ISO strings. */
export function jsonOut(value: unknown): string {
  return json(
    JSON.parse(
      JSON.stringify(value, (_key, v: unknown) => {
        if (typeof v === "bigint") return v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= -BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v.toString();
        return v;
      }),
    ) as unknown,
  );
}

/** "1000", or "" for absent. */
export function num(value: bigint | undefined): string {
  return value === undefined ? "" : value.toString();
}
