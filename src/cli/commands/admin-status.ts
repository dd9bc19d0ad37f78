/**
 * `licensing status --license L`: live usage against limits (quota used and leased in the
 * current period, seats held, leases per replica), through AdminService GetLicenseStatus.
 * Exit codes: 0 success, 2 bad usage (reported here); RPC errors are thrown for main.ts (exit 1).
 */
import type { AdminClient } from "../admin-client.js";
import { table } from "../output.js";
import { licenseJson, licenseTable } from "./admin-licenses.js";
import { isoOf, jsonOut, OUTPUT, outputFormat, parse, processIo, UsageError, withUsage, type CommandIo } from "./admin-common.js";

export const STATUS_HELP = `Usage: licensing status --license LICENSE [--output table|json]

A licence's live usage, read from PostgreSQL (the whole cluster's view):
  quotas   per feature, in the current period: USED (settled), LEASED (held by replicas, spent
           or not yet settled), FREE (not yet leased by any replica) and when it resets
  seats    instances holding a seat now, against the limit
  leases   quota units each replica holds
  -o, --output FMT  table (default) or json`;

export async function statusCommand(args: string[], client: AdminClient, io: CommandIo = processIo): Promise<number> {
  return withUsage(io, "status", async () => {
    const { values } = parse(args, { ...OUTPUT, license: { type: "string" } });
    const output = outputFormat(values.output);
    if (values.license === undefined || values.license === "") throw new UsageError("status needs --license LICENSE");
    const status = await client.getLicenseStatus({ licenseId: values.license });
    const quotas = status.quotas.map((q) => ({
      feature: q.feature,
      limit: q.limit,
      period: q.period,
      period_start: isoOf(q.periodStart),
      resets_at: q.resetsAt === undefined ? null : isoOf(q.resetsAt),
      used: q.used,
      leased: q.leased,
      stranded: q.stranded,
      overage: q.overage,
      unallocated: q.unallocated,
    }));
    const seats = status.seats.map((s) => ({ feature: s.feature, kind: s.kind, limit: s.limit, held: s.held }));
    const leases = status.leases.map((l) => ({ replica_id: l.replicaId, feature: l.feature, period_start: isoOf(l.periodStart), amount: l.amount, expires_at: isoOf(l.expiresAt) }));
    if (output === "json") {
      io.stdout(`${jsonOut({ license: licenseJson(status.license), as_of: isoOf(status.asOf), quotas, seats, leases })}\n`);
      return 0;
    }
    const parts = [licenseTable(status.license)];
    parts.push(
      quotas.length === 0
        ? "quotas: none"
        : table([
            ["QUOTA", "LIMIT", "PERIOD", "USED", "LEASED", "FREE", "OVERAGE", "RESETS"],
            ...quotas.map((q) => [q.feature, String(q.limit), q.period, String(q.used), String(q.leased), String(q.unallocated), String(q.overage), q.resets_at ?? "never"]),
          ]),
    );
    if (seats.length > 0) parts.push(table([["SEATS", "KIND", "HELD", "LIMIT"], ...seats.map((s) => [s.feature, s.kind, String(s.held), String(s.limit)])]));
    parts.push(
      leases.length === 0
        ? "leases: none held"
        : table([["REPLICA", "FEATURE", "UNITS", "EXPIRES"], ...leases.map((l) => [l.replica_id, l.feature, String(l.amount), l.expires_at])]),
    );
    io.stdout(`${parts.join("\n\n")}\n(as of ${isoOf(status.asOf)})\n`);
    return 0;
  });
}
