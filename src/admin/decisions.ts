/**
 * AdminService ListDecisions: the decision log, newest first, filtered by licence, reason,
 * decision and time range, in pages with an opaque token.
 *
 * Order: time descending, then replica_id, then seq descending; the page token carries the last
 * row's (time, replica_id, seq), so pages neither repeat nor skip rows while new decisions
 * arrive (they sort before the first page). Times in the log come from JS Dates (millisecond
 * precision), so the token's millisecond time matches rows exactly.
 *
 * Account tokens see decisions about their own licences only; decisions that resolved to no
 * licence (unknown credentials) are the operator's.
 */
import { create } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import {
  DecisionRecordSchema,
  ListDecisionsResponseSchema,
  type AdminService,
} from "../gen/licensing/admin/v1/admin_pb.js";
import { Reason } from "../gen/licensing/v1/licensing_pb.js";
import { invalidArgument } from "../server/errors.js";
import type { UnaryHandlers } from "../server/rpc.js";
import { timestamp } from "./convert.js";
import type { OperationsAdminDeps } from "./deps.js";
import { licenseForCaller } from "./licenses.js";
import { decodePageToken, encodePageToken, filterFingerprint, pageSize } from "./paging.js";

type DecisionHandlers = Pick<UnaryHandlers<typeof AdminService>, "listDecisions">;

/** Reason names as the log stores them ("QUOTA_EXHAUSTED"), without UNSPECIFIED. */
const REASONS: ReadonlySet<string> = new Set(
  Object.keys(Reason).filter((name) => Number.isNaN(Number(name)) && name !== "UNSPECIFIED"),
);

export function createDecisionAdminHandlers(deps: OperationsAdminDeps): DecisionHandlers {
  const { db } = deps;
  return {
    async listDecisions(request, context) {
      const caller = await deps.authorize(context);
      const reason = request.reason.toUpperCase().replace(/^REASON_/, "");
      if (reason !== "" && !REASONS.has(reason)) throw invalidArgument("reason", `unknown reason "${request.reason}"; one of ${[...REASONS].join(", ")}`);
      const decision = request.decision.toLowerCase();
      if (decision !== "" && decision !== "allow" && decision !== "deny") throw invalidArgument("decision", 'must be "allow" or "deny"');
      const since = request.since === undefined ? undefined : timestampDate(request.since);
      const until = request.until === undefined ? undefined : timestampDate(request.until);
      if (since !== undefined && until !== undefined && since.getTime() >= until.getTime()) throw invalidArgument("until", "must be after since");
      if (request.licenseId !== "") await licenseForCaller(db, caller, request.licenseId);
      const limit = pageSize(request.pageSize);
      const fingerprint = filterFingerprint([
        "decisions",
        caller.accountId ?? "",
        request.licenseId,
        reason,
        decision,
        since?.getTime() ?? null,
        until?.getTime() ?? null,
      ]);
      const after = cursor(decodePageToken(request.pageToken, fingerprint));

      let query = db.selectFrom("decision_log").selectAll().orderBy("time", "desc").orderBy("replica_id", "asc").orderBy("seq", "desc").limit(limit + 1);
      if (request.licenseId !== "") query = query.where("license_id", "=", request.licenseId);
      else if (!caller.operator) {
        const accountId = caller.accountId;
        query = query.where("license_id", "in", (qb) => qb.selectFrom("licenses").select("id").where("account_id", "=", accountId));
      }
      if (reason !== "") query = query.where("reason", "=", reason);
      if (decision === "allow" || decision === "deny") query = query.where("decision", "=", decision);
      if (since !== undefined) query = query.where("time", ">=", since);
      if (until !== undefined) query = query.where("time", "<", until);
      if (after !== undefined) {
        const time = new Date(after.timeMs);
        query = query.where((eb) =>
          eb.or([
            eb("time", "<", time),
            eb.and([eb("time", "=", time), eb("replica_id", ">", after.replicaId)]),
            eb.and([eb("time", "=", time), eb("replica_id", "=", after.replicaId), eb("seq", "<", after.seq)]),
          ]),
        );
      }
      const rows = await query.execute();
      const page = rows.slice(0, limit);
      const last = page.at(-1);
      return create(ListDecisionsResponseSchema, {
        decisions: page.map((row) =>
          create(DecisionRecordSchema, {
            decisionId: row.decision_id ?? "",
            time: timestamp(row.time),
            licenseId: row.license_id ?? "",
            feature: row.feature,
            decision: row.decision,
            reason: row.reason,
            quantity: BigInt(row.quantity),
            count: row.count,
            replicaId: row.replica_id,
            seq: BigInt(row.seq),
          }),
        ),
        nextPageToken:
          rows.length > limit && last !== undefined ? encodePageToken([last.time.getTime(), last.replica_id, last.seq], fingerprint) : "",
      });
    },
  };
}

function cursor(key: (string | number)[] | undefined): { timeMs: number; replicaId: string; seq: number } | undefined {
  if (key === undefined) return undefined;
  const [timeMs, replicaId, seq] = key;
  if (typeof timeMs !== "number" || typeof replicaId !== "string" || typeof seq !== "number") {
    throw invalidArgument("page_token", "is not a token this service issued");
  }
  return { timeMs, replicaId, seq };
}
