/**
 * AdminService.GetUsageStatement, spread into the admin binding next to the other handlers
 * (`extraHandlers: { ...createUsageAdminHandlers(deps), ... }`).
 *
 * The operator sees every licence's statement; an account admin token sees its own account's
 * licences only (others answer NOT_FOUND, as if they did not exist).
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Kysely } from "kysely";
import {
  CapacityStatementLineSchema,
  GetUsageStatementResponseSchema,
  UsageStatementLineSchema,
  type AdminService,
  type GetUsageStatementResponse,
} from "../gen/licensing/admin/v1/admin_pb.js";
import { canSee, type AdminAuthorize } from "../admin/scope.js";
import { invalidArgument, notFound } from "../server/errors.js";
import type { UnaryHandlers } from "../server/rpc.js";
import type { Database } from "../store/schema.js";
import { getUsageStatement, StatementError, type CapacityUsageSource, type UsageStatement } from "./statement.js";

export interface UsageAdminDeps {
  readonly db: Kysely<Database>;
  /** Who is calling (createAdminAuthorizer(...).authorize). */
  readonly authorize: AdminAuthorize;
  /** STATEMENT_GRACE_MS. Default 1 day. */
  readonly statementGraceMs?: number;
  /** STATEMENT_CURRENCY. Default "EUR". */
  readonly currency?: string;
  /** Capacity unit-seconds (Scale); default: a 0 line per capacity feature. */
  readonly capacity?: CapacityUsageSource;
  /** Epoch ms. */
  readonly now: () => number;
}

/** Every amount is at most the total, which the wire carries as int64. */
const INT64_MAX = 2n ** 63n - 1n;

type UsageHandlers = Pick<UnaryHandlers<typeof AdminService>, "getUsageStatement">;

export function createUsageAdminHandlers(deps: UsageAdminDeps): UsageHandlers {
  return {
    async getUsageStatement(request, context) {
      const caller = await deps.authorize(context);
      if (request.licenseId === "") throw invalidArgument("license_id", "is required");
      if (request.period === "") throw invalidArgument("period", "is required (YYYY-MM)");
      let statement: UsageStatement;
      try {
        statement = await getUsageStatement(deps.db, request.licenseId, request.period, {
          nowMs: deps.now(),
          ...(deps.statementGraceMs === undefined ? {} : { graceMs: deps.statementGraceMs }),
          ...(deps.currency === undefined ? {} : { currency: deps.currency }),
          ...(deps.capacity === undefined ? {} : { capacity: deps.capacity }),
        });
      } catch (error) {
        if (error instanceof StatementError) {
          throw error.kind === "invalid_period" ? invalidArgument("period", error.message) : notFound(error.message);
        }
        throw error;
      }
      if (!canSee(caller, statement.accountId)) throw notFound(`license "${request.licenseId}" does not exist`);
      if (statement.totalDue > INT64_MAX) {
        throw new ConnectError("the statement's total due exceeds the int64 range of the API", Code.OutOfRange);
      }
      return toResponse(statement);
    },
  };
}

export function toResponse(s: UsageStatement): GetUsageStatementResponse {
  return create(GetUsageStatementResponseSchema, {
    licenseId: s.licenseId,
    accountId: s.accountId,
    plan: s.plan,
    period: s.period,
    periodStart: timestampFromMs(s.periodStartMs),
    periodEnd: timestampFromMs(s.periodEndMs),
    currency: s.currency,
    lines: s.lines.map((l) =>
      create(UsageStatementLineSchema, {
        feature: l.feature,
        kind: l.kind,
        quotaPeriod: l.quotaPeriod ?? "",
        ...(l.included === null ? {} : { included: l.included }),
        used: l.used,
        overage: l.overage,
        unitPrice: l.unitPrice,
        amountDue: l.amountDue,
      }),
    ),
    capacity: s.capacity.map((c) =>
      create(CapacityStatementLineSchema, { feature: c.feature, unitSeconds: c.unitSeconds, unitPrice: c.unitPrice, amountDue: c.amountDue }),
    ),
    totalDue: s.totalDue,
    final: s.final,
    computedAt: timestampFromMs(s.computedAtMs),
  });
}
