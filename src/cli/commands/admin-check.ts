/**
 * `licensing check`: asks the data plane (LicensingService.Check, the same call services make)
 * and explains the answer: the decision, which rule allowed or denied it, the limit, what
 * remains, when it resets and when to retry. With an admin token it also shows the licence's
 * rules for the feature (AdminService GetLicense), marking the one that decided.
 *
 * Exit codes: 0 allowed, 1 denied (so scripts can `if licensing check ...`), 2 bad usage;
 * an RPC error (no decision could be made) is thrown for main.ts (exit 1).
 */
import { durationMs, type Duration } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Entitlement } from "../../gen/licensing/admin/v1/admin_pb.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Decision, Reason, type CheckRequest, type CheckRequestSchema, type CheckResponse } from "../../gen/licensing/v1/licensing_pb.js";
import type { LicensingClient } from "../../client.js";
import type { AdminClient } from "../admin-client.js";
import { table } from "../output.js";
import { describeLimit, entitlementJson } from "./admin-accounts.js";
import { isoOf, jsonOut, OUTPUT, outputFormat, parse, processIo, UsageError, withUsage, type CommandIo } from "./admin-common.js";

export const CHECK_HELP = `Usage: licensing check (--key KEY | --jwt TOKEN | --license-token TOKEN) --feature FEATURE
                      [--quantity N] [--env ENV] [--instance ID] [--dry-run] [--output table|json]

Asks the service for a decision, as a calling service would, and explains it: which rule
allowed or denied, the limit, what remains, when it resets, when to retry. With an admin token
(--token, or as for the other commands) the licence's rules for the feature are shown too.
  --key KEY           an API key (lk_live_...)
  --jwt TOKEN         a JWT from the customer's identity provider
  --license-token T   a licence token this service signed
  --feature F         the feature key
  --quantity N        units to consume (default 1; 0 asks without consuming)
  --env ENV           the caller's environment, e.g. production
  --instance ID       the caller's instance (seats and capacity)
  --dry-run           evaluate without consuming anything
  -o, --output FMT    table (default) or json
Exit status: 0 allowed, 1 denied or failed, 2 bad usage.`;

/** Which kind of rule each deny reason comes from (for "decided by"). */
const REASON_RULE: Partial<Record<Reason, string>> = {
  [Reason.QUOTA_EXHAUSTED]: "quota",
  [Reason.RATE_LIMITED]: "rate",
  [Reason.SEATS_EXHAUSTED]: "seats",
  [Reason.CAPACITY_EXHAUSTED]: "capacity",
};

const REASON_TEXT: Partial<Record<Reason, string>> = {
  [Reason.OK]: "every rule for the feature allows it",
  [Reason.UNKNOWN_CREDENTIAL]: "the credential is not known (no such key or licence)",
  [Reason.INVALID_TOKEN]: "the token did not verify (signature, issuer, audience or format)",
  [Reason.TOKEN_EXPIRED]: "the credential has expired",
  [Reason.LICENSE_SUSPENDED]: "the licence is suspended (licensing licenses reinstate)",
  [Reason.LICENSE_EXPIRED]: "the licence's validity has ended (licensing licenses renew)",
  [Reason.LICENSE_NOT_YET_VALID]: "the licence is not valid yet",
  [Reason.FEATURE_NOT_ENTITLED]: "the licence's plan does not include this feature",
  [Reason.ENVIRONMENT_NOT_ALLOWED]: "the licence does not allow this environment",
  [Reason.ROLE_NOT_ALLOWED]: "the credential lacks a role or scope the feature requires",
  [Reason.QUOTA_EXHAUSTED]: "the quota for the current period is used up",
  [Reason.RATE_LIMITED]: "the rate limit is reached",
  [Reason.SEATS_EXHAUSTED]: "every seat is held by other instances",
  [Reason.CAPACITY_EXHAUSTED]: "all licensed capacity is in use",
  [Reason.BACKEND_UNAVAILABLE]: "PostgreSQL is unreachable and the answer is not known from memory (the rule fails closed)",
  [Reason.CREDENTIAL_REVOKED]: "the API key has been revoked",
};

export async function checkCommand(
  args: string[],
  licensing: LicensingClient,
  admin: AdminClient | undefined,
  io: CommandIo = processIo,
): Promise<number> {
  return withUsage(io, "check", async () => {
    const { values } = parse(args, {
      ...OUTPUT,
      key: { type: "string" },
      jwt: { type: "string" },
      "license-token": { type: "string" },
      feature: { type: "string" },
      quantity: { type: "string" },
      env: { type: "string" },
      instance: { type: "string" },
      "dry-run": { type: "boolean" },
    });
    const output = outputFormat(values.output);
    const credential = credentialOf(values.key, values.jwt, values["license-token"]);
    if (values.feature === undefined || values.feature === "") throw new UsageError("check needs --feature FEATURE");
    let quantity: bigint | undefined;
    if (values.quantity !== undefined) {
      if (!/^\d+$/.test(values.quantity)) throw new UsageError(`--quantity must be a whole number, got "${values.quantity}"`);
      quantity = BigInt(values.quantity);
    }
    const request: MessageInitShape<typeof CheckRequestSchema> = {
      credential,
      feature: values.feature,
      environment: values.env ?? "",
      instanceId: values.instance ?? "",
      dryRun: values["dry-run"] === true,
      ...(quantity === undefined ? {} : { quantity }),
    };
    const answer = await licensing.check(request);
    const rules = await featureRules(admin, answer, values.feature, io);
    const explained = explain(answer, rules);
    io.stdout(output === "json" ? `${jsonOut(explained)}\n` : `${explanationText(explained)}\n`);
    return answer.decision === Decision.ALLOW ? 0 : 1;
  });
}

function credentialOf(key: string | undefined, jwt: string | undefined, licenseToken: string | undefined): CheckRequest["credential"] {
  const given = [key, jwt, licenseToken].filter((v) => v !== undefined);
  if (given.length !== 1) throw new UsageError("check needs exactly one of --key, --jwt or --license-token");
  if (key !== undefined) return { case: "apiKey", value: key };
  if (jwt !== undefined) return { case: "bearerToken", value: jwt };
  return { case: "licenseToken", value: licenseToken ?? "" };
}

/** The licence's rules for the feature, when an admin client may read them; undefined otherwise. */
async function featureRules(admin: AdminClient | undefined, answer: CheckResponse, feature: string, io: CommandIo): Promise<Entitlement[] | undefined> {
  if (admin === undefined || answer.licenseId === "") return undefined;
  try {
    const { entitlements } = await admin.getLicense({ licenseId: answer.licenseId });
    return entitlements.filter((e) => e.feature === feature);
  } catch (error) {
    // The explanation is a bonus: without admin rights the decision itself is still shown.
    if (error instanceof ConnectError && (error.code === Code.Unauthenticated || error.code === Code.PermissionDenied || error.code === Code.NotFound)) {
      io.stderr(`(the licence's rules are not shown: ${error.rawMessage})\n`);
      return undefined;
    }
    throw error;
  }
}

interface Explanation {
  decision: "allow" | "deny";
  reason: string;
  why: string;
  decided_by: string | null;
  license_id: string | null;
  account_id: string | null;
  plan: string | null;
  limit: bigint | null;
  remaining: bigint | null;
  resets_at: string | null;
  retry_after_ms: number | null;
  cache_ttl_ms: number | null;
  depletes_at: string | null;
  policy_version: bigint;
  decision_id: string;
  message: string;
  rules: ReturnType<typeof entitlementJson>[] | null;
}

function explain(answer: CheckResponse, rules: Entitlement[] | undefined): Explanation {
  const reason = answer.reason;
  const decidedBy = decidingRule(answer, rules);
  return {
    decision: answer.decision === Decision.ALLOW ? "allow" : "deny",
    reason: Reason[reason] ?? String(reason),
    why: REASON_TEXT[reason] ?? answer.message,
    decided_by: decidedBy === undefined ? null : `${decidedBy.kind} ${describeLimit(decidedBy)}`,
    license_id: answer.licenseId || null,
    account_id: answer.accountId || null,
    plan: answer.plan || null,
    limit: answer.limit ?? null,
    remaining: answer.remaining ?? null,
    resets_at: answer.resetsAt === undefined ? null : isoOf(answer.resetsAt),
    retry_after_ms: durationOrNull(answer.retryAfter),
    cache_ttl_ms: durationOrNull(answer.cacheTtl),
    depletes_at: answer.depletesAt === undefined ? null : isoOf(answer.depletesAt),
    policy_version: answer.policyVersion,
    decision_id: answer.decisionId,
    message: answer.message,
    rules: rules === undefined ? null : rules.map(entitlementJson),
  };
}

/**
 * The rule that decided: for limit denies, the rule of that kind; otherwise the rule whose limit
 * the response reports (the binding one), or the boolean rule.
 */
function decidingRule(answer: CheckResponse, rules: Entitlement[] | undefined): Entitlement | undefined {
  if (rules === undefined) return undefined;
  const kind = REASON_RULE[answer.reason];
  if (kind !== undefined) return rules.find((r) => r.kind === kind);
  if (answer.limit !== undefined) return rules.find((r) => r.limit === answer.limit) ?? rules.find((r) => r.kind !== "boolean");
  return rules.find((r) => r.kind === "boolean");
}

function durationOrNull(duration: Duration | undefined): number | null {
  return duration === undefined ? null : durationMs(duration);
}

function explanationText(e: Explanation): string {
  const lines: string[][] = [
    ["decision", `${e.decision.toUpperCase()} (${e.reason})`],
    ["why", e.why],
  ];
  if (e.decided_by !== null) lines.push(["decided by", e.decided_by]);
  if (e.license_id !== null) lines.push(["licence", `${e.license_id} (account ${e.account_id ?? "?"}, plan ${e.plan ?? "?"}, version ${e.policy_version})`]);
  if (e.limit !== null) lines.push(["limit", String(e.limit)]);
  if (e.remaining !== null) lines.push(["remaining", String(e.remaining)]);
  if (e.resets_at !== null) lines.push(["resets", e.resets_at]);
  if (e.retry_after_ms !== null) lines.push(["retry after", `${(e.retry_after_ms / 1000).toFixed(3)} s`]);
  if (e.depletes_at !== null) lines.push(["depletes", e.depletes_at]);
  lines.push(["decision id", e.decision_id]);
  let text = table(lines);
  if (e.rules !== null && e.rules.length > 0) {
    text += `\n\nrules for this feature:\n${table([
      ["KIND", "LIMIT", "OVERAGE", "ON FAILURE", "ROLES"],
      ...e.rules.map((r) => [r.kind, r.limit === null ? "on" : `${r.limit}${r.period === null ? "" : ` / ${r.period}`}`, r.overage, r.failure_mode, r.roles.join(",") || "-"]),
    ])}`;
  }
  return text;
}
