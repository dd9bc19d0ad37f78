/**
 * Usage statements: what a licence used in a calendar month (UTC) and what it owes for it.
 *
 * Per feature:
 * - quota entitlements: `used` is everything counted in the quota counters of the periods
 *   starting in the month (Checks' consumption and reported usage, used + overage columns);
 *   `included` is the limit for monthly quotas, and the limit times the number of periods in
 *   the month for hourly and daily ones (each period has its own allowance, so a daily quota
 *   of 100 includes 3000 units in a 30-day month); `overage` is, per quota period,
 *   max(0, used - limit), summed, for `allow_and_bill` entitlements (0 for `block`: usage past a
 *   hard limit, e.g. reported after the fact, is shown in `used` but not billed). Lifetime quotas
 *   have no monthly allowance: their line shows the cumulative count and bills nothing.
 * - other features with reported usage (boolean, rate): `used` sums the events of the month;
 *   nothing is included or billed.
 * - capacity entitlements: unit-seconds and their amount come from a `CapacityUsageSource`
 *   (the Scale work plugs in there; the default reports 0).
 * `amount_due = overage × unit_price`, in minor currency units, exact (bigint throughout).
 *
 * A period is closed once its end plus the grace period (late settlements and reports) has
 * passed. The first request after that computes the statement and stores it; every later
 * request reads the stored one, so a closed statement never changes, whatever arrives later.
 * (Usage reported for a closed period after that is kept in usage_events, but is billed in no
 * statement: choose the grace so that reporters deliver within it.)
 */
import { sql, type Kysely } from "kysely";
import type { EntitlementRule } from "../licensing/snapshot.js";
import { loadLicenseSnapshot } from "../store/licenses.js";
import type { Database, EntitlementKind, EntitlementPeriod } from "../store/schema.js";
import { addMonths, formatMonth, monthStartMs, parseMonth } from "./partitions.js";

export interface StatementLine {
  readonly feature: string;
  /** The entitlement kind; "unentitled" for usage of a feature the licence no longer has. */
  readonly kind: EntitlementKind | "unentitled";
  /** The quota's period (quota lines only). */
  readonly quotaPeriod: EntitlementPeriod | null;
  /** Units included in the month; null when unlimited or not applicable. */
  readonly included: bigint | null;
  readonly used: bigint;
  readonly overage: bigint;
  /** Minor currency units per overage unit. */
  readonly unitPrice: bigint;
  readonly amountDue: bigint;
}

export interface CapacityLine {
  readonly feature: string;
  /** Units held × seconds held, over the month. */
  readonly unitSeconds: bigint;
  /** Minor currency units per unit-hour. */
  readonly unitPrice: bigint;
  readonly amountDue: bigint;
}

export interface UsageStatement {
  readonly licenseId: string;
  readonly accountId: string;
  readonly plan: string;
  /** "2026-11" */
  readonly period: string;
  readonly periodStartMs: number;
  readonly periodEndMs: number;
  readonly currency: string;
  readonly lines: readonly StatementLine[];
  readonly capacity: readonly CapacityLine[];
  readonly totalDue: bigint;
  /** True for a closed period's stored statement (it never changes). */
  readonly final: boolean;
  readonly computedAtMs: number;
}

/**
 * The extension point for capacity billing (Scale): unit-seconds held per capacity feature over
 * [startMs, endMs) and their price. Receives the licence's capacity entitlements.
 */
export type CapacityUsageSource = (
  db: Kysely<Database>,
  licenseId: string,
  rules: readonly EntitlementRule[],
  startMs: number,
  endMs: number,
) => Promise<CapacityLine[]>;

/** Until Scale lands: every capacity entitlement with 0 unit-seconds, its price, nothing due. */
export const placeholderCapacityUsage: CapacityUsageSource = async (_db, _licenseId, rules) =>
  rules.map((rule) => ({ feature: rule.feature, unitSeconds: 0n, unitPrice: BigInt(rule.unitPrice ?? 0), amountDue: 0n }));

export interface StatementOptions {
  /** Epoch ms. */
  readonly nowMs: number;
  /** STATEMENT_GRACE_MS: a period closes this long after its end. Default 1 day. */
  readonly graceMs?: number;
  /** STATEMENT_CURRENCY: ISO 4217 code of the prices. Default "EUR". */
  readonly currency?: string;
  readonly capacity?: CapacityUsageSource;
}

export class StatementError extends Error {
  constructor(
    readonly kind: "invalid_period" | "not_found",
    message: string,
  ) {
    super(message);
    this.name = "StatementError";
  }
}

const DEFAULT_GRACE_MS = 86_400_000;
const PERIOD_MS: Partial<Record<EntitlementPeriod, number>> = { second: 1000, minute: 60_000, hour: 3_600_000, day: 86_400_000 };

/**
 * The statement of `licenseId` for `period` ("YYYY-MM"). Throws StatementError for a malformed
 * period or an unknown licence (with no stored statement).
 */
export async function getUsageStatement(
  db: Kysely<Database>,
  licenseId: string,
  period: string,
  options: StatementOptions,
): Promise<UsageStatement> {
  const month = parseMonth(period);
  if (month === undefined) throw new StatementError("invalid_period", `must be a month as YYYY-MM, e.g. 2026-11, not "${period}"`);
  const startMs = monthStartMs(month);
  const endMs = monthStartMs(addMonths(month, 1));
  const closed = options.nowMs >= endMs + (options.graceMs ?? DEFAULT_GRACE_MS);
  if (!closed) return computeStatement(db, licenseId, formatMonth(month), startMs, endMs, options, false);

  const stored = await readStored(db, licenseId, period);
  if (stored !== undefined) return stored;
  const statement = await computeStatement(db, licenseId, formatMonth(month), startMs, endMs, options, true);
  // Two replicas may compute at once: the first stored wins and both answer it.
  await db
    .insertInto("usage_statements")
    .values({ license_id: licenseId, period, computed_at: new Date(statement.computedAtMs), statement: JSON.stringify(toJson(statement)) })
    .onConflict((oc) => oc.columns(["license_id", "period"]).doNothing())
    .execute();
  return (await readStored(db, licenseId, period)) ?? statement;
}

async function readStored(db: Kysely<Database>, licenseId: string, period: string): Promise<UsageStatement | undefined> {
  const row = await db.selectFrom("usage_statements").select("statement").where("license_id", "=", licenseId).where("period", "=", period).executeTakeFirst();
  return row === undefined ? undefined : fromJson(row.statement as StatementJson);
}

async function computeStatement(
  db: Kysely<Database>,
  licenseId: string,
  period: string,
  startMs: number,
  endMs: number,
  options: StatementOptions,
  final: boolean,
): Promise<UsageStatement> {
  const snapshot = await loadLicenseSnapshot(db, licenseId);
  if (snapshot === undefined) throw new StatementError("not_found", `license "${licenseId}" does not exist`);
  const rules = [...snapshot.entitlements.values()].flat();
  const quotas = rules.filter((r) => r.kind === "quota");
  const counters = await quotaUsage(db, licenseId, startMs, endMs);
  const reported = await reportedUsage(db, licenseId, startMs, endMs);

  const lines: StatementLine[] = quotas.map((rule) => quotaLine(rule, counters.get(rule.feature) ?? [], startMs, endMs));
  const quotaFeatures = new Set(quotas.map((r) => r.feature));
  for (const [feature, used] of [...reported.entries()].sort(([a], [b]) => (a < b ? -1 : 1))) {
    if (quotaFeatures.has(feature)) continue;
    const kind = snapshot.entitlements.get(feature)?.[0]?.kind ?? "unentitled";
    lines.push({ feature, kind, quotaPeriod: null, included: null, used, overage: 0n, unitPrice: 0n, amountDue: 0n });
  }
  lines.sort((a, b) => (a.feature < b.feature ? -1 : a.feature > b.feature ? 1 : 0));
  const capacity = await (options.capacity ?? placeholderCapacityUsage)(db, licenseId, rules.filter((r) => r.kind === "capacity"), startMs, endMs);
  const totalDue = lines.reduce((sum, l) => sum + l.amountDue, 0n) + capacity.reduce((sum, c) => sum + c.amountDue, 0n);
  return {
    licenseId,
    accountId: snapshot.accountId,
    plan: snapshot.plan,
    period,
    periodStartMs: startMs,
    periodEndMs: endMs,
    currency: options.currency ?? "EUR",
    lines,
    capacity,
    totalDue,
    final,
    computedAtMs: options.nowMs,
  };
}

interface CounterRow {
  readonly periodStartMs: number;
  /** used + overage of that quota period. */
  readonly units: bigint;
}

/** Counter rows of periods starting in the month, plus the lifetime row, per feature. */
async function quotaUsage(db: Kysely<Database>, licenseId: string, startMs: number, endMs: number): Promise<Map<string, CounterRow[]>> {
  const { rows } = await sql<{ feature: string; period_start: Date; units: string }>`
    select feature, period_start, (used + overage)::text as units
    from quota_counters
    where license_id = ${licenseId}
      and ((period_start >= ${new Date(startMs).toISOString()}::timestamptz and period_start < ${new Date(endMs).toISOString()}::timestamptz)
           or period_start = 'epoch'::timestamptz)
  `.execute(db);
  const byFeature = new Map<string, CounterRow[]>();
  for (const row of rows) {
    const list = byFeature.get(row.feature) ?? [];
    list.push({ periodStartMs: row.period_start.getTime(), units: BigInt(row.units) });
    byFeature.set(row.feature, list);
  }
  return byFeature;
}

/** Reported quantities of the month per feature (sums as exact decimal text). */
async function reportedUsage(db: Kysely<Database>, licenseId: string, startMs: number, endMs: number): Promise<Map<string, bigint>> {
  const { rows } = await sql<{ feature: string; used: string }>`
    select feature, sum(quantity)::text as used
    from usage_events
    where license_id = ${licenseId}
      and occurred_at >= ${new Date(startMs).toISOString()}::timestamptz and occurred_at < ${new Date(endMs).toISOString()}::timestamptz
    group by feature
  `.execute(db);
  return new Map(rows.map((r) => [r.feature, BigInt(r.used)]));
}

function quotaLine(rule: EntitlementRule, rows: readonly CounterRow[], startMs: number, endMs: number): StatementLine {
  const limit = BigInt(rule.limit ?? 0);
  const unitPrice = BigInt(rule.unitPrice ?? 0);
  const base = { feature: rule.feature, kind: rule.kind, quotaPeriod: rule.period, unitPrice } as const;
  if (rule.period === "lifetime" || rule.period === null) {
    const used = rows.filter((r) => r.periodStartMs === 0).reduce((sum, r) => sum + r.units, 0n);
    return { ...base, included: limit, used, overage: 0n, amountDue: 0n };
  }
  const inMonth = rows.filter((r) => r.periodStartMs >= startMs && r.periodStartMs < endMs);
  const used = inMonth.reduce((sum, r) => sum + r.units, 0n);
  const billable = rule.overage === "allow_and_bill";
  const overage = billable ? inMonth.reduce((sum, r) => sum + (r.units > limit ? r.units - limit : 0n), 0n) : 0n;
  const periodMs = PERIOD_MS[rule.period];
  const periods = periodMs === undefined ? 1n : BigInt(Math.ceil((endMs - startMs) / periodMs));
  return { ...base, included: limit * periods, used, overage, amountDue: overage * unitPrice };
}

/** The stored form: integers as decimal strings (JSON numbers would lose bigints). */
interface StatementJson {
  licenseId: string;
  accountId: string;
  plan: string;
  period: string;
  periodStartMs: number;
  periodEndMs: number;
  currency: string;
  lines: Array<Omit<StatementLine, "included" | "used" | "overage" | "unitPrice" | "amountDue"> & Record<"used" | "overage" | "unitPrice" | "amountDue", string> & { included: string | null }>;
  capacity: Array<{ feature: string; unitSeconds: string; unitPrice: string; amountDue: string }>;
  totalDue: string;
  computedAtMs: number;
}

function toJson(s: UsageStatement): StatementJson {
  return {
    licenseId: s.licenseId,
    accountId: s.accountId,
    plan: s.plan,
    period: s.period,
    periodStartMs: s.periodStartMs,
    periodEndMs: s.periodEndMs,
    currency: s.currency,
    lines: s.lines.map((l) => ({
      feature: l.feature,
      kind: l.kind,
      quotaPeriod: l.quotaPeriod,
      included: l.included === null ? null : l.included.toString(),
      used: l.used.toString(),
      overage: l.overage.toString(),
      unitPrice: l.unitPrice.toString(),
      amountDue: l.amountDue.toString(),
    })),
    capacity: s.capacity.map((c) => ({ feature: c.feature, unitSeconds: c.unitSeconds.toString(), unitPrice: c.unitPrice.toString(), amountDue: c.amountDue.toString() })),
    totalDue: s.totalDue.toString(),
    computedAtMs: s.computedAtMs,
  };
}

function fromJson(j: StatementJson): UsageStatement {
  return {
    ...j,
    lines: j.lines.map((l) => ({
      ...l,
      included: l.included === null ? null : BigInt(l.included),
      used: BigInt(l.used),
      overage: BigInt(l.overage),
      unitPrice: BigInt(l.unitPrice),
      amountDue: BigInt(l.amountDue),
    })),
    capacity: j.capacity.map((c) => ({ feature: c.feature, unitSeconds: BigInt(c.unitSeconds), unitPrice: BigInt(c.unitPrice), amountDue: BigInt(c.amountDue) })),
    totalDue: BigInt(j.totalDue),
    final: true,
  };
}
