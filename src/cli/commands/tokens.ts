/**
 * `licensing tokens issue` and `licensing keys rotate|list|retire`: licence tokens and their
 * signing keys, through the running service's AdminService.
 *
 * The commands take a connected client (main.ts connects, with --server/--token, which these
 * commands accept and leave to it: see `connectionOptions`). Exit codes as elsewhere: 0 success,
 * 2 bad usage (reported here); RPC errors are thrown for main.ts to report (exit 1).
 */
import { parseArgs, type ParseArgsConfig } from "node:util";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import type { AdminClient } from "../admin-client.js";
import { json, table } from "../output.js";

export const TOKENS_HELP = `Usage: licensing tokens issue --license LICENSE [--ttl DURATION] [--output table|json]

Signs a licence token (an EdDSA JWT naming the licence, its plan and entitlements) that anyone
can verify offline with the keys at /.well-known/jwks.json. The token is a bearer credential:
store it like a secret.
  --license ID      the licence
  --ttl DURATION    lifetime: 90s, 30m, 1h (default), 7d, up to 30d; a bare number is seconds
  -o, --output FMT  table (default: the token alone, on one line) or json`;

export const KEYS_HELP = `Usage: licensing keys rotate
       licensing keys list [--output table|json]
       licensing keys retire KID

Licence-token signing keys (Ed25519).
  rotate   create a new key that signs from now on; the keys it replaces keep verifying
           until their scheduled retirement (30 days and 5 minutes later, so that every token
           they signed has expired by then)
  list     every key, newest first, with when it was created, activated and (is) retired
  retire   retire KID now: tokens it signed stop verifying at once (use on compromise)`;

/** Output sinks, injectable for tests. */
export interface CommandIo {
  readonly stdout: (text: string) => void;
  readonly stderr: (text: string) => void;
  /** Epoch ms, to tell scheduled retirements from past ones in `keys list`. */
  readonly now: () => number;
}

const processIo: CommandIo = {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
  now: Date.now,
};

const CONNECTION = {
  server: { type: "string" },
  token: { type: "string" },
} as const satisfies ParseArgsConfig["options"];

/** The --server and --token values among `args` (for main.ts to connect with). */
export function connectionOptions(args: string[]): { server?: string | undefined; token?: string | undefined } {
  const { values } = parseArgs({ args, options: CONNECTION, strict: false, allowPositionals: true });
  const text = (v: unknown): string | undefined => (typeof v === "string" ? v : undefined);
  return { server: text(values.server), token: text(values.token) };
}

class UsageError extends Error {}

/** `licensing tokens <args>`. */
export async function tokensCommand(args: string[], client: AdminClient, io: CommandIo = processIo): Promise<number> {
  return withUsage(io, "tokens", async () => {
    const [sub, ...rest] = args;
    if (sub !== "issue") throw new UsageError(sub === undefined ? "tokens needs a subcommand: issue" : `unknown tokens subcommand "${sub}"`);
    const values = parse(rest, { license: { type: "string" }, ttl: { type: "string" }, output: { type: "string", short: "o", default: "table" } });
    if (values.license === undefined || values.license === "") throw new UsageError("tokens issue needs --license LICENSE");
    const output = outputFormat(values.output);
    const ttlSeconds = values.ttl === undefined ? 0 : parseDuration(values.ttl);
    const response = await client.issueLicenseToken({ licenseId: values.license, ttlSeconds: BigInt(ttlSeconds) });
    const expiresAt = isoOf(response.expiresAt);
    io.stdout(
      output === "json"
        ? `${json({ token: response.token, expires_at: expiresAt, kid: response.kid })}\n`
        : `${response.token}\n`,
    );
    if (output === "table") io.stderr(`licence token for ${values.license}, key ${response.kid}, expires ${expiresAt}\n`);
    return 0;
  });
}

/** `licensing keys <args>`. */
export async function keysCommand(args: string[], client: AdminClient, io: CommandIo = processIo): Promise<number> {
  return withUsage(io, "keys", async () => {
    const [sub, ...rest] = args;
    switch (sub) {
      case "rotate": {
        parse(rest, {});
        const { kid } = await client.rotateSigningKey({});
        io.stdout(`rotated: ${kid} now signs; the previous keys verify until their scheduled retirement\n`);
        return 0;
      }
      case "list": {
        const values = parse(rest, { output: { type: "string", short: "o", default: "table" } });
        const output = outputFormat(values.output);
        const { keys } = await client.listSigningKeys({});
        const rows = keys.map((k) => ({
          kid: k.kid,
          created_at: isoOf(k.createdAt),
          activated_at: isoOf(k.activatedAt),
          retired_at: isoOf(k.retiredAt),
        }));
        io.stdout(output === "json" ? `${json(rows)}\n` : `${keysTable(rows, io.now())}\n`);
        return 0;
      }
      case "retire": {
        const { positionals } = parseWithPositionals(rest);
        const [kid, extra] = positionals;
        if (kid === undefined || extra !== undefined) throw new UsageError("keys retire needs exactly one KID");
        await client.retireSigningKey({ kid });
        io.stdout(`retired: ${kid} (tokens it signed no longer verify)\n`);
        return 0;
      }
      default:
        throw new UsageError(sub === undefined ? "keys needs a subcommand: rotate, list or retire" : `unknown keys subcommand "${sub}"`);
    }
  });
}

async function withUsage(io: CommandIo, command: string, run: () => Promise<number>): Promise<number> {
  try {
    return await run();
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    io.stderr(`licensing: ${error.message}\nRun "licensing ${command} --help" for usage.\n`);
    return 2;
  }
}

function parse<O extends NonNullable<ParseArgsConfig["options"]>>(args: string[], options: O) {
  try {
    return parseArgs({ args, options: { ...CONNECTION, ...options }, allowPositionals: false, strict: true }).values;
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

function parseWithPositionals(args: string[]) {
  try {
    return parseArgs({ args, options: CONNECTION, allowPositionals: true, strict: true });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

function outputFormat(value: string | undefined): "table" | "json" {
  if (value === "table" || value === "json") return value;
  throw new UsageError(`--output must be table or json, got "${value}"`);
}

const UNITS: Readonly<Record<string, number>> = { s: 1, m: 60, h: 3600, d: 86_400 };

/** "90s", "30m", "1h", "7d" or bare seconds → seconds; the server enforces the 30-day maximum. */
export function parseDuration(text: string): number {
  const match = /^(\d+)([smhd]?)$/.exec(text.trim());
  const unit = UNITS[match?.[2] === "" || match?.[2] === undefined ? "s" : match[2]];
  if (match?.[1] === undefined || unit === undefined || Number(match[1]) === 0) {
    throw new UsageError(`--ttl must be a positive duration like 90s, 30m, 1h or 7d, got "${text}"`);
  }
  return Number(match[1]) * unit;
}

function isoOf(timestamp: Timestamp | undefined): string {
  return timestamp === undefined ? "" : timestampDate(timestamp).toISOString();
}

function keysTable(rows: ReadonlyArray<Record<"kid" | "created_at" | "activated_at" | "retired_at", string>>, nowMs: number): string {
  if (rows.length === 0) return "no signing keys yet (one is created by the first licence token, or by keys rotate)";
  const state = (retiredAt: string): string => {
    if (retiredAt === "") return "active (signs)";
    return Date.parse(retiredAt) > nowMs ? `verifies until ${retiredAt}` : `retired ${retiredAt}`;
  };
  return table([
    ["KID", "CREATED", "STATE"],
    ...rows.map((r) => [r.kid, r.created_at, state(r.retired_at)]),
  ]);
}
