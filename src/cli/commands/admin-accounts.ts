/**
 * `licensing accounts list|get` and `licensing plans list|get`, through AdminService.
 * Exit codes: 0 success, 2 bad usage (reported here); RPC errors are thrown for main.ts (exit 1).
 */
import type { Account, Entitlement, Plan } from "../../gen/licensing/admin/v1/admin_pb.js";
import type { AdminClient } from "../admin-client.js";
import { table } from "../output.js";
import { isoOf, jsonOut, num, onePositional, OUTPUT, outputFormat, parse, processIo, UsageError, withUsage, type CommandIo } from "./admin-common.js";

export const ACCOUNTS_HELP = `Usage: licensing accounts list [--output table|json]
       licensing accounts get ACCOUNT [--output table|json]

Accounts (customers). An account admin token sees its own account only.
  list   every account, by id
  get    one account and its licences
  -o, --output FMT  table (default) or json`;

export const PLANS_HELP = `Usage: licensing plans list [--output table|json]
       licensing plans get PLAN [--output table|json]

Plans and their entitlements (an account admin token sees the plans its licences are on).
  -o, --output FMT  table (default) or json`;

export async function accountsCommand(args: string[], client: AdminClient, io: CommandIo = processIo): Promise<number> {
  return withUsage(io, "accounts", async () => {
    const [sub, ...rest] = args;
    switch (sub) {
      case "list": {
        const output = outputFormat(parse(rest, OUTPUT).values.output);
        const accounts: Account[] = [];
        let pageToken = "";
        do {
          const page = await client.listAccounts({ pageSize: 1000, pageToken });
          accounts.push(...page.accounts);
          pageToken = page.nextPageToken;
        } while (pageToken !== "");
        const rows = accounts.map(accountJson);
        io.stdout(output === "json" ? `${jsonOut(rows)}\n` : `${rows.length === 0 ? "no accounts" : table([["ID", "NAME", "CREATED"], ...rows.map((a) => [a.id, a.name, a.created_at])])}\n`);
        return 0;
      }
      case "get": {
        const { values, positionals } = parse(rest, OUTPUT, true);
        const output = outputFormat(values.output);
        const id = onePositional(positionals, "accounts get needs exactly one ACCOUNT id");
        const { account, licenseIds } = await client.getAccount({ accountId: id });
        const result = { ...accountJson(account), license_ids: licenseIds };
        io.stdout(
          output === "json"
            ? `${jsonOut(result)}\n`
            : `${table([
                ["id", result.id],
                ["name", result.name],
                ["created", result.created_at],
                ["licences", licenseIds.join(", ") || "(none)"],
              ])}\n`,
        );
        return 0;
      }
      default:
        throw new UsageError(sub === undefined ? "accounts needs a subcommand: list or get" : `unknown accounts subcommand "${sub}"`);
    }
  });
}

export async function plansCommand(args: string[], client: AdminClient, io: CommandIo = processIo): Promise<number> {
  return withUsage(io, "plans", async () => {
    const [sub, ...rest] = args;
    switch (sub) {
      case "list": {
        const output = outputFormat(parse(rest, OUTPUT).values.output);
        const { plans } = await client.listPlans({});
        io.stdout(output === "json" ? `${jsonOut(plans.map(planJson))}\n` : `${plans.map(planTable).join("\n\n") || "no plans"}\n`);
        return 0;
      }
      case "get": {
        const { values, positionals } = parse(rest, OUTPUT, true);
        const output = outputFormat(values.output);
        const { plan } = await client.getPlan({ name: onePositional(positionals, "plans get needs exactly one PLAN name") });
        if (plan === undefined) throw new Error("the server answered without a plan");
        io.stdout(output === "json" ? `${jsonOut(planJson(plan))}\n` : `${planTable(plan)}\n`);
        return 0;
      }
      default:
        throw new UsageError(sub === undefined ? "plans needs a subcommand: list or get" : `unknown plans subcommand "${sub}"`);
    }
  });
}

function accountJson(account: Account | undefined) {
  return { id: account?.id ?? "", name: account?.name ?? "", created_at: isoOf(account?.createdAt), updated_at: isoOf(account?.updatedAt) };
}

export function entitlementJson(e: Entitlement) {
  return {
    feature: e.feature,
    kind: e.kind,
    limit: e.limit ?? null,
    period: e.period || null,
    burst: e.burst ?? null,
    overage: e.overage,
    failure_mode: e.failureMode,
    roles: e.roles,
    override: e.override,
  };
}

/** "1000 / month", "10 / second (burst 20)", "3 concurrent", "on". */
export function describeLimit(e: Entitlement): string {
  if (e.kind === "boolean") return "on";
  const limit = num(e.limit);
  if (e.kind === "seats" || e.kind === "capacity") return `${limit} concurrent`;
  const burst = e.burst === undefined ? "" : ` (burst ${e.burst})`;
  return `${limit} / ${e.period || "lifetime"}${burst}`;
}

export function entitlementsTable(entitlements: readonly Entitlement[]): string {
  if (entitlements.length === 0) return "  (no entitlements)";
  return table([
    ["FEATURE", "KIND", "LIMIT", "OVERAGE", "ON FAILURE", "ROLES", "SOURCE"],
    ...entitlements.map((e) => [e.feature, e.kind, describeLimit(e), e.overage, e.failureMode, e.roles.join(",") || "-", e.override ? "licence" : "plan"]),
  ]);
}

function planJson(plan: Plan) {
  return { name: plan.name, description: plan.description, entitlements: plan.entitlements.map(entitlementJson) };
}

function planTable(plan: Plan): string {
  return `plan ${plan.name}${plan.description === "" ? "" : ` — ${plan.description}`}\n${entitlementsTable(plan.entitlements)}`;
}
