/**
 * Usage statements: the month boundary, exact amounts, and the closed period's statement that
 * never changes.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GetUsageStatementRequestSchema } from "../../src/gen/licensing/admin/v1/admin_pb.js";
import { render } from "../../src/cli/commands/usage.js";
import type { Metering } from "../../src/metering/metering.js";
import { getUsageStatement, type UsageStatement } from "../../src/metering/statement.js";
import { createUsageAdminHandlers, toResponse } from "../../src/metering/usage-admin.js";
import { createTestStore, testBackends, type TestStore } from "../support/database.js";
import { CONTEXT, FakeClock, createTestMetering, report, seedLicence } from "./support.js";

const DAY = 86_400_000;

function line(statement: UsageStatement, feature: string) {
  const found = statement.lines.find((l) => l.feature === feature);
  if (found === undefined) throw new Error(`no line for ${feature}`);
  return found;
}

describe.each(testBackends())("usage statements on %s", (backend) => {
  let store: TestStore;
  let metering: Metering;
  let spoolDir: string;
  const clock = new FakeClock(Date.UTC(2026, 10, 30, 23, 0));

  beforeAll(async () => {
    store = await createTestStore(backend);
    spoolDir = await mkdtemp(join(tmpdir(), "metering-spool-"));
    await seedLicence(store.db, "lic-s", [
      { feature: "tokens", kind: "quota", limit: 1000, period: "month", overage: "allow_and_bill", unitPrice: 3 },
      { feature: "exports", kind: "quota", limit: 10, period: "day", overage: "allow_and_bill", unitPrice: 250 },
      { feature: "calls", kind: "quota", limit: 100, period: "month", overage: "block", unitPrice: 9 },
      { feature: "search", kind: "boolean" },
      { feature: "nodes", kind: "capacity", limit: 4, unitPrice: 12 },
    ]);
    ({ metering } = createTestMetering(store.db, clock, spoolDir));
    await metering.start();
  });
  afterAll(async () => {
    await metering.stop();
    await store.drop();
    await rm(spoolDir, { recursive: true, force: true });
  });

  it("events on both sides of a month boundary land in their own month's statement", async () => {
    clock.ms = Date.UTC(2026, 11, 1, 0, 30);
    await report(metering, [
      { id: "nov-1", licenseId: "lic-s", feature: "tokens", quantity: 1200, occurredAtMs: Date.UTC(2026, 10, 30, 23, 59, 59, 999) },
      { id: "dec-1", licenseId: "lic-s", feature: "tokens", quantity: 5, occurredAtMs: Date.UTC(2026, 11, 1) },
      { id: "nov-2", licenseId: "lic-s", feature: "search", quantity: 7, occurredAtMs: Date.UTC(2026, 10, 30, 12) },
      { id: "dec-2", licenseId: "lic-s", feature: "search", quantity: 2, occurredAtMs: Date.UTC(2026, 11, 1, 0, 10) },
      { id: "nov-3", licenseId: "lic-s", feature: "exports", quantity: 12, occurredAtMs: Date.UTC(2026, 10, 29, 8) },
      { id: "nov-4", licenseId: "lic-s", feature: "exports", quantity: 9, occurredAtMs: Date.UTC(2026, 10, 30, 8) },
      { id: "nov-5", licenseId: "lic-s", feature: "calls", quantity: 130, occurredAtMs: Date.UTC(2026, 10, 30, 8) },
    ]);
    const nov = await getUsageStatement(store.db, "lic-s", "2026-11", { nowMs: clock.ms });
    const dec = await getUsageStatement(store.db, "lic-s", "2026-12", { nowMs: clock.ms });
    expect(nov.final).toBe(false);
    expect(line(nov, "tokens")).toMatchObject({ included: 1000n, used: 1200n, overage: 200n, unitPrice: 3n, amountDue: 600n });
    expect(line(dec, "tokens")).toMatchObject({ included: 1000n, used: 5n, overage: 0n, amountDue: 0n });
    expect(line(nov, "search")).toMatchObject({ kind: "boolean", included: null, used: 7n, amountDue: 0n });
    expect(line(dec, "search")).toMatchObject({ used: 2n });
    // Daily quota: 30 days x 10 included; overage per day: 2 on the 29th, 0 on the 30th.
    expect(line(nov, "exports")).toMatchObject({ included: 300n, used: 21n, overage: 2n, amountDue: 500n });
    // A block quota shows the usage past the limit but bills none.
    expect(line(nov, "calls")).toMatchObject({ included: 100n, used: 130n, overage: 0n, amountDue: 0n });
    expect(nov.capacity).toEqual([{ feature: "nodes", unitSeconds: 0n, unitPrice: 12n, amountDue: 0n }]);
    expect(nov.totalDue).toBe(1100n);
    expect(nov.currency).toBe("EUR");
  });

  it("a closed period's statement is stored once and never changes after late events", async () => {
    clock.ms = Date.UTC(2026, 11, 2, 0, 1);
    const closed = await getUsageStatement(store.db, "lic-s", "2026-11", { nowMs: clock.ms });
    expect(closed.final).toBe(true);
    expect(closed.totalDue).toBe(1100n);
    // A late event for November, within the accepted age.
    await report(metering, [{ id: "nov-late", licenseId: "lic-s", feature: "tokens", quantity: 500, occurredAtMs: Date.UTC(2026, 10, 20) }]);
    clock.advance(3 * DAY);
    const again = await getUsageStatement(store.db, "lic-s", "2026-11", { nowMs: clock.ms, currency: "USD" });
    expect(again).toEqual(closed);
    expect(line(again, "tokens").used).toBe(1200n);
  });

  it("amounts beyond 2^53 minor units stay exact (bigint, int64 on the wire)", async () => {
    await seedLicence(store.db, "lic-big", [
      { feature: "bytes", kind: "quota", limit: 0, period: "month", overage: "allow_and_bill", unitPrice: 4_000_000_000 },
    ]);
    clock.ms = Date.UTC(2026, 11, 20);
    await report(metering, [{ id: "big-1", licenseId: "lic-big", feature: "bytes", quantity: 900_000_000 }]);
    const statement = await getUsageStatement(store.db, "lic-big", "2026-12", { nowMs: clock.ms });
    expect(line(statement, "bytes").amountDue).toBe(3_600_000_000_000_000_000n);
    expect(render(toResponse(statement), "json")).toContain('"amount_due": "3600000000000000000"');
  });

  it("GetUsageStatement answers INVALID_ARGUMENT for a bad period and NOT_FOUND for an unknown licence", async () => {
    const handlers = createUsageAdminHandlers({ db: store.db, authorize: () => ({ operator: true }), now: clock.now });
    const call = (licenseId: string, period: string) =>
      Promise.resolve(handlers.getUsageStatement(create(GetUsageStatementRequestSchema, { licenseId, period }), CONTEXT)).then(
        (r) => r,
        (e: unknown) => e as ConnectError,
      );
    const bad = await call("lic-s", "2026-13");
    expect(bad).toBeInstanceOf(ConnectError);
    expect((bad as ConnectError).code).toBe(Code.InvalidArgument);
    expect(((await call("nope", "2026-11")) as ConnectError).code).toBe(Code.NotFound);
    const other = createUsageAdminHandlers({ db: store.db, authorize: () => ({ operator: false, accountId: "someone-else" }), now: clock.now });
    const hidden = await Promise.resolve(other.getUsageStatement(create(GetUsageStatementRequestSchema, { licenseId: "lic-s", period: "2026-11" }), CONTEXT)).catch((e: unknown) => e);
    expect((hidden as ConnectError).code).toBe(Code.NotFound);
    const ok = await call("lic-s", "2026-11");
    expect(ok).not.toBeInstanceOf(ConnectError);
    expect(render(ok as ReturnType<typeof toResponse>, "csv").split("\n")[0]).toBe(
      "license_id,period,feature,kind,included,used,overage,unit_seconds,unit_price,amount_due,currency",
    );
  });
});
