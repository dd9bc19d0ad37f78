/**
 * `licensing usage statement --license L --period 2026-11 [--format table|csv|json]`: a
 * licence's usage statement for a month, through the running service's AdminService.
 *
 * Takes a connected client (main.ts connects with --server/--token, which are accepted here and
 * left to it). Exit codes: 0 success, 2 bad usage (reported here); RPC errors are thrown for
 * main.ts to report (exit 1). Amounts are printed exactly: minor units as integers, and in the
 * table also as major units with two decimals (ISO 4217 currencies with other exponents show
 * minor units only).
 */
import { parseArgs, type ParseArgsConfig } from "node:util";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import type { GetUsageStatementResponse } from "../../gen/licensing/admin/v1/admin_pb.js";
import type { AdminClient } from "../admin-client.js";
import { json, table } from "../output.js";

export const USAGE_HELP = `Usage: licensing usage statement --license LICENSE --period YYYY-MM [--format table|csv|json]

A licence's usage statement for one calendar month (UTC): per feature the units included,
used and over the allowance, and the amount due at the plan's unit prices (minor currency
units, exact). A closed month's statement (its end plus the grace period has passed) is final
and never changes.
  --license ID      the licence
  --period MONTH    the month, e.g. 2026-11
  --format FMT      table (default), csv or json`;

export interface UsageCommandIo {
  readonly stdout: (text: string) => void;
  readonly stderr: (text: string) => void;
}

const processIo: UsageCommandIo = {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
};

const OPTIONS = {
  server: { type: "string" },
  token: { type: "string" },
  license: { type: "string" },
  period: { type: "string" },
  format: { type: "string", default: "table" },
} as const satisfies ParseArgsConfig["options"];

class UsageError extends Error {}

type Format = "table" | "csv" | "json";

/** `licensing usage <args>`. */
export async function usageCommand(args: string[], client: AdminClient, io: UsageCommandIo = processIo): Promise<number> {
  try {
    const [sub, ...rest] = args;
    if (sub !== "statement") throw new UsageError(sub === undefined ? "usage needs a subcommand: statement" : `unknown usage subcommand "${sub}"`);
    const values = parse(rest);
    if (values.license === undefined || values.license === "") throw new UsageError("usage statement needs --license LICENSE");
    if (values.period === undefined || !/^\d{4}-(0[1-9]|1[0-2])$/.test(values.period)) {
      throw new UsageError("usage statement needs --period YYYY-MM, e.g. --period 2026-11");
    }
    const format = formatOf(values.format);
    const statement = await client.getUsageStatement({ licenseId: values.license, period: values.period });
    io.stdout(`${render(statement, format)}\n`);
    return 0;
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    io.stderr(`licensing: ${error.message}\nRun "licensing usage --help" for usage.\n`);
    return 2;
  }
}

function parse(args: string[]) {
  try {
    return parseArgs({ args, options: OPTIONS, allowPositionals: false, strict: true }).values;
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

function formatOf(value: string | undefined): Format {
  if (value === "table" || value === "csv" || value === "json") return value;
  throw new UsageError(`--format must be table, csv or json, got "${value}"`);
}

export function render(s: GetUsageStatementResponse, format: Format): string {
  switch (format) {
    case "json":
      return json(toJson(s));
    case "csv":
      return toCsv(s);
    case "table":
      return toTable(s);
  }
}

/** Integers as JSON strings: int64 values do not fit a JSON number exactly. */
function toJson(s: GetUsageStatementResponse) {
  return {
    license_id: s.licenseId,
    account_id: s.accountId,
    plan: s.plan,
    period: s.period,
    period_start: isoOf(s.periodStart),
    period_end: isoOf(s.periodEnd),
    currency: s.currency,
    final: s.final,
    computed_at: isoOf(s.computedAt),
    lines: s.lines.map((l) => ({
      feature: l.feature,
      kind: l.kind,
      quota_period: l.quotaPeriod,
      included: l.included === undefined ? null : l.included.toString(),
      used: l.used.toString(),
      overage: l.overage.toString(),
      unit_price: l.unitPrice.toString(),
      amount_due: l.amountDue.toString(),
    })),
    capacity: s.capacity.map((c) => ({
      feature: c.feature,
      unit_seconds: c.unitSeconds.toString(),
      unit_price: c.unitPrice.toString(),
      amount_due: c.amountDue.toString(),
    })),
    total_due: s.totalDue.toString(),
  };
}

const CSV_HEADER = ["license_id", "period", "feature", "kind", "included", "used", "overage", "unit_seconds", "unit_price", "amount_due", "currency"];

function toCsv(s: GetUsageStatementResponse): string {
  const rows: string[][] = [CSV_HEADER];
  for (const l of s.lines) {
    rows.push([s.licenseId, s.period, l.feature, l.kind, l.included?.toString() ?? "", l.used.toString(), l.overage.toString(), "", l.unitPrice.toString(), l.amountDue.toString(), s.currency]);
  }
  for (const c of s.capacity) {
    rows.push([s.licenseId, s.period, c.feature, "capacity", "", "", "", c.unitSeconds.toString(), c.unitPrice.toString(), c.amountDue.toString(), s.currency]);
  }
  rows.push([s.licenseId, s.period, "TOTAL", "", "", "", "", "", "", s.totalDue.toString(), s.currency]);
  return rows.map((row) => row.map(csvCell).join(",")).join("\n");
}

function csvCell(value: string): string {
  return /[",\n\r]/.test(value) ? `"${value.replaceAll('"', '""')}"` : value;
}

function toTable(s: GetUsageStatementResponse): string {
  const state = s.final ? "final" : `provisional, computed ${isoOf(s.computedAt)}`;
  const head = `Usage statement ${s.period} for licence ${s.licenseId} (account ${s.accountId}, plan ${s.plan}), ${state}; amounts in ${s.currency} minor units`;
  const rows: string[][] = [["FEATURE", "KIND", "INCLUDED", "USED", "OVERAGE", "UNIT PRICE", "AMOUNT DUE"]];
  for (const l of s.lines) {
    const kind = l.quotaPeriod === "" ? l.kind : `${l.kind}/${l.quotaPeriod}`;
    rows.push([l.feature, kind, l.included?.toString() ?? "-", l.used.toString(), l.overage.toString(), l.unitPrice.toString(), l.amountDue.toString()]);
  }
  for (const c of s.capacity) {
    rows.push([c.feature, "capacity", "-", `${c.unitSeconds} unit-s`, "-", `${c.unitPrice}/unit-h`, c.amountDue.toString()]);
  }
  rows.push(["TOTAL", "", "", "", "", "", `${s.totalDue} (${majorUnits(s.totalDue)} ${s.currency})`]);
  return `${head}\n${table(rows)}`;
}

/** 12345n → "123.45", exactly (two-decimal currencies). */
export function majorUnits(minor: bigint): string {
  const sign = minor < 0n ? "-" : "";
  const abs = minor < 0n ? -minor : minor;
  return `${sign}${abs / 100n}.${(abs % 100n).toString().padStart(2, "0")}`;
}

function isoOf(timestamp: Timestamp | undefined): string {
  return timestamp === undefined ? "" : timestampDate(timestamp).toISOString();
}
