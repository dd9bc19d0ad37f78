/**
 * Report: partial success, idempotency, partitions, and reported usage counted against quotas.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ReportRequestSchema } from "../../src/gen/licensing/v1/licensing_pb.js";
import { ensurePartitions, partitionName } from "../../src/metering/partitions.js";
import type { Metering } from "../../src/metering/metering.js";
import { createTestStore, testBackends, type TestStore } from "../support/database.js";
import { CONTEXT, FakeClock, T0, counter, countEvents, createTestMetering, report, seedLicence, usageEvent } from "./support.js";

const DAY = 86_400_000;
const NOV = Date.UTC(2026, 10, 1);

describe.each(testBackends())("Report on %s", (backend) => {
  let store: TestStore;
  let metering: Metering;
  let spoolDir: string;
  const clock = new FakeClock();

  beforeAll(async () => {
    store = await createTestStore(backend);
    spoolDir = await mkdtemp(join(tmpdir(), "metering-spool-"));
    await seedLicence(store.db, "lic-a", [
      { feature: "export", kind: "boolean" },
      { feature: "tokens", kind: "quota", limit: 1000, period: "month", overage: "allow_and_bill", unitPrice: 3 },
      { feature: "calls", kind: "quota", limit: 100, period: "month", overage: "block" },
    ]);
    await seedLicence(store.db, "lic-huge", [{ feature: "bulk", kind: "quota", limit: 100, period: "month", overage: "block" }]);
    ({ metering } = createTestMetering(store.db, clock, spoolDir));
    await metering.start();
  });
  afterAll(async () => {
    await metering.stop();
    await store.drop();
    await rm(spoolDir, { recursive: true, force: true });
  });

  it("creates monthly partitions from the oldest accepted month to three months ahead, and a default one", async () => {
    const { rows } = await sql<{ name: string }>`
      select c.relname as name from pg_inherits i join pg_class c on c.oid = i.inhrelid
      join pg_class p on p.oid = i.inhparent where p.relname = 'usage_events' order by 1`.execute(store.db);
    const names = rows.map((r) => r.name);
    expect(names).toEqual(
      expect.arrayContaining(["usage_events_default", "usage_events_y2026m10", "usage_events_y2026m11", "usage_events_y2027m02"]),
    );
    expect(names).not.toContain("usage_events_y2027m03");
  });

  it("the same batch sent 3 times is billed once: accepted, then duplicates", async () => {
    const batch = Array.from({ length: 20 }, (_, i) => ({ id: `dup-${i}`, licenseId: "lic-a", feature: "tokens", quantity: 5 }));
    const first = await report(metering, batch);
    const second = await report(metering, batch);
    const third = await report(metering, batch);
    expect([first.accepted, first.duplicates]).toEqual([20, 0]);
    expect([second.accepted, second.duplicates]).toEqual([0, 20]);
    expect([third.accepted, third.duplicates]).toEqual([0, 20]);
    expect(await countEvents(store.db, sql`id like 'dup-%'`)).toBe(20);
    expect(await counter(store.db, "lic-a", "tokens", NOV)).toEqual({ used: 100, overage: 0 });
  });

  it("1 invalid event among 1,000 leaves 999 accepted and names the bad index and field", async () => {
    const batch = Array.from({ length: 1000 }, (_, i) => ({ id: `bulk-${i}`, licenseId: "lic-a", feature: "export", quantity: i === 637 ? -1 : 1 }));
    const answer = await report(metering, batch);
    expect(answer.accepted).toBe(999);
    expect(answer.duplicates).toBe(0);
    expect(answer.rejected.map((r) => [r.index, r.reason])).toEqual([[637, "events[637].quantity: must be at least 0"]]);
    expect(await countEvents(store.db, sql`id like 'bulk-%'`)).toBe(999);
  });

  it("rejects each bad event with the field named, and accounts for every event", async () => {
    const answer = await report(metering, [
      { id: "", licenseId: "lic-a", feature: "export" },
      { id: "x".repeat(129), licenseId: "lic-a", feature: "export" },
      { id: "v-unknown-licence", licenseId: "nope", feature: "export" },
      { id: "v-not-entitled", licenseId: "lic-a", feature: "video" },
      { id: "v-future", licenseId: "lic-a", feature: "export", occurredAtMs: T0 + 6 * 60_000 },
      { id: "v-too-old", licenseId: "lic-a", feature: "export", occurredAtMs: T0 - 36 * DAY },
      { id: "v-ok", licenseId: "lic-a", feature: "export" },
      { id: "v-ok", licenseId: "lic-a", feature: "export" },
    ]);
    expect(answer.rejected.map((r) => r.reason)).toEqual([
      "events[0].id: is required",
      "events[1].id: must be at most 128 characters",
      "events[2].credential: licence nope does not exist",
      'events[3].feature: "video" is not entitled by licence lic-a',
      "events[4].occurred_at: is more than 300000 ms in the future",
      "events[5].occurred_at: is older than the 3024000000 ms accepted",
    ]);
    expect(answer.accepted).toBe(1);
    expect(answer.duplicates).toBe(1);
  });

  it("rejects text PostgreSQL cannot hold (U+0000, an unpaired surrogate) naming the field, and stores the rest", async () => {
    const event = (id: string, extra: Partial<{ operationId: string; attributes: Record<string, string> }> = {}) => ({
      ...usageEvent({ id, licenseId: "lic-a", feature: "export" }),
      ...extra,
    });
    const request = create(ReportRequestSchema, {
      events: [
        event("nul\u0000id"),
        event("half\ud800id"),
        event("s-op", { operationId: "op\u0000" }),
        event("s-attr-value", { attributes: { model: "x\u0000y" } }),
        event("s-attr-key", { attributes: { "k\udc00": "v" } }),
        event("s-ok", { attributes: { note: "tab\there, emoji \u{1F600}, control \u0001" } }),
      ],
    });
    const answer = await metering.report(request, CONTEXT);
    expect(answer.rejected.map((r) => [r.index, r.reason])).toEqual([
      [0, "events[0].id: must not contain U+0000 or an unpaired surrogate"],
      [1, "events[1].id: must not contain U+0000 or an unpaired surrogate"],
      [2, "events[2].operation_id: must not contain U+0000 or an unpaired surrogate"],
      [3, "events[3].attributes: values must not contain U+0000 or an unpaired surrogate"],
      [4, "events[4].attributes: keys must not contain U+0000 or an unpaired surrogate"],
    ]);
    expect(answer.accepted).toBe(1);
    const { rows } = await sql<{ attributes: unknown }>`select attributes from usage_events where id = 's-ok'`.execute(store.db);
    expect(rows[0]?.attributes).toEqual({ note: "tab\there, emoji \u{1F600}, control \u0001" });
  });

  it("rejects a license_id credential without a service token, per event", async () => {
    const request = create(ReportRequestSchema, { events: [usageEvent({ id: "no-token", licenseId: "lic-a", feature: "export" })] });
    const answer = await metering.report(request, { ...CONTEXT, header: () => undefined });
    expect(answer.accepted).toBe(0);
    expect(answer.rejected[0]?.reason).toMatch(/^events\[0\]\.credential: naming a licence directly/);
  });

  it("more than 1000 events is INVALID_ARGUMENT naming events", async () => {
    const batch = Array.from({ length: 1001 }, (_, i) => ({ id: `big-${i}`, licenseId: "lic-a", feature: "export" }));
    const error = await report(metering, batch).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(ConnectError);
    expect((error as ConnectError).code).toBe(Code.InvalidArgument);
    expect((error as ConnectError).rawMessage).toBe("events: at most 1000");
  });

  it("a retry arriving after its month's partition was created is still a duplicate", async () => {
    // Lands in the default partition: no partition for 2025 exists and the event is recent
    // enough only because the clock says so.
    clock.ms = Date.UTC(2025, 5, 10);
    const late = [{ id: "moved-1", licenseId: "lic-a", feature: "export", occurredAtMs: Date.UTC(2025, 5, 9) }];
    expect((await report(metering, late)).accepted).toBe(1);
    const { rows: before } = await sql<{ n: number }>`select count(*)::int8 as n from usage_events_default where id = 'moved-1'`.execute(store.db);
    expect(before[0]?.n).toBe(1);
    expect(await ensurePartitions(store.db, { year: 2025, month: 6 }, { year: 2025, month: 6 })).toEqual([partitionName({ year: 2025, month: 6 })]);
    const { rows: after } = await sql<{ n: number }>`select count(*)::int8 as n from usage_events_y2025m06 where id = 'moved-1'`.execute(store.db);
    expect(after[0]?.n).toBe(1);
    const retry = await report(metering, late);
    expect([retry.accepted, retry.duplicates]).toEqual([0, 1]);
    expect(await countEvents(store.db, sql`id = 'moved-1'`)).toBe(1);
    clock.ms = T0;
  });

  it("reported usage on allow_and_bill past the limit goes to overage; on block it still counts as used", async () => {
    await report(metering, [{ id: "big-tokens", licenseId: "lic-a", feature: "tokens", quantity: 1000 }]);
    // 100 used before + 1000: 900 fit under the limit, 100 over.
    expect(await counter(store.db, "lic-a", "tokens", NOV)).toEqual({ used: 1000, overage: 100 });
    await report(metering, [{ id: "big-calls", licenseId: "lic-a", feature: "calls", quantity: 150 }]);
    expect(await counter(store.db, "lic-a", "calls", NOV)).toEqual({ used: 150, overage: 0 });
  });

  it("sums a counter's usage exactly past 2^53 (no JavaScript rounding on the way to int8)", async () => {
    // 2^53 - 1 and 2 are each exact; their sum, 2^53 + 1, is not a JavaScript number.
    await report(metering, [
      { id: "huge-1", licenseId: "lic-huge", feature: "bulk", quantity: Number.MAX_SAFE_INTEGER },
      { id: "huge-2", licenseId: "lic-huge", feature: "bulk", quantity: 2 },
    ]);
    const { rows } = await sql<{ used: string }>`
      select used::text as used from quota_counters where license_id = 'lic-huge' and feature = 'bulk'`.execute(store.db);
    expect(rows).toEqual([{ used: "9007199254740993" }]);
  });

  it("usage lands in the quota period of occurred_at, not of receipt", async () => {
    clock.ms = Date.UTC(2026, 11, 1, 0, 1);
    await report(metering, [
      { id: "edge-nov", licenseId: "lic-a", feature: "calls", quantity: 7, occurredAtMs: Date.UTC(2026, 10, 30, 23, 59) },
      { id: "edge-dec", licenseId: "lic-a", feature: "calls", quantity: 3, occurredAtMs: Date.UTC(2026, 11, 1, 0, 0) },
    ]);
    expect(await counter(store.db, "lic-a", "calls", NOV)).toEqual({ used: 157, overage: 0 });
    expect(await counter(store.db, "lic-a", "calls", Date.UTC(2026, 11, 1))).toEqual({ used: 3, overage: 0 });
    clock.ms = T0;
  });

  it("concurrent Reports over many licences share group-commit transactions and count every event exactly once", async () => {
    const licences = Array.from({ length: 12 }, (_, l) => `gc-lic-${l}`);
    for (const id of licences) await seedLicence(store.db, id, [{ feature: "tokens", kind: "quota", limit: 1_000_000, period: "month", overage: "block" }]);
    // Warm the licence caches, so the concurrent calls below reach the recorder together.
    await report(metering, licences.map((licenseId) => ({ id: `gc-warm-${licenseId}`, licenseId, feature: "tokens", quantity: 1 })));
    const before = metering.stats().recorder;
    // 8 batches of 60 events over the 12 licences; batch 1 repeats 15 of batch 0's ids.
    const batches = Array.from({ length: 8 }, (_, b) =>
      Array.from({ length: 60 }, (_, i) => ({
        id: b === 1 && i < 15 ? `gc-0-${i}` : `gc-${b}-${i}`,
        licenseId: licences[i % licences.length] ?? "",
        feature: "tokens",
        quantity: b + 1,
      })),
    );
    const answers = await Promise.all(batches.map((events) => report(metering, events)));
    const after = metering.stats().recorder;

    expect(answers.reduce((n, a) => n + a.accepted, 0)).toBe(8 * 60 - 15);
    expect(answers.reduce((n, a) => n + a.duplicates, 0)).toBe(15);
    for (const a of answers) expect(a.accepted + a.duplicates).toBe(60);
    expect(await countEvents(store.db, sql`id like 'gc-%' and id not like 'gc-warm-%'`)).toBe(8 * 60 - 15);
    // Each licence's counter holds the quantities of the events stored, once each.
    const { rows } = await sql<{ license_id: string; used: number }>`
      select e.license_id, (sum(e.quantity) + 1)::int8 as used from usage_events e
      where e.id like 'gc-%' and e.id not like 'gc-warm-%' group by e.license_id`.execute(store.db);
    expect(rows).toHaveLength(licences.length);
    for (const row of rows) expect(await counter(store.db, row.license_id, "tokens", NOV)).toEqual({ used: row.used, overage: 0 });
    // Fewer transactions than batches: the ones that arrived during a write went together.
    expect(after.groupCommitBatches - before.groupCommitBatches).toBe(8);
    expect(after.groupCommits - before.groupCommits).toBeLessThan(8);
    expect(after.groupCommitSplits).toBe(before.groupCommitSplits);
  });
});
