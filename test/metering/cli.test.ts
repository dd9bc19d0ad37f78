/**
 * `licensing usage statement`: arguments, formats, exact integers.
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { GetUsageStatementResponseSchema, UsageStatementLineSchema } from "../../src/gen/licensing/admin/v1/admin_pb.js";
import type { AdminClient } from "../../src/cli/admin-client.js";
import { majorUnits, usageCommand } from "../../src/cli/commands/usage.js";

const statement = create(GetUsageStatementResponseSchema, {
  licenseId: "acme-prod",
  accountId: "acme",
  plan: "pro",
  period: "2026-11",
  periodStart: timestampFromMs(Date.UTC(2026, 10, 1)),
  periodEnd: timestampFromMs(Date.UTC(2026, 11, 1)),
  currency: "EUR",
  lines: [create(UsageStatementLineSchema, { feature: "tokens", kind: "quota", quotaPeriod: "month", included: 1000n, used: 1200n, overage: 200n, unitPrice: 3n, amountDue: 600n })],
  totalDue: 600n,
  final: true,
  computedAt: timestampFromMs(Date.UTC(2026, 11, 2)),
});

function run(args: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const requests: unknown[] = [];
  const client = {
    getUsageStatement: async (request: unknown) => {
      requests.push(request);
      return statement;
    },
  } as unknown as AdminClient;
  return usageCommand(args, client, { stdout: (t) => out.push(t), stderr: (t) => err.push(t) }).then((code) => ({ code, out: out.join(""), err: err.join(""), requests }));
}

describe("licensing usage statement", () => {
  it("prints a table with the total in minor and major units", async () => {
    const { code, out, requests } = await run(["statement", "--license", "acme-prod", "--period", "2026-11"]);
    expect(code).toBe(0);
    expect(requests).toEqual([{ licenseId: "acme-prod", period: "2026-11" }]);
    expect(out).toContain("tokens   quota/month  1000      1200  200      3           600");
    expect(out).toContain("600 (6.00 EUR)");
  });

  it("prints CSV and JSON with exact integers", async () => {
    const csv = await run(["statement", "--license", "acme-prod", "--period", "2026-11", "--format", "csv"]);
    expect(csv.out.split("\n")[1]).toBe("acme-prod,2026-11,tokens,quota,1000,1200,200,,3,600,EUR");
    const json = await run(["statement", "--license", "acme-prod", "--period", "2026-11", "--format", "json"]);
    expect(JSON.parse(json.out)).toMatchObject({ total_due: "600", final: true, lines: [{ feature: "tokens", amount_due: "600" }] });
  });

  it("exits 2 naming the problem for a missing licence, a bad period or format", async () => {
    expect((await run(["statement", "--period", "2026-11"])).code).toBe(2);
    const bad = await run(["statement", "--license", "a", "--period", "2026-13"]);
    expect([bad.code, bad.err]).toEqual([2, expect.stringContaining("--period YYYY-MM")]);
    expect((await run(["statement", "--license", "a", "--period", "2026-11", "--format", "xml"])).err).toContain("--format must be table, csv or json");
  });

  it("formats major units exactly", () => {
    expect(majorUnits(3_600_000_000_000_000_005n)).toBe("36000000000000000.05");
    expect(majorUnits(7n)).toBe("0.07");
  });
});
