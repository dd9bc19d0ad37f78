/**
 * `licensing decisions list`: the decision log through AdminService, newest first.
 * (`licensing decisions verify` reads the database directly: commands/decisions.ts.)
 * Exit codes: 0 success, 2 bad usage (reported here); RPC errors are thrown for main.ts (exit 1).
 */
import type { DecisionRecord } from "../../gen/licensing/admin/v1/admin_pb.js";
import type { AdminClient } from "../admin-client.js";
import { table } from "../output.js";
import { isoOf, jsonOut, OUTPUT, outputFormat, parse, parseTime, processIo, UsageError, withUsage, type CommandIo } from "./admin-common.js";

export const DECISIONS_LIST_HELP = `Usage: licensing decisions list [--license LICENSE] [--reason REASON] [--decision allow|deny]
                                [--since TIME] [--until TIME] [--limit N] [--output table|json]

The decision log, newest first. Denies are one row each; allows are counted per second
(COUNT), unless the service logs every decision (DECISION_LOG=all).
  --license ID      only this licence's decisions
  --reason R        only this reason, e.g. QUOTA_EXHAUSTED
  --decision D      allow or deny
  --since TIME      from this time: 2026-11-21T10:00:00Z, or 15m / 2h / 7d ago
  --until TIME      before this time (same forms)
  --limit N         at most N rows (default 100; pages are fetched as needed)
  -o, --output FMT  table (default) or json`;

const PAGE = 1000;

export async function decisionsListCommand(args: string[], client: AdminClient, io: CommandIo = processIo): Promise<number> {
  return withUsage(io, "decisions", async () => {
    const { values } = parse(args, {
      ...OUTPUT,
      license: { type: "string" },
      reason: { type: "string" },
      decision: { type: "string" },
      since: { type: "string" },
      until: { type: "string" },
      limit: { type: "string", default: "100" },
    });
    const output = outputFormat(values.output);
    const limit = Number(values.limit);
    if (!Number.isSafeInteger(limit) || limit < 1) throw new UsageError(`--limit must be a positive integer, got "${values.limit}"`);
    if (values.decision !== undefined && values.decision !== "allow" && values.decision !== "deny") {
      throw new UsageError(`--decision must be allow or deny, got "${values.decision}"`);
    }
    const nowMs = io.now();
    const filters = {
      licenseId: values.license ?? "",
      reason: values.reason ?? "",
      decision: values.decision ?? "",
      ...(values.since === undefined ? {} : { since: parseTime("--since", values.since, nowMs) }),
      ...(values.until === undefined ? {} : { until: parseTime("--until", values.until, nowMs) }),
    };
    const rows: DecisionRecord[] = [];
    let pageToken = "";
    do {
      const page = await client.listDecisions({ ...filters, pageSize: Math.min(PAGE, limit - rows.length), pageToken });
      rows.push(...page.decisions);
      pageToken = page.nextPageToken;
    } while (pageToken !== "" && rows.length < limit);
    const records = rows.map((d) => ({
      time: isoOf(d.time),
      decision: d.decision,
      reason: d.reason,
      license_id: d.licenseId || null,
      feature: d.feature,
      quantity: d.quantity,
      count: d.count,
      decision_id: d.decisionId || null,
      replica_id: d.replicaId,
      seq: d.seq,
    }));
    if (output === "json") io.stdout(`${jsonOut(records)}\n`);
    else if (records.length === 0) io.stdout("no decisions match\n");
    else {
      io.stdout(
        `${table([
          ["TIME", "DECISION", "REASON", "LICENCE", "FEATURE", "QTY", "COUNT", "DECISION ID"],
          ...records.map((r) => [r.time, r.decision, r.reason, r.license_id ?? "-", r.feature, String(r.quantity), String(r.count), r.decision_id ?? "(aggregated)"]),
        ])}\n`,
      );
      if (pageToken !== "") io.stderr(`showing the newest ${records.length}; more match (raise --limit or narrow --since/--until)\n`);
    }
    return 0;
  });
}
