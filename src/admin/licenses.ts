/**
 * AdminService licences: ListLicenses, GetLicense (with effective entitlements),
 * SuspendLicense, ReinstateLicense, RenewLicense.
 *
 * Writes are idempotent (suspending a suspended licence changes nothing and bumps nothing);
 * a write that changes something bumps the licence's version in the same transaction (see
 * writes.ts), so every replica's next Check sees it.
 */
import { create } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { Kysely, Selectable, Transaction } from "kysely";
import {
  GetLicenseResponseSchema,
  ListLicensesResponseSchema,
  ReinstateLicenseResponseSchema,
  RenewLicenseResponseSchema,
  SuspendLicenseResponseSchema,
  type AdminService,
  type Entitlement as EntitlementMessage,
} from "../gen/licensing/admin/v1/admin_pb.js";
import { invalidArgument, notFound } from "../server/errors.js";
import type { UnaryHandlers } from "../server/rpc.js";
import type { Database, Entitlement, LicensesTable, LicenseUpdate } from "../store/schema.js";
import { entitlementRowMessage, licenseMessage } from "./convert.js";
import type { OperationsAdminDeps } from "./deps.js";
import { decodePageToken, encodePageToken, filterFingerprint, pageSize } from "./paging.js";
import { accountFilter, canSee, type AdminCaller } from "./scope.js";
import { adminWrite, bumpLicenseVersion } from "./writes.js";

type LicenseHandlers = Pick<
  UnaryHandlers<typeof AdminService>,
  "listLicenses" | "getLicense" | "suspendLicense" | "reinstateLicense" | "renewLicense"
>;

type LicenseRow = Selectable<LicensesTable>;

/**
 * The licence if the caller may see it.
 * @throws NOT_FOUND when it does not exist or belongs to another account (indistinguishable).
 */
export async function licenseForCaller(
  db: Kysely<Database> | Transaction<Database>,
  caller: AdminCaller,
  licenseId: string,
  options: { forUpdate?: boolean } = {},
): Promise<LicenseRow> {
  if (licenseId === "") throw invalidArgument("license_id", "required");
  let query = db.selectFrom("licenses").selectAll().where("id", "=", licenseId);
  if (options.forUpdate === true) query = query.forUpdate();
  const row = await query.executeTakeFirst();
  if (row === undefined || !canSee(caller, row.account_id)) throw notFound(`licence "${licenseId}" does not exist`);
  return row;
}

/** A licence's effective entitlements: the plan's, each replaced by an override of the same feature and kind. */
export async function effectiveEntitlementMessages(db: Kysely<Database>, license: LicenseRow): Promise<EntitlementMessage[]> {
  const rows = await db
    .selectFrom("entitlements")
    .selectAll()
    .where((eb) => eb.or([eb("plan", "=", license.plan), eb("license_id", "=", license.id)]))
    .execute();
  const byKey = new Map<string, Entitlement>();
  for (const row of rows) if (row.plan !== null) byKey.set(`${row.feature}\u0000${row.kind}`, row);
  for (const row of rows) if (row.license_id !== null) byKey.set(`${row.feature}\u0000${row.kind}`, row);
  return [...byKey.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([, row]) => entitlementRowMessage(row));
}

export function createLicenseAdminHandlers(deps: OperationsAdminDeps): LicenseHandlers {
  const { db } = deps;

  /**
   * Applies `change` to the licence unless `unchanged(row)`; bumps the version when it writes.
   * Returns the licence as it is afterwards.
   */
  async function writeLicense(
    caller: AdminCaller,
    licenseId: string,
    action: string,
    unchanged: (row: LicenseRow) => boolean,
    change: (row: LicenseRow) => LicenseUpdate,
  ): Promise<LicenseRow> {
    const now = new Date(deps.now());
    const result = await adminWrite(db, async (trx) => {
      const row = await licenseForCaller(trx, caller, licenseId, { forUpdate: true });
      if (unchanged(row)) return { row, changed: false };
      await trx.updateTable("licenses").set({ ...change(row), updated_at: now }).where("id", "=", licenseId).execute();
      await bumpLicenseVersion(trx, licenseId, now);
      const after = await trx.selectFrom("licenses").selectAll().where("id", "=", licenseId).executeTakeFirstOrThrow();
      return { row: after, changed: true };
    });
    if (result.changed) {
      deps.onChange(`license:${licenseId}`);
      deps.logger.info({ licenseId, action, version: result.row.version, by: caller.operator ? "operator" : `account:${caller.accountId}` }, "licence changed");
    }
    return result.row;
  }

  return {
    async listLicenses(request, context) {
      const caller = await deps.authorize(context);
      const account = accountFilter(caller, request.accountId);
      const limit = pageSize(request.pageSize);
      const fingerprint = filterFingerprint(["licenses", account ?? ""]);
      const after = decodePageToken(request.pageToken, fingerprint)?.[0];
      let query = db.selectFrom("licenses").selectAll().orderBy("id").limit(limit + 1);
      if (account !== undefined) query = query.where("account_id", "=", account);
      if (typeof after === "string") query = query.where("id", ">", after);
      const rows = await query.execute();
      const page = rows.slice(0, limit);
      const last = page.at(-1);
      return create(ListLicensesResponseSchema, {
        licenses: page.map(licenseMessage),
        nextPageToken: rows.length > limit && last !== undefined ? encodePageToken([last.id], fingerprint) : "",
      });
    },

    async getLicense(request, context) {
      const caller = await deps.authorize(context);
      const row = await licenseForCaller(db, caller, request.licenseId);
      return create(GetLicenseResponseSchema, { license: licenseMessage(row), entitlements: await effectiveEntitlementMessages(db, row) });
    },

    async suspendLicense(request, context) {
      const caller = await deps.authorize(context);
      const row = await writeLicense(caller, request.licenseId, "suspend", (r) => r.status === "suspended", () => ({ status: "suspended" }));
      return create(SuspendLicenseResponseSchema, { license: licenseMessage(row) });
    },

    async reinstateLicense(request, context) {
      const caller = await deps.authorize(context);
      const row = await writeLicense(caller, request.licenseId, "reinstate", (r) => r.status === "active", () => ({ status: "active" }));
      return create(ReinstateLicenseResponseSchema, { license: licenseMessage(row) });
    },

    async renewLicense(request, context) {
      const caller = await deps.authorize(context);
      if (request.validUntil === undefined) throw invalidArgument("valid_until", "required");
      const until = timestampDate(request.validUntil);
      const row = await writeLicense(
        caller,
        request.licenseId,
        "renew",
        (r) => r.valid_until?.getTime() === until.getTime(),
        (r) => {
          if (r.valid_from !== null && until.getTime() <= r.valid_from.getTime()) {
            throw invalidArgument("valid_until", `must be after the licence's valid_from (${r.valid_from.toISOString()})`);
          }
          return { valid_until: until };
        },
      );
      return create(RenewLicenseResponseSchema, { license: licenseMessage(row) });
    },
  };
}
