/**
 * Helpers for the metering tests: a licence with entitlements in the database, the Report
 * handler wired to real caches and a real identity resolver (license_id credentials with a
 * service token), a clock the test moves, and a logger that records.
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { sql, type Kysely } from "kysely";
import { ReportRequestSchema, type ReportResponse, type UsageEventSchema } from "../../src/gen/licensing/v1/licensing_pb.js";
import { createLicensingCaches } from "../../src/licensing/caches.js";
import { createIdentityResolver } from "../../src/licensing/identity.js";
import type { RpcContext } from "../../src/server/rpc.js";
import type { Database } from "../../src/store/schema.js";
import { createMetering, type Metering, type MeteringOptions } from "../../src/metering/metering.js";

/** 2026-11-15T12:00:00Z. */
export const T0 = Date.UTC(2026, 10, 15, 12, 0, 0);

export class FakeClock {
  constructor(public ms: number = T0) {}
  readonly now = (): number => this.ms;
  advance(ms: number): number {
    this.ms += ms;
    return this.ms;
  }
}

export interface LogEntry {
  readonly level: string;
  readonly obj: object;
  readonly msg: string;
}

export function recordingLogger() {
  const entries: LogEntry[] = [];
  const at = (level: string) => (obj: object, msg: string) => void entries.push({ level, obj, msg });
  return { entries, info: at("info"), warn: at("warn"), error: at("error") };
}

export interface EntitlementSeed {
  readonly feature: string;
  readonly kind: "boolean" | "quota" | "rate" | "capacity";
  readonly limit?: number;
  readonly period?: "hour" | "day" | "month" | "lifetime";
  readonly overage?: "block" | "allow_and_bill";
  readonly unitPrice?: number;
}

/** Account, plan with the entitlements, and licence `licenseId`. */
export async function seedLicence(db: Kysely<Database>, licenseId: string, entitlements: readonly EntitlementSeed[]): Promise<void> {
  await db.insertInto("accounts").values({ id: `acct-${licenseId}`, name: licenseId }).execute();
  await db.insertInto("plans").values({ name: `plan-${licenseId}`, description: null }).execute();
  await db
    .insertInto("licenses")
    .values({ id: licenseId, account_id: `acct-${licenseId}`, plan: `plan-${licenseId}`, status: "active", valid_from: null, valid_until: null, environments: [] })
    .execute();
  for (const e of entitlements) {
    await db
      .insertInto("entitlements")
      .values({
        plan: `plan-${licenseId}`,
        license_id: null,
        feature: e.feature,
        kind: e.kind,
        limit: e.limit ?? null,
        period: e.period ?? null,
        burst: null,
        overage: e.overage ?? "block",
        failure_mode: "fail_closed",
        roles: [],
        unit_price: e.unitPrice ?? null,
        scaling: null,
      })
      .execute();
  }
}

export const SERVICE_TOKEN = "lk_svc_test_token_for_metering";

/** A context whose caller presents the service token (so license_id credentials resolve). */
export const CONTEXT: RpcContext = {
  header: (name) => (name === "authorization" ? `Bearer ${SERVICE_TOKEN}` : undefined),
  signal: new AbortController().signal,
  transport: "grpc",
};

/** Metering over `db` with real caches; every license_id caller is trusted. */
export function createTestMetering(db: Kysely<Database>, clock: FakeClock, spoolDir: string, overrides: Partial<MeteringOptions> = {}): { metering: Metering; logger: ReturnType<typeof recordingLogger> } {
  const logger = recordingLogger();
  const caches = createLicensingCaches({ db, now: clock.now, unknownKeyCacheMs: 1000, onOtherChange: () => undefined });
  const resolveIdentity = createIdentityResolver({
    keys: caches.keys,
    serviceCallers: (authorization) => authorization === `Bearer ${SERVICE_TOKEN}`,
  });
  const metering = createMetering({
    db,
    resolveIdentity,
    licenses: caches.licenses,
    accountLicenses: caches.accountLicenses,
    spoolDir,
    autoRun: false,
    now: clock.now,
    logger,
    ...overrides,
  });
  return { metering, logger };
}

export interface EventSeed {
  readonly id: string;
  readonly licenseId: string;
  readonly feature: string;
  readonly quantity?: number;
  readonly occurredAtMs?: number;
  readonly operationId?: string;
}

export function usageEvent(seed: EventSeed): MessageInitShape<typeof UsageEventSchema> {
  return {
    id: seed.id,
    credential: { case: "licenseId", value: seed.licenseId },
    feature: seed.feature,
    quantity: BigInt(seed.quantity ?? 1),
    ...(seed.occurredAtMs === undefined ? {} : { occurredAt: timestampFromMs(seed.occurredAtMs) }),
    operationId: seed.operationId ?? "",
  };
}

export async function report(metering: Metering, events: readonly EventSeed[]): Promise<ReportResponse> {
  const request = create(ReportRequestSchema, { events: events.map(usageEvent) });
  return metering.report(request, CONTEXT);
}

export async function countEvents(db: Kysely<Database>, where = sql`true`): Promise<number> {
  const { rows } = await sql<{ n: number }>`select count(*)::int8 as n from usage_events where ${where}`.execute(db);
  return rows[0]?.n ?? 0;
}

export async function counter(db: Kysely<Database>, licenseId: string, feature: string, periodStartMs: number): Promise<{ used: number; overage: number } | undefined> {
  return db
    .selectFrom("quota_counters")
    .select(["used", "overage"])
    .where("license_id", "=", licenseId)
    .where("feature", "=", feature)
    .where("period_start", "=", new Date(periodStartMs))
    .executeTakeFirst();
}
