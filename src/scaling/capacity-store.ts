/**
 * Repository functions for capacity (capacity_state, capacity_ledger, capacity_requests). Each
 * takes the database or a transaction first.
 *
 * Serialization: every change of one entitlement's units happens in a transaction that holds
 * `SELECT ... FOR UPDATE` on its capacity_state row, so concurrent Scale calls (on any replica)
 * apply one after the other, each from the units the previous one left: no lost update.
 */
import { sql, type Kysely, type Transaction } from "kysely";
import { toScalingRule } from "../rules/read.js";
import type { ScalingRule } from "../rules/types.js";
import type { Database, EntitlementKind, LicenseStatus } from "../store/schema.js";
import type { LedgerSpan } from "./ledger-math.js";

type Db = Kysely<Database> | Transaction<Database>;

/** The capacity units held now, locked until the transaction ends. */
export interface LockedCapacity {
  readonly units: number;
  readonly version: number;
  readonly lastChangeAtMs: number | null;
  /** This call created the state (and the ledger's opening row). */
  readonly created: boolean;
}

/** Reason and caller of the ledger's opening row. */
export const OPENING_REASON = "initial";
export const OPENING_CALLER = "rules";

/**
 * Locks the entitlement's state row, creating it (with units = `initialUnits`, the rules'
 * limit, and an opening ledger row from `nowMs`) when Scale has never touched it. Must run
 * inside a transaction.
 */
export async function lockCapacityState(
  trx: Transaction<Database>,
  licenseId: string,
  feature: string,
  initialUnits: number,
  nowMs: number,
): Promise<LockedCapacity> {
  const inserted = await trx
    .insertInto("capacity_state")
    .values({ license_id: licenseId, feature, units: initialUnits, last_change_at: null })
    .onConflict((oc) => oc.columns(["license_id", "feature"]).doNothing())
    .returning("units")
    .executeTakeFirst();
  if (inserted !== undefined) {
    await trx
      .insertInto("capacity_ledger")
      .values({
        license_id: licenseId,
        feature,
        units: initialUnits,
        valid_from: new Date(nowMs),
        valid_to: null,
        reason: OPENING_REASON,
        caller: OPENING_CALLER,
        request_id: null,
      })
      .execute();
  }
  const row = await trx
    .selectFrom("capacity_state")
    .select(["units", "version", "last_change_at"])
    .where("license_id", "=", licenseId)
    .where("feature", "=", feature)
    .forUpdate()
    .executeTakeFirstOrThrow();
  return {
    units: Number(row.units),
    version: Number(row.version),
    lastChangeAtMs: row.last_change_at?.getTime() ?? null,
    created: inserted !== undefined,
  };
}

export interface CapacityChange {
  readonly licenseId: string;
  readonly feature: string;
  readonly units: number;
  /** When the new units start (epoch ms); the previous row ends at the same instant. */
  readonly atMs: number;
  readonly reason: string;
  readonly caller: string;
  readonly requestId: string | null;
}

/**
 * Records a change under the lock taken by `lockCapacityState`: closes the open ledger row at
 * `atMs`, opens a new one, and updates the state (whose trigger NOTIFYs every replica).
 */
export async function recordCapacityChange(trx: Transaction<Database>, change: CapacityChange): Promise<void> {
  const at = new Date(change.atMs);
  await trx
    .updateTable("capacity_ledger")
    .set({ valid_to: at })
    .where("license_id", "=", change.licenseId)
    .where("feature", "=", change.feature)
    .where("valid_to", "is", null)
    .execute();
  await trx
    .insertInto("capacity_ledger")
    .values({
      license_id: change.licenseId,
      feature: change.feature,
      units: change.units,
      valid_from: at,
      valid_to: null,
      reason: change.reason,
      caller: change.caller,
      request_id: change.requestId,
    })
    .execute();
  await trx
    .updateTable("capacity_state")
    .set({ units: change.units, version: sql`version + 1`, last_change_at: at, updated_at: sql`now()` })
    .where("license_id", "=", change.licenseId)
    .where("feature", "=", change.feature)
    .execute();
}

/** Ledger rows overlapping [fromMs, toMs), oldest first. */
export async function readLedgerSpans(
  db: Db,
  licenseId: string,
  feature: string,
  fromMs: number,
  toMs: number,
): Promise<LedgerSpan[]> {
  const rows = await db
    .selectFrom("capacity_ledger")
    .select(["units", "valid_from", "valid_to"])
    .where("license_id", "=", licenseId)
    .where("feature", "=", feature)
    .where("valid_from", "<", new Date(toMs))
    .where((eb) => eb.or([eb("valid_to", "is", null), eb("valid_to", ">", new Date(fromMs))]))
    .orderBy("valid_from")
    .orderBy("id")
    .execute();
  return rows.map((r) => ({ units: Number(r.units), fromMs: r.valid_from.getTime(), toMs: r.valid_to?.getTime() ?? null }));
}

/** The first answer stored for `requestId`, or undefined. */
export async function findStoredAnswer(db: Db, licenseId: string, feature: string, requestId: string): Promise<unknown> {
  const row = await db
    .selectFrom("capacity_requests")
    .select("response")
    .where("license_id", "=", licenseId)
    .where("feature", "=", feature)
    .where("request_id", "=", requestId)
    .executeTakeFirst();
  if (row === undefined) return undefined;
  return typeof row.response === "string" ? (JSON.parse(row.response) as unknown) : row.response;
}

export async function storeAnswer(db: Db, licenseId: string, feature: string, requestId: string, answer: object): Promise<void> {
  await db
    .insertInto("capacity_requests")
    .values({ license_id: licenseId, feature, request_id: requestId, response: JSON.stringify(answer) })
    .execute();
}

/** Deletes stored answers older than `beforeMs`; returns how many. */
export async function pruneStoredAnswers(db: Db, beforeMs: number): Promise<number> {
  const result = await db.deleteFrom("capacity_requests").where("created_at", "<", new Date(beforeMs)).executeTakeFirst();
  return Number(result.numDeletedRows);
}

/** The units Scale has set per capacity feature of a licence (absent: the rules' limit holds). */
export async function readCapacityUnits(db: Db, licenseId: string): Promise<Map<string, number>> {
  const rows = await db.selectFrom("capacity_state").select(["feature", "units"]).where("license_id", "=", licenseId).execute();
  return new Map(rows.map((r) => [r.feature, Number(r.units)]));
}

/** A licence and one of its effective entitlements, as Scale needs them. */
export interface CapacityEntitlement {
  readonly licenseId: string;
  readonly status: LicenseStatus;
  readonly validFromMs: number | null;
  readonly validUntilMs: number | null;
  readonly feature: string;
  readonly kind: EntitlementKind;
  readonly limit: number;
  readonly unitPrice: number | null;
  readonly scaling: ScalingRule | undefined;
}

/**
 * The licence's effective entitlement of `kind` for `feature` (the licence's override, else the
 * plan's); `license` undefined when the licence does not exist, `entitlement` undefined when it
 * has no such entitlement.
 */
export async function loadEntitlement(
  db: Db,
  licenseId: string,
  feature: string,
  kind: EntitlementKind,
): Promise<{ license: boolean; entitlement?: CapacityEntitlement }> {
  const license = await db
    .selectFrom("licenses")
    .select(["id", "plan", "status", "valid_from", "valid_until"])
    .where("id", "=", licenseId)
    .executeTakeFirst();
  if (license === undefined) return { license: false };
  const rows = await db
    .selectFrom("entitlements")
    .select(["license_id", "limit", "unit_price", "scaling"])
    .where("feature", "=", feature)
    .where("kind", "=", kind)
    .where((eb) => eb.or([eb("plan", "=", license.plan), eb("license_id", "=", license.id)]))
    .execute();
  const row = rows.find((r) => r.license_id !== null) ?? rows[0];
  if (row === undefined) return { license: true };
  return {
    license: true,
    entitlement: {
      licenseId: license.id,
      status: license.status,
      validFromMs: license.valid_from?.getTime() ?? null,
      validUntilMs: license.valid_until?.getTime() ?? null,
      feature,
      kind,
      limit: Number(row.limit ?? 0),
      unitPrice: row.unit_price === null ? null : Number(row.unit_price),
      scaling: row.scaling === null ? undefined : toScalingRule(row.scaling),
    },
  };
}

/** Every (licence, feature) whose capacity entitlement declares auto mode, for the auto-scaler. */
export async function listAutoCapacities(db: Db): Promise<Array<{ licenseId: string; feature: string }>> {
  const { rows } = await sql<{ license_id: string; feature: string }>`
    select distinct l.id as license_id, e.feature
    from licenses l
    join entitlements e on (e.plan = l.plan or e.license_id = l.id)
    where e.kind = 'capacity' and e.scaling ? 'auto' and l.status = 'active'
      and not exists (
        select 1 from entitlements o
        where o.license_id = l.id and o.feature = e.feature and o.kind = 'capacity' and e.license_id is null
      )
    order by l.id, e.feature
  `.execute(db);
  return rows.map((r) => ({ licenseId: r.license_id, feature: r.feature }));
}

/** Unexpired seat/capacity leases of a feature: the instances using it now, cluster-wide. */
export async function countLiveSeats(db: Db, licenseId: string, feature: string, nowMs: number): Promise<number> {
  const row = await db
    .selectFrom("seat_leases")
    .select((eb) => eb.fn.countAll<number>().as("n"))
    .where("license_id", "=", licenseId)
    .where("feature", "=", feature)
    .where("expires_at", ">", new Date(nowMs))
    .executeTakeFirst();
  return Number(row?.n ?? 0);
}
