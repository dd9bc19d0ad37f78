#!/usr/bin/env node
/**
 * `licensing`: the service and its admin CLI in one binary.
 *
 *   licensing serve                       run the service (configured by environment variables)
 *   licensing migrate [--down]            apply pending migrations to DATABASE_URL / DATA_DIR
 *   licensing apply -f FILE [...]         send a rules document to the running service
 *   licensing export [...]                print the running service's rules document
 *
 * Like src/main.ts this is an entry point: it alone reads argv and the environment, and passes
 * plain values down. Exit codes: 0 success, 1 the operation failed, 2 bad usage.
 */
import { readFile, writeFile } from "node:fs/promises";
import { resolve } from "node:path";
import { parseArgs, type ParseArgsConfig } from "node:util";
import { Code, ConnectError } from "@connectrpc/connect";
import { readAdminTokenFile } from "../admin/admin-token.js";
import { ChangeAction, type ApplyResponse } from "../gen/licensing/admin/v1/admin_pb.js";
import { runService } from "../main.js";
import { createStore, type Store } from "../store/database.js";
import { migrateDown, migrateToLatest } from "../store/migrate.js";
import { createAdminClient } from "./admin-client.js";
import { decisionsCommand, HELP as DECISIONS_HELP } from "./commands/decisions.js";
import { connectionOptions, keysCommand, KEYS_HELP, tokensCommand, TOKENS_HELP } from "./commands/tokens.js";
import { usageCommand, USAGE_HELP } from "./commands/usage.js";
import { accountsCommand, ACCOUNTS_HELP, plansCommand, PLANS_HELP } from "./commands/admin-accounts.js";
import { adminTokensCommand, ADMIN_TOKENS_HELP, apiKeysCommand, API_KEYS_HELP } from "./commands/admin-api-keys.js";
import { checkCommand, CHECK_HELP } from "./commands/admin-check.js";
import { decisionsListCommand, DECISIONS_LIST_HELP } from "./commands/admin-decisions.js";
import { licensesCommand, LICENSES_HELP } from "./commands/admin-licenses.js";
import { statusCommand, STATUS_HELP } from "./commands/admin-status.js";
import { createLicensingClient } from "../client.js";
import { json, table, type OutputFormat } from "./output.js";

class UsageError extends Error {}

const CONNECTION_HELP = `
Connection (apply, export):
  --server URL     the service's gRPC address (env LICENSING_SERVER; default http://127.0.0.1:50051)
  --token TOKEN    the admin token (env LICENSING_ADMIN_TOKEN or ADMIN_TOKEN; default: the file
                   DATA_DIR/admin-token that the embedded mode writes, DATA_DIR defaulting to ./.data)`;

const HELP: Record<string, string> = {
  main: `licensing: the licensing decision service and its admin CLI

Usage: licensing <command> [options]

Commands:
  serve      run the service (configuration from environment variables; see README)
  migrate    apply pending database migrations (DATABASE_URL, or the embedded database in DATA_DIR)
  apply      validate and apply a rules document on the running service
  export     print the running service's current rules document
  check      ask for a decision and explain it (which rule allowed or denied, what is left)
  accounts   list or show accounts
  plans      list or show plans
  licenses   list, show, suspend, reinstate or renew licences
  api-keys   create, list or revoke API keys (the secret is shown once)
  admin-tokens  create or revoke account-scoped admin tokens
  status     a licence's live usage against its limits, seats held, leases
  usage      print a licence's usage statement for a billing period
  tokens     issue a licence token (an EdDSA JWT verifiable offline)
  keys       rotate, list or retire the keys that sign licence tokens
  decisions  list decisions, or verify the hash-chained decision log

Run "licensing <command> --help" for a command's options.`,
  serve: `Usage: licensing serve

Runs the gRPC (GRPC_PORT, default 50051) and HTTP (HTTP_PORT, default 8080) listeners.
Configuration comes from environment variables, listed in the README. Stops cleanly on SIGTERM.`,
  migrate: `Usage: licensing migrate [--down]

Applies pending migrations to DATABASE_URL, or to the embedded database in DATA_DIR
(default ./.data) when DATABASE_URL is unset.
  --down     revert the most recent migration instead`,
  apply: `Usage: licensing apply -f FILE [--dry-run] [--prune] [--output table|json]

Validates the rules document FILE (YAML or JSON; "-" reads standard input) and applies it in one
transaction. Prints what changed. New API keys' secrets are printed once: store them.
  -f, --file FILE   the rules document
  --dry-run         validate and show the changes without writing anything
  --prune           also delete what the document does not declare
  -o, --output FMT  table (default) or json
${CONNECTION_HELP}`,
  export: `Usage: licensing export [--format yaml|json] [--out FILE]

Prints the current state as a rules document that "licensing apply" accepts (no key secrets).
  --format FMT   yaml (default) or json
  --out FILE     write to FILE instead of standard output
${CONNECTION_HELP}`,
};

HELP.decisions = `${DECISIONS_LIST_HELP}\n\n${DECISIONS_HELP}`;
HELP.check = CHECK_HELP;
HELP.accounts = ACCOUNTS_HELP;
HELP.plans = PLANS_HELP;
HELP.licenses = LICENSES_HELP;
HELP["api-keys"] = API_KEYS_HELP;
HELP["admin-tokens"] = ADMIN_TOKENS_HELP;
HELP.status = STATUS_HELP;
HELP.tokens = TOKENS_HELP;
HELP.keys = KEYS_HELP;
HELP.usage = USAGE_HELP;

const CONNECTION_OPTIONS = {
  server: { type: "string" },
  token: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const satisfies ParseArgsConfig["options"];

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === "--help" || command === "-h" || command === "help") {
    process.stdout.write(`${HELP.main}\n`);
    return command === undefined ? 2 : 0;
  }
  const help = HELP[command];
  if (help === undefined || command === "main") throw new UsageError(`unknown command "${command}"`);
  if (rest.includes("--help") || rest.includes("-h")) {
    process.stdout.write(`${help}\n`);
    return 0;
  }
  switch (command) {
    case "serve":
      if (rest.length > 0) throw new UsageError(`serve takes no arguments (got ${rest.join(" ")})`);
      await runService();
      return 0; // runService keeps the process alive; it exits on a signal
    case "migrate":
      return migrate(rest);
    case "apply":
      return apply(rest);
    case "export":
      return exportRules(rest);
    case "tokens":
      return tokensCommand(rest, await connect(connectionOptions(rest)));
    case "usage":
      return usageCommand(rest, await connect(connectionOptions(rest)));
    case "keys":
      return keysCommand(rest, await connect(connectionOptions(rest)));
    case "decisions":
      if (rest[0] === "list") return decisionsListCommand(rest.slice(1), await connect(connectionOptions(rest)));
      return withStore((store) => decisionsCommand(rest, store));
    case "accounts":
      return accountsCommand(rest, await connect(connectionOptions(rest)));
    case "plans":
      return plansCommand(rest, await connect(connectionOptions(rest)));
    case "licenses":
      return licensesCommand(rest, await connect(connectionOptions(rest)));
    case "api-keys":
      return apiKeysCommand(rest, await connect(connectionOptions(rest)));
    case "admin-tokens":
      return adminTokensCommand(rest, await connect(connectionOptions(rest)));
    case "status":
      return statusCommand(rest, await connect(connectionOptions(rest)));
    case "check":
      return check(rest);
    default:
      throw new UsageError(`unknown command "${command}"`);
  }
}

function parse<O extends NonNullable<ParseArgsConfig["options"]>>(args: string[], options: O) {
  try {
    return parseArgs({ args, options, allowPositionals: false, strict: true }).values;
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

function dataDir(): string {
  return resolve(process.env.DATA_DIR?.trim() || "./.data");
}

/** Opens the database the service uses (DATABASE_URL, else the embedded one in DATA_DIR). */
async function withStore(run: (store: Store) => Promise<number>): Promise<number> {
  const databaseUrl = process.env.DATABASE_URL?.trim() || undefined;
  const store = await createStore({ databaseUrl, dataDir: dataDir() });
  try {
    return await run(store);
  } finally {
    await store.close();
  }
}

async function migrate(args: string[]): Promise<number> {
  const values = parse(args, { down: { type: "boolean" } });
  return withStore(async (store) => {
    if (values.down === true) {
      const reverted = await migrateDown(store.db);
      process.stdout.write(reverted === undefined ? "nothing to revert\n" : `reverted ${reverted}\n`);
    } else {
      const { applied } = await migrateToLatest(store.db);
      process.stdout.write(applied.length === 0 ? "database is up to date\n" : `applied ${applied.join(", ")}\n`);
    }
    return 0;
  });
}

/**
 * `licensing check` asks the data plane; with an admin token it also reads the licence's
 * entitlements to explain which rule decided.
 */
async function check(args: string[]): Promise<number> {
  const { server, token } = await connection(connectionOptions(args));
  const admin = token === undefined ? undefined : createAdminClient(server, token);
  return checkCommand(args, createLicensingClient(server, { timeoutMs: 5000 }), admin);
}

type ConnectionValues = { server?: string | undefined; token?: string | undefined };

/** The service's address and the admin token: flags, then the environment, then DATA_DIR/admin-token. */
async function connection(values: ConnectionValues): Promise<{ server: string; token: string | undefined }> {
  const server = values.server ?? (process.env.LICENSING_SERVER?.trim() || "http://127.0.0.1:50051");
  if (!/^https?:\/\//.test(server)) throw new UsageError(`--server must be an http:// or https:// URL, got "${server}"`);
  const token =
    values.token ??
    (process.env.LICENSING_ADMIN_TOKEN?.trim() || process.env.ADMIN_TOKEN?.trim() || (await readAdminTokenFile(dataDir())));
  return { server, token };
}

async function connect(values: ConnectionValues) {
  const { server, token } = await connection(values);
  return createAdminClient(server, token);
}

async function apply(args: string[]): Promise<number> {
  const values = parse(args, {
    ...CONNECTION_OPTIONS,
    file: { type: "string", short: "f" },
    "dry-run": { type: "boolean" },
    prune: { type: "boolean" },
    output: { type: "string", short: "o", default: "table" },
  });
  if (values.file === undefined) throw new UsageError("apply needs -f FILE (or -f - for standard input)");
  const output = outputFormat(values.output);
  const document = values.file === "-" ? await readStdin() : await readFile(values.file, "utf8");
  const client = await connect(values);
  const response = await client.apply({ document, dryRun: values["dry-run"] === true, prune: values.prune === true });
  process.stdout.write(`${output === "json" ? json(applyJson(response)) : applyTable(response)}\n`);
  return 0;
}

async function exportRules(args: string[]): Promise<number> {
  const values = parse(args, {
    ...CONNECTION_OPTIONS,
    format: { type: "string", default: "yaml" },
    out: { type: "string" },
  });
  if (values.format !== "yaml" && values.format !== "json") {
    throw new UsageError(`--format must be yaml or json, got "${values.format}"`);
  }
  const client = await connect(values);
  const { document } = await client.export({ format: values.format });
  if (values.out === undefined) process.stdout.write(document.endsWith("\n") ? document : `${document}\n`);
  else await writeFile(values.out, document);
  return 0;
}

function outputFormat(value: string | undefined): OutputFormat {
  if (value === "table" || value === "json") return value;
  throw new UsageError(`--output must be table or json, got "${value}"`);
}

const ACTION_NAMES: Record<ChangeAction, string> = {
  [ChangeAction.UNSPECIFIED]: "unspecified",
  [ChangeAction.CREATE]: "create",
  [ChangeAction.UPDATE]: "update",
  [ChangeAction.DELETE]: "delete",
};

function applyJson(response: ApplyResponse) {
  return {
    dry_run: response.dryRun,
    changes: response.changes.map((c) => ({ kind: c.kind, id: c.id, action: ACTION_NAMES[c.action], fields: c.fields })),
    issued_keys: response.issuedKeys.map((k) => ({
      id: k.id,
      kind: k.kind,
      license_id: k.licenseId,
      prefix: k.prefix,
      secret: k.secret,
    })),
  };
}

function applyTable(response: ApplyResponse): string {
  const lines: string[] = [];
  if (response.changes.length > 0) {
    lines.push(
      table(
        response.changes.map((c) => [
          ACTION_NAMES[c.action],
          c.kind,
          c.id,
          c.fields.length > 0 ? `(${c.fields.join(", ")})` : "",
        ]),
      ),
    );
  }
  const count = response.changes.length;
  const summary = count === 0 ? "no changes" : `${count} change${count === 1 ? "" : "s"}`;
  lines.push(response.dryRun ? `${summary} (dry run: nothing written)` : summary);
  if (response.issuedKeys.length > 0) {
    lines.push("", "New API keys and service tokens (secrets shown once; store them now):");
    lines.push(table(response.issuedKeys.map((k) => [`  ${k.kind}`, k.id, k.licenseId || "-", k.secret])));
  }
  return lines.join("\n");
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

/** The canonical gRPC name of a code, as grpcurl and the gRPC docs print it: INVALID_ARGUMENT. */
function grpcCodeName(code: Code): string {
  return Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

function report(error: unknown): number {
  if (error instanceof UsageError) {
    process.stderr.write(`licensing: ${error.message}\nRun "licensing --help" for usage.\n`);
    return 2;
  }
  if (error instanceof ConnectError) {
    const hint =
      error.code === Code.Unavailable ? " (is the service running? see --server)" : error.code === Code.Unauthenticated ? " (see --token)" : "";
    process.stderr.write(`licensing: ${grpcCodeName(error.code)}${hint}:\n${error.rawMessage}\n`);
    return 1;
  }
  const code = (error as NodeJS.ErrnoException).code;
  if (code === "ENOENT" || code === "EACCES") {
    process.stderr.write(`licensing: ${(error as Error).message}\n`);
    return 1;
  }
  process.stderr.write(`licensing: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  return 1;
}

/** Exits once everything written to stdout and stderr has been handed to the OS (pipes included). */
function exitAfterFlush(code: number): void {
  process.stdout.write("", () => process.stderr.write("", () => process.exit(code)));
}

main(process.argv.slice(2)).then(
  (code) => {
    // serve keeps running until a signal; the other commands end here.
    if (process.argv[2] !== "serve") exitAfterFlush(code);
  },
  (error: unknown) => exitAfterFlush(report(error)),
);
