/**
 * AdminService GetLicenseStatus: a licence's live usage against its limits, read from
 * Postgres (the cluster-wide truth, not this replica's memory):
 *   - quotas: the current period's counter row (used, leased to replicas, stranded, overage)
 *     and what no replica holds yet (unallocated);
 *   - seats and capacity: instances holding an unexpired seat lease;
 *   - leases: what each replica holds of each quota, unexpired.
 * "Current period" is computed with the service's clock, in UTC, like Check does.
 */
import { create } from "@bufbuild/protobuf";
import type { Kysely } from "kysely";
import {
  GetLicenseStatusResponseSchema,
  LeaseStatusSchema,
  QuotaStatusSchema,
  SeatStatusSchema,
  type AdminService,
  type QuotaStatus,
  type SeatStatus,
} from "../gen/licensing/admin/v1/admin_pb.js";
import { periodEndMs, periodStartMs } from "../licensing/engine/index.js";
import type { UnaryHandlers } from "../server/rpc.js";
import type { Database, Entitlement } from "../store/schema.js";
import { licenseMessage, timestamp } from "./convert.js";
import type { OperationsAdminDeps } from "./deps.js";
import { licenseForCaller } from "./licenses.js";

type StatusHandlers = Pick<UnaryHandlers<typeof AdminService>, "getLicenseStatus">;

export function createStatusAdminHandlers(deps: OperationsAdminDeps): StatusHandlers {
  const { db } = deps;
  return {
    async getLicenseStatus(request, context) {
      const caller = await deps.authorize(context);
      const license = await licenseForCaller(db, caller, request.licenseId);
      const nowMs = deps.now();
      const now = new Date(nowMs);
      const entitlements = await effectiveRows(db, license.plan, license.id);
      const [quotas, seats, leases] = await Promise.all([
        quotaStatuses(db, license.id, entitlements.filter((e) => e.kind === "quota"), nowMs),
        seatStatuses(db, license.id, entitlements.filter((e) => e.kind === "seats" || e.kind === "capacity"), now),
        db
          .selectFrom("quota_leases")
          .selectAll()
          .where("license_id", "=", license.id)
          .where("expires_at", ">", now)
          .orderBy("replica_id")
          .orderBy("feature")
          .orderBy("period_start")
          .execute(),
      ]);
      return create(GetLicenseStatusResponseSchema, {
        license: licenseMessage(license),
        quotas,
        seats,
        leases: leases.map((row) =>
          create(LeaseStatusSchema, {
            replicaId: row.replica_id,
            feature: row.feature,
            periodStart: timestamp(row.period_start),
            amount: BigInt(row.amount),
            expiresAt: timestamp(row.expires_at),
          }),
        ),
        asOf: timestamp(now),
      });
    },
  };
}

/** The plan's entitlement rows, each replaced by the licence's override of the same feature and kind; by feature. */
async function effectiveRows(db: Kysely<Database>, plan: string, licenseId: string): Promise<Entitlement[]> {
  const rows = await db
    .selectFrom("entitlements")
    .selectAll()
    .where((eb) => eb.or([eb("plan", "=", plan), eb("license_id", "=", licenseId)]))
    .execute();
  const byKey = new Map<string, Entitlement>();
  for (const row of rows) if (row.plan !== null) byKey.set(`${row.feature}\u0000${row.kind}`, row);
  for (const row of rows) if (row.license_id !== null) byKey.set(`${row.feature}\u0000${row.kind}`, row);
  return [...byKey.values()].sort((a, b) => (a.feature < b.feature ? -1 : a.feature > b.feature ? 1 : 0));
}

async function quotaStatuses(db: Kysely<Database>, licenseId: string, quotas: readonly Entitlement[], nowMs: number): Promise<QuotaStatus[]> {
  if (quotas.length === 0) return [];
  const starts = quotas.map((q) => new Date(periodStartMs(q.period, nowMs)));
  const counters = await db
    .selectFrom("quota_counters")
    .selectAll()
    .where("license_id", "=", licenseId)
    .where("feature", "in", quotas.map((q) => q.feature))
    .where("period_start", "in", starts)
    .execute();
  return quotas.map((quota, i) => {
    const start = starts[i] ?? new Date(0);
    const row = counters.find((c) => c.feature === quota.feature && c.period_start.getTime() === start.getTime());
    const used = row?.used ?? 0;
    const leased = row?.leased ?? 0;
    const stranded = row?.stranded ?? 0;
    const limit = quota.limit ?? 0;
    const end = periodEndMs(quota.period, start.getTime());
    return create(QuotaStatusSchema, {
      feature: quota.feature,
      limit: BigInt(limit),
      period: quota.period ?? "lifetime",
      periodStart: timestamp(start),
      resetsAt: end === null ? undefined : timestamp(new Date(end)),
      used: BigInt(used),
      leased: BigInt(leased),
      stranded: BigInt(stranded),
      overage: BigInt(row?.overage ?? 0),
      unallocated: BigInt(Math.max(0, limit - used - leased - stranded)),
    });
  });
}

async function seatStatuses(db: Kysely<Database>, licenseId: string, seats: readonly Entitlement[], now: Date): Promise<SeatStatus[]> {
  if (seats.length === 0) return [];
  const held = await db
    .selectFrom("seat_leases")
    .select(["feature", (eb) => eb.fn.countAll<number | string | bigint>().as("held")])
    .where("license_id", "=", licenseId)
    .where("expires_at", ">", now)
    .groupBy("feature")
    .execute();
  return seats.map((seat) =>
    create(SeatStatusSchema, {
      feature: seat.feature,
      kind: seat.kind,
      limit: BigInt(seat.limit ?? 0),
      held: BigInt(held.find((h) => h.feature === seat.feature)?.held ?? 0),
    }),
  );
}
