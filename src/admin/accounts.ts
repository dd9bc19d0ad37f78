/**
 * AdminService reads of accounts, plans and issuers: ListAccounts, GetAccount, ListPlans,
 * GetPlan, ListIssuers. Account tokens see their own account and the plans its licences are
 * on; issuers are operator-only (they are global configuration, not an account's).
 */
import { create } from "@bufbuild/protobuf";
import type { Selectable } from "kysely";
import {
  AccountSchema,
  GetAccountResponseSchema,
  GetPlanResponseSchema,
  IssuerSchema,
  ListAccountsResponseSchema,
  ListIssuersResponseSchema,
  ListPlansResponseSchema,
  PlanSchema,
  type AdminService,
  type Plan,
} from "../gen/licensing/admin/v1/admin_pb.js";
import { invalidArgument, notFound } from "../server/errors.js";
import type { UnaryHandlers } from "../server/rpc.js";
import type { AccountsTable, Entitlement, PlansTable } from "../store/schema.js";
import { entitlementRowMessage, timestamp } from "./convert.js";
import type { OperationsAdminDeps } from "./deps.js";
import { decodePageToken, encodePageToken, filterFingerprint, pageSize } from "./paging.js";
import { canSee, requireOperator } from "./scope.js";

type AccountHandlers = Pick<
  UnaryHandlers<typeof AdminService>,
  "listAccounts" | "getAccount" | "listPlans" | "getPlan" | "listIssuers"
>;

export function createAccountAdminHandlers(deps: OperationsAdminDeps): AccountHandlers {
  const { db } = deps;

  /** An account plan names; undefined for the operator (every plan). */
  async function visiblePlans(accountId: string | undefined): Promise<Set<string> | undefined> {
    if (accountId === undefined) return undefined;
    const rows = await db.selectFrom("licenses").select("plan").distinct().where("account_id", "=", accountId).execute();
    return new Set(rows.map((r) => r.plan));
  }

  async function plansWithEntitlements(rows: readonly Selectable<PlansTable>[]): Promise<Plan[]> {
    if (rows.length === 0) return [];
    const entitlements = await db
      .selectFrom("entitlements")
      .selectAll()
      .where("plan", "in", rows.map((r) => r.name))
      .orderBy("feature")
      .orderBy("kind")
      .execute();
    const byPlan = new Map<string, Entitlement[]>();
    for (const row of entitlements) {
      const list = byPlan.get(row.plan ?? "") ?? [];
      list.push(row);
      byPlan.set(row.plan ?? "", list);
    }
    return rows.map((row) =>
      create(PlanSchema, {
        name: row.name,
        description: row.description ?? "",
        entitlements: (byPlan.get(row.name) ?? []).map(entitlementRowMessage),
      }),
    );
  }

  return {
    async listAccounts(request, context) {
      const caller = await deps.authorize(context);
      const limit = pageSize(request.pageSize);
      const fingerprint = filterFingerprint(["accounts", caller.accountId ?? ""]);
      const after = decodePageToken(request.pageToken, fingerprint)?.[0];
      let query = db.selectFrom("accounts").selectAll().orderBy("id").limit(limit + 1);
      if (!caller.operator) query = query.where("id", "=", caller.accountId);
      if (typeof after === "string") query = query.where("id", ">", after);
      const rows = await query.execute();
      const page = rows.slice(0, limit);
      const last = page.at(-1);
      return create(ListAccountsResponseSchema, {
        accounts: page.map(accountMessage),
        nextPageToken: rows.length > limit && last !== undefined ? encodePageToken([last.id], fingerprint) : "",
      });
    },

    async getAccount(request, context) {
      const caller = await deps.authorize(context);
      if (request.accountId === "") throw invalidArgument("account_id", "required");
      const row = canSee(caller, request.accountId)
        ? await db.selectFrom("accounts").selectAll().where("id", "=", request.accountId).executeTakeFirst()
        : undefined;
      if (row === undefined) throw notFound(`account "${request.accountId}" does not exist`);
      const licenses = await db.selectFrom("licenses").select("id").where("account_id", "=", row.id).orderBy("id").execute();
      return create(GetAccountResponseSchema, { account: accountMessage(row), licenseIds: licenses.map((l) => l.id) });
    },

    async listPlans(_request, context) {
      const caller = await deps.authorize(context);
      const visible = await visiblePlans(caller.accountId);
      const rows = await db.selectFrom("plans").selectAll().orderBy("name").execute();
      const plans = await plansWithEntitlements(visible === undefined ? rows : rows.filter((r) => visible.has(r.name)));
      return create(ListPlansResponseSchema, { plans });
    },

    async getPlan(request, context) {
      const caller = await deps.authorize(context);
      if (request.name === "") throw invalidArgument("name", "required");
      const visible = await visiblePlans(caller.accountId);
      const row =
        visible === undefined || visible.has(request.name)
          ? await db.selectFrom("plans").selectAll().where("name", "=", request.name).executeTakeFirst()
          : undefined;
      if (row === undefined) throw notFound(`plan "${request.name}" does not exist`);
      const [plan] = await plansWithEntitlements([row]);
      return create(GetPlanResponseSchema, { plan });
    },

    async listIssuers(_request, context) {
      requireOperator(await deps.authorize(context));
      const rows = await db.selectFrom("issuers").selectAll().orderBy("id").execute();
      return create(ListIssuersResponseSchema, {
        issuers: rows.map((row) =>
          create(IssuerSchema, {
            id: row.id,
            issuer: row.issuer,
            jwksUrl: row.jwks_url,
            audiences: row.audiences,
            algorithms: row.algorithms,
            licenseClaim: row.license_claim ?? "",
            accountClaim: row.account_claim ?? "",
            rolesClaim: row.roles_claim,
            leewaySeconds: row.leeway_seconds,
          }),
        ),
      });
    },
  };
}

function accountMessage(row: Selectable<AccountsTable>) {
  return create(AccountSchema, { id: row.id, name: row.name, createdAt: timestamp(row.created_at), updatedAt: timestamp(row.updated_at) });
}
