/**
 * `licensing api-keys create|list|revoke` (API keys of licences; `licensing keys` is the
 * licence-token signing keys) and `licensing admin-tokens create|list|revoke` (account-scoped
 * admin tokens, operator only), through AdminService.
 *
 * Secrets are printed once, on stdout (the token alone in table mode, so `$(licensing api-keys
 * create ...)` captures it); everything else goes to stderr.
 * Exit codes: 0 success, 2 bad usage (reported here); RPC errors are thrown for main.ts (exit 1).
 */
import type { AccountAdminToken, ApiKey } from "../../gen/licensing/admin/v1/admin_pb.js";
import type { AdminClient } from "../admin-client.js";
import { table } from "../output.js";
import { isoOf, jsonOut, onePositional, OUTPUT, outputFormat, parse, parseTime, processIo, UsageError, withUsage, type CommandIo } from "./admin-common.js";

export const API_KEYS_HELP = `Usage: licensing api-keys create --license LICENSE [--id ID] [--scope S]... [--expires TIME] [--output table|json]
       licensing api-keys list [--license LICENSE] [--output table|json]
       licensing api-keys revoke KEY_ID

API keys of licences (lk_live_...). Only their SHA-256 is stored.
  create    a new key; its secret is printed once (on stdout, alone, in table mode): store it now
  list      keys by id with their prefix, scopes and state (never a secret)
  revoke    Checks with the key answer CREDENTIAL_REVOKED from now on
  --license ID      the licence (create: required; list: filter)
  --id ID           the key's id (default: <licence>-<random>)
  --scope S         a scope the key carries (repeatable)
  --expires TIME    when the key stops working: 2027-01-01, or 90d from now
  -o, --output FMT  table (default) or json`;

export const ADMIN_TOKENS_HELP = `Usage: licensing admin-tokens create --account ACCOUNT [--id ID] [--output table|json]
       licensing admin-tokens list [--account ACCOUNT] [--output table|json]
       licensing admin-tokens revoke TOKEN_ID

Account admin tokens (lk_adm_...): give a customer's admin the admin API and CLI for their own
account only. Operator only. The secret is printed once; only its SHA-256 is stored. A revoked
token stops working at once on the replica that revoked it, within 5 seconds on the others.`;

export async function apiKeysCommand(args: string[], client: AdminClient, io: CommandIo = processIo): Promise<number> {
  return withUsage(io, "api-keys", async () => {
    const [sub, ...rest] = args;
    switch (sub) {
      case "create": {
        const { values } = parse(rest, {
          ...OUTPUT,
          license: { type: "string" },
          id: { type: "string" },
          scope: { type: "string", multiple: true },
          expires: { type: "string" },
        });
        const output = outputFormat(values.output);
        if (values.license === undefined || values.license === "") throw new UsageError("api-keys create needs --license LICENSE");
        const response = await client.createApiKey({
          licenseId: values.license,
          id: values.id ?? "",
          scopes: values.scope ?? [],
          ...(values.expires === undefined ? {} : { expiresAt: parseTime("--expires", values.expires, io.now(), true) }),
        });
        if (output === "json") io.stdout(`${jsonOut({ ...apiKeyJson(response.key), secret: response.secret })}\n`);
        else {
          io.stdout(`${response.secret}\n`);
          io.stderr(`API key ${response.key?.id ?? ""} for licence ${values.license} (prefix ${response.key?.prefix ?? ""}): the secret above is shown once; store it now\n`);
        }
        return 0;
      }
      case "list": {
        const { values } = parse(rest, { ...OUTPUT, license: { type: "string" } });
        const output = outputFormat(values.output);
        const { keys } = await client.listApiKeys({ licenseId: values.license ?? "" });
        const rows = keys.map(apiKeyJson);
        io.stdout(
          output === "json"
            ? `${jsonOut(rows)}\n`
            : `${rows.length === 0 ? "no API keys" : table([["ID", "LICENCE", "PREFIX", "SCOPES", "EXPIRES", "STATE"], ...rows.map((k) => [k.id, k.license_id, k.prefix, k.scopes.join(",") || "-", k.expires_at ?? "never", k.revoked_at === null ? "active" : `revoked ${k.revoked_at}`])])}\n`,
        );
        return 0;
      }
      case "revoke": {
        const { values, positionals } = parse(rest, OUTPUT, true);
        const output = outputFormat(values.output);
        const { key } = await client.revokeApiKey({ keyId: onePositional(positionals, "api-keys revoke needs exactly one KEY_ID") });
        io.stdout(output === "json" ? `${jsonOut(apiKeyJson(key))}\n` : `revoked: ${key?.id ?? ""} (${key?.prefix ?? ""}…) at ${isoOf(key?.revokedAt)}\n`);
        return 0;
      }
      default:
        throw new UsageError(sub === undefined ? "api-keys needs a subcommand: create, list or revoke" : `unknown api-keys subcommand "${sub}"`);
    }
  });
}

export async function adminTokensCommand(args: string[], client: AdminClient, io: CommandIo = processIo): Promise<number> {
  return withUsage(io, "admin-tokens", async () => {
    const [sub, ...rest] = args;
    switch (sub) {
      case "create": {
        const { values } = parse(rest, { ...OUTPUT, account: { type: "string" }, id: { type: "string" } });
        const output = outputFormat(values.output);
        if (values.account === undefined || values.account === "") throw new UsageError("admin-tokens create needs --account ACCOUNT");
        const response = await client.createAccountAdminToken({ accountId: values.account, id: values.id ?? "" });
        if (output === "json") io.stdout(`${jsonOut({ ...tokenJson(response.token), secret: response.secret })}\n`);
        else {
          io.stdout(`${response.secret}\n`);
          io.stderr(`admin token ${response.token?.id ?? ""} for account ${values.account}: the secret above is shown once; store it now\n`);
        }
        return 0;
      }
      case "list": {
        const { values } = parse(rest, { ...OUTPUT, account: { type: "string" } });
        const output = outputFormat(values.output);
        const { tokens } = await client.listAccountAdminTokens({ accountId: values.account ?? "" });
        const rows = tokens.map(tokenJson);
        io.stdout(
          output === "json"
            ? `${jsonOut(rows)}\n`
            : `${rows.length === 0 ? "no admin tokens" : table([["ID", "ACCOUNT", "PREFIX", "CREATED", "STATE"], ...rows.map((t) => [t.id, t.account_id, t.prefix, t.created_at, t.revoked_at === null ? "active" : `revoked ${t.revoked_at}`])])}\n`,
        );
        return 0;
      }
      case "revoke": {
        const { values, positionals } = parse(rest, OUTPUT, true);
        const output = outputFormat(values.output);
        const { token } = await client.revokeAccountAdminToken({ id: onePositional(positionals, "admin-tokens revoke needs exactly one TOKEN_ID") });
        io.stdout(output === "json" ? `${jsonOut(tokenJson(token))}\n` : `revoked: ${token?.id ?? ""} (account ${token?.accountId ?? ""})\n`);
        return 0;
      }
      default:
        throw new UsageError(sub === undefined ? "admin-tokens needs a subcommand: create, list or revoke" : `unknown admin-tokens subcommand "${sub}"`);
    }
  });
}

function apiKeyJson(key: ApiKey | undefined) {
  return {
    id: key?.id ?? "",
    license_id: key?.licenseId ?? "",
    prefix: key?.prefix ?? "",
    scopes: key?.scopes ?? [],
    expires_at: key?.expiresAt === undefined ? null : isoOf(key.expiresAt),
    revoked_at: key?.revokedAt === undefined ? null : isoOf(key.revokedAt),
    created_at: isoOf(key?.createdAt),
  };
}

function tokenJson(token: AccountAdminToken | undefined) {
  return {
    id: token?.id ?? "",
    account_id: token?.accountId ?? "",
    prefix: token?.prefix ?? "",
    created_at: isoOf(token?.createdAt),
    revoked_at: token?.revokedAt === undefined ? null : isoOf(token.revokedAt),
  };
}
