/**
 * The decision: a pure function of (snapshot, request, counters, now). No I/O, no clock reads,
 * no globals; tested with plain objects and a fixed `now`.
 *
 * Rules are checked in a fixed order, so the reason a caller sees is stable: licence status,
 * validity window, environment, entitlement, roles, then every limit on the feature (rate,
 * quota, seats, capacity). Limits are all-or-nothing: the consumption of an allowed decision
 * is returned for the caller to commit, and a deny consumes nothing anywhere.
 *
 * When memory cannot answer (a quota lease ran dry, a seat is not held yet), the outcome is
 * "need": the caller asks Postgres (one round trip) and decides again. When Postgres is known
 * to be unreachable, the entitlement's failure mode answers instead.
 */
import { Reason } from "../gen/licensing/v1/licensing_pb.js";
import type { Consumption, CounterReader, QuotaView } from "./counters.js";
import type { ApiKeyRecord, EntitlementRule, LicenseSnapshot } from "./snapshot.js";

export interface DecisionRequest {
  readonly feature: string;
  /** Units asked for; 0 asks without consuming. */
  readonly quantity: number;
  /** Empty when the caller did not say. */
  readonly environment: string;
  /** Roles or scopes the credential carries. */
  readonly roles: readonly string[];
  /** Required by seat and capacity entitlements. */
  readonly instanceId: string;
  /** Evaluate without consuming (and without leasing or taking a seat). */
  readonly dryRun: boolean;
  /**
   * What may be asked of Postgres: "ask" (a round trip is possible: answer "need" when memory
   * cannot decide), "asked" (the needs were just fulfilled: a seat still not held means none is
   * free), or "unreachable" (answer from each entitlement's failure mode).
   */
  readonly postgres: PostgresState;
}

export type PostgresState = "ask" | "asked" | "unreachable";

export interface Verdict {
  readonly allow: boolean;
  readonly reason: Reason;
  /** Safe to show to the end user; names the feature or licence, never a secret. */
  readonly message: string;
}

/** Where the binding limit stands: the one that denied, or the tightest of those that allowed. */
export interface LimitStatus {
  readonly limit: number;
  readonly remaining: number;
  /** Quota period end (epoch ms); null when the limit does not reset. */
  readonly resetsAtMs: number | null;
  /** When asking again may succeed (epoch ms); null when it is not about waiting. */
  readonly retryAtMs: number | null;
}

/** Units allowed without a lease because Postgres was unreachable and the rule fails open. */
export interface FailOpenUse {
  readonly rule: EntitlementRule;
  readonly quantity: number;
}

/** What must be asked of Postgres before deciding again. */
export type Need =
  | { readonly kind: "quota"; readonly rule: EntitlementRule; readonly quantity: number }
  | { readonly kind: "seat"; readonly rule: EntitlementRule; readonly instanceId: string };

export type Decision =
  | {
      readonly outcome: "decided";
      readonly verdict: Verdict;
      /** Empty for denies, dry runs and quantity 0. */
      readonly consumption: readonly Consumption[];
      readonly failOpen: readonly FailOpenUse[];
      /** Absent for features with no limit (boolean) and for denies before the limits. */
      readonly status?: LimitStatus;
    }
  | { readonly outcome: "need"; readonly needs: readonly Need[] };

const NOTHING: readonly never[] = Object.freeze([]);

const ALLOWED: Verdict = Object.freeze({ allow: true, reason: Reason.OK, message: "allowed" });

/** A decision made before any limit was looked at (no credential, no licence): the verdict alone. */
export function verdictOnly(verdict: Verdict): Decision & { readonly outcome: "decided" } {
  return { outcome: "decided", verdict, consumption: NOTHING, failOpen: NOTHING };
}

function denied(reason: Reason, message: string, status?: LimitStatus): Decision {
  const verdict = { allow: false, reason, message };
  return status === undefined
    ? { outcome: "decided", verdict, consumption: NOTHING, failOpen: NOTHING }
    : { outcome: "decided", verdict, consumption: NOTHING, failOpen: NOTHING, status };
}

/** Whether the key itself may be used at `nowMs`; undefined when it may. */
export function keyVerdict(key: ApiKeyRecord, nowMs: number): Verdict | undefined {
  if (key.revokedAtMs !== null && key.revokedAtMs <= nowMs) {
    return { allow: false, reason: Reason.CREDENTIAL_REVOKED, message: `API key ${key.prefix}… has been revoked` };
  }
  if (key.expiresAtMs !== null && key.expiresAtMs <= nowMs) {
    return {
      allow: false,
      reason: Reason.TOKEN_EXPIRED,
      message: `API key ${key.prefix}… expired at ${new Date(key.expiresAtMs).toISOString()}`,
    };
  }
  return undefined;
}

export function decide(
  snapshot: LicenseSnapshot,
  request: DecisionRequest,
  counters: CounterReader,
  nowMs: number,
): Decision {
  const licenseDenied = checkLicense(snapshot, request, nowMs);
  if (licenseDenied !== undefined) return licenseDenied;

  const rules = snapshot.entitlements.get(request.feature);
  if (rules === undefined || rules.length === 0) {
    return denied(
      Reason.FEATURE_NOT_ENTITLED,
      `licence ${snapshot.licenseId} (plan ${snapshot.plan}) does not include feature "${request.feature}"`,
    );
  }
  for (const rule of rules) {
    if (rule.roles.length > 0 && !rule.roles.some((role) => request.roles.includes(role))) {
      return denied(Reason.ROLE_NOT_ALLOWED, `feature "${rule.feature}" requires one of the roles ${rule.roles.join(", ")}`);
    }
  }
  return checkLimits(snapshot.licenseId, rules, request, counters, nowMs);
}

function checkLicense(snapshot: LicenseSnapshot, request: DecisionRequest, nowMs: number): Decision | undefined {
  if (snapshot.status === "suspended") {
    return denied(Reason.LICENSE_SUSPENDED, `licence ${snapshot.licenseId} is suspended`);
  }
  if (snapshot.validFromMs !== null && nowMs < snapshot.validFromMs) {
    return denied(
      Reason.LICENSE_NOT_YET_VALID,
      `licence ${snapshot.licenseId} is valid from ${new Date(snapshot.validFromMs).toISOString()}`,
    );
  }
  if (snapshot.validUntilMs !== null && nowMs >= snapshot.validUntilMs) {
    return denied(
      Reason.LICENSE_EXPIRED,
      `licence ${snapshot.licenseId} expired at ${new Date(snapshot.validUntilMs).toISOString()}`,
    );
  }
  if (snapshot.environments.size > 0 && !snapshot.environments.has(request.environment)) {
    const asked = request.environment === "" ? "an unspecified environment" : `environment "${request.environment}"`;
    return denied(
      Reason.ENVIRONMENT_NOT_ALLOWED,
      `licence ${snapshot.licenseId} is not valid in ${asked} (allowed: ${[...snapshot.environments].join(", ")})`,
    );
  }
  return undefined;
}

/** What every limit of one decision is checked against. */
interface LimitContext {
  readonly licenseId: string;
  readonly request: DecisionRequest;
  readonly counters: CounterReader;
  readonly nowMs: number;
  /** The request consumes (quantity > 0 and not a dry run). */
  readonly consuming: boolean;
}

/** One limit's answer: pass (with what it would consume), deny, or ask Postgres first. */
type LimitResult =
  | { readonly pass: true; readonly consumption?: Consumption; readonly failOpen?: FailOpenUse; readonly status?: LimitStatus }
  | { readonly pass: false; readonly decision: Decision }
  | { readonly pass: "need"; readonly need: Need };

function checkLimits(
  licenseId: string,
  rules: readonly EntitlementRule[],
  request: DecisionRequest,
  counters: CounterReader,
  nowMs: number,
): Decision {
  const consuming = request.quantity > 0 && !request.dryRun;
  let consumption: Consumption[] | undefined;
  let failOpen: FailOpenUse[] | undefined;
  let needs: Need[] | undefined;
  let tightest: LimitStatus | undefined;
  const limitContext: LimitContext = { licenseId, request, counters, nowMs, consuming };
  for (const rule of rules) {
    const result = checkLimit(rule, limitContext);
    if (result.pass === false) return result.decision;
    if (result.pass === "need") {
      (needs ??= []).push(result.need);
      continue;
    }
    // [x] rather than []+push: an empty array grows to 16 slots on its first push, and a
    // Check consumes from one or two limits.
    if (result.consumption !== undefined) {
      if (consumption === undefined) consumption = [result.consumption];
      else consumption.push(result.consumption);
    }
    if (result.failOpen !== undefined) {
      if (failOpen === undefined) failOpen = [result.failOpen];
      else failOpen.push(result.failOpen);
    }
    if (result.status !== undefined && (tightest === undefined || result.status.remaining < tightest.remaining)) {
      tightest = result.status;
    }
  }
  if (needs !== undefined) return { outcome: "need", needs };
  const consumed = consumption ?? NOTHING;
  const failedOpen = failOpen ?? NOTHING;
  return tightest === undefined
    ? { outcome: "decided", verdict: ALLOWED, consumption: consumed, failOpen: failedOpen }
    : { outcome: "decided", verdict: ALLOWED, consumption: consumed, failOpen: failedOpen, status: tightest };
}

/** A limit that passes with nothing to consume or report (a boolean feature). */
const PASS: LimitResult = { pass: true };

function checkLimit(rule: EntitlementRule, limitContext: LimitContext): LimitResult {
  switch (rule.kind) {
    case "boolean":
      return PASS;
    case "rate":
      return checkRate(rule, limitContext);
    case "quota":
      return checkQuota(rule, limitContext);
    case "seats":
    case "capacity":
      return checkSeat(rule, limitContext);
  }
}

function checkRate(rule: EntitlementRule, limitContext: LimitContext): LimitResult {
  const { licenseId, request, counters, nowMs, consuming } = limitContext;
  const view = counters.rate(licenseId, rule, nowMs);
  const wanted = Math.max(request.quantity, 1);
  const limit = rule.limit ?? 0;
  if (view.tokens >= wanted) {
    const remaining = Math.floor(view.tokens - (consuming ? request.quantity : 0));
    const status = { limit, remaining, resetsAtMs: null, retryAtMs: null };
    return consuming ? { pass: true, consumption: { kind: "rate", rule, quantity: request.quantity }, status } : { pass: true, status };
  }
  const fillable = wanted <= view.capacity && view.refillPerSecond > 0;
  const waitMs = fillable ? Math.ceil(((wanted - view.tokens) / view.refillPerSecond) * 1000) : null;
  const status = { limit, remaining: Math.floor(view.tokens), resetsAtMs: null, retryAtMs: waitMs === null ? null : nowMs + waitMs };
  const message = fillable
    ? `rate limit of ${limit} per ${rule.period ?? "second"} for feature "${rule.feature}" reached`
    : `quantity ${wanted} exceeds the burst of the rate limit for feature "${rule.feature}"`;
  return { pass: false, decision: denied(Reason.RATE_LIMITED, message, status) };
}

function checkQuota(rule: EntitlementRule, limitContext: LimitContext): LimitResult {
  const { licenseId, request, counters, nowMs, consuming } = limitContext;
  const view = counters.quota(licenseId, rule, nowMs);
  if (!consuming) {
    // Asking without consuming: answer from what is known, never lease.
    const wanted = Math.max(request.quantity, 1);
    const available = view.localAvailable >= wanted || (!view.exhausted && view.remaining >= wanted);
    if (available || rule.overage === "allow_and_bill") return { pass: true, status: quotaStatusAfter(rule, view, 0) };
    return { pass: false, decision: quotaExhausted(rule, view.remaining, view.resetsAtMs) };
  }
  const quantity = request.quantity;
  if (view.localAvailable >= quantity) {
    return { pass: true, consumption: { kind: "quota", rule, quantity, overage: 0 }, status: quotaStatusAfter(rule, view, quantity) };
  }
  if (!view.exhausted) {
    if (request.postgres !== "unreachable") return { pass: "need", need: { kind: "quota", rule, quantity } };
    if (rule.failureMode === "fail_closed") return { pass: false, decision: backendUnavailable(rule) };
    const fromLease = view.localAvailable;
    const status = quotaStatusAfter(rule, view, quantity);
    return fromLease > 0
      ? { pass: true, consumption: { kind: "quota", rule, quantity: fromLease, overage: 0 }, failOpen: { rule, quantity: quantity - fromLease }, status }
      : { pass: true, failOpen: { rule, quantity }, status };
  }
  if (rule.overage === "allow_and_bill") {
    const fromLease = view.localAvailable;
    return { pass: true, consumption: { kind: "quota", rule, quantity, overage: quantity - fromLease }, status: quotaStatusAfter(rule, view, quantity) };
  }
  return { pass: false, decision: quotaExhausted(rule, view.remaining, view.resetsAtMs) };
}

/** Where a quota stands once `spent` units of this decision are taken (a function, not a closure per Check). */
function quotaStatusAfter(rule: EntitlementRule, view: QuotaView, spent: number): LimitStatus {
  return { limit: rule.limit ?? 0, remaining: Math.max(0, view.remaining - spent), resetsAtMs: view.resetsAtMs, retryAtMs: null };
}

function quotaExhausted(rule: EntitlementRule, remaining: number, resetsAtMs: number | null): Decision {
  const limit = rule.limit ?? 0;
  const when = resetsAtMs === null ? "it does not reset" : `it resets at ${new Date(resetsAtMs).toISOString()}`;
  return denied(
    Reason.QUOTA_EXHAUSTED,
    `quota of ${limit} per ${rule.period ?? "period"} for feature "${rule.feature}" is used up; ${when}`,
    { limit, remaining: Math.max(0, remaining), resetsAtMs, retryAtMs: resetsAtMs },
  );
}

function checkSeat(rule: EntitlementRule, limitContext: LimitContext): LimitResult {
  const { licenseId, request, counters, nowMs, consuming } = limitContext;
  const limit = rule.limit ?? 0;
  const view = counters.seat(licenseId, rule, request.instanceId, nowMs);
  const status: LimitStatus = { limit, remaining: Math.max(0, limit - view.inUse), resetsAtMs: null, retryAtMs: null };
  if (view.held) {
    return consuming ? { pass: true, consumption: { kind: "seat", rule, instanceId: request.instanceId }, status } : { pass: true, status };
  }
  if (!consuming) {
    if (view.inUse < limit) return { pass: true, status };
    return { pass: false, decision: seatsExhausted(rule, view.inUse, view.nextExpiryMs) };
  }
  switch (request.postgres) {
    case "ask":
      return { pass: "need", need: { kind: "seat", rule, instanceId: request.instanceId } };
    case "asked":
      // The acquisition just failed: every seat is held by another live instance.
      return { pass: false, decision: seatsExhausted(rule, Math.max(view.inUse, limit), view.nextExpiryMs) };
    case "unreachable":
      return rule.failureMode === "fail_open" ? { pass: true, status } : { pass: false, decision: backendUnavailable(rule) };
  }
}

function seatsExhausted(rule: EntitlementRule, inUse: number, nextExpiryMs: number | null): Decision {
  const limit = rule.limit ?? 0;
  const capacity = rule.kind === "capacity";
  return denied(
    capacity ? Reason.CAPACITY_EXHAUSTED : Reason.SEATS_EXHAUSTED,
    capacity
      ? `all ${limit} capacity units of feature "${rule.feature}" are in use`
      : `all ${limit} seats of feature "${rule.feature}" are held by other instances`,
    { limit, remaining: Math.max(0, limit - inUse), resetsAtMs: null, retryAtMs: nextExpiryMs },
  );
}

function backendUnavailable(rule: EntitlementRule): Decision {
  return denied(
    Reason.BACKEND_UNAVAILABLE,
    `the licence database is unreachable and feature "${rule.feature}" fails closed`,
  );
}
