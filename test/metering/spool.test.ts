/**
 * The spool: torn records, the size bound, replay on start, and PostgreSQL cut in the middle
 * of a stream of Reports (through a TCP proxy; PostgreSQL only).
 */
import { appendFile, mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import { sql } from "kysely";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { createSpool, encodeRecord } from "../../src/metering/spool.js";
import type { PreparedEvent } from "../../src/metering/usage-store.js";
import { createStore, type Store } from "../../src/store/database.js";
import { createTestStore, testBackends, type TestStore } from "../support/database.js";
import { startTcpProxy, type TcpProxy } from "../support/tcp-proxy.js";
import { FakeClock, countEvents, createTestMetering, recordingLogger, report, seedLicence } from "./support.js";

function prepared(id: string): PreparedEvent {
  return { id, licenseId: "lic-p", feature: "export", quantity: 1, occurredAtMs: Date.UTC(2026, 10, 15), receivedAtMs: Date.UTC(2026, 10, 15), attributes: {}, operationId: "", quota: null };
}

describe("spool file", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "spool-unit-"));
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  it("a torn last record is skipped and counted, the good ones before it are replayed, nothing throws", async () => {
    const logger = recordingLogger();
    const first = createSpool({ dir, maxBytes: 1 << 20, logger });
    await first.open();
    await first.append([prepared("a"), prepared("b")]);
    await first.append([prepared("c")]);
    await first.close();
    // A crash in the middle of the third append: half a record at the end of the segment.
    const [segment] = await readdir(dir);
    const torn = encodeRecord([prepared("d"), prepared("e")]);
    await appendFile(join(dir, segment ?? ""), torn.subarray(0, torn.length - 7));

    const second = createSpool({ dir, maxBytes: 1 << 20, logger });
    await second.open();
    expect(second.stats().events).toBe(3);
    const replayed: string[][] = [];
    expect(await second.replay(async (events) => void replayed.push(events.map((e) => e.id)))).toBe(3);
    expect(replayed).toEqual([["a", "b"], ["c"]]);
    expect(second.stats()).toMatchObject({ tornRecords: 1, events: 0, segments: 0 });
    expect(logger.entries.filter((e) => e.level === "warn").map((e) => e.msg)).toEqual([
      expect.stringContaining("skipped a torn record"),
    ]);
    expect(await readdir(dir)).toEqual([]);
  });

  it("a corrupt record (checksum mismatch) is skipped and counted", async () => {
    const logger = recordingLogger();
    const spool = createSpool({ dir, maxBytes: 1 << 20, logger });
    await spool.open();
    await spool.close();
    const bad = encodeRecord([prepared("x")]);
    bad.writeUInt8(bad.readUInt8(bad.length - 2) ^ 0xff, bad.length - 2);
    await appendFile(join(dir, "usage-000000000001.spool"), Buffer.concat([encodeRecord([prepared("w")]), bad]));
    const reopened = createSpool({ dir, maxBytes: 1 << 20, logger });
    await reopened.open();
    const seen: string[] = [];
    await reopened.replay(async (events) => void seen.push(...events.map((e) => e.id)));
    expect(seen).toEqual(["w"]);
    expect(reopened.stats().tornRecords).toBe(1);
  });

  it("a failed apply keeps the record, and the next replay resumes at it", async () => {
    const spool = createSpool({ dir, maxBytes: 1 << 20, logger: recordingLogger() });
    await spool.open();
    await spool.append([prepared("1")]);
    await spool.append([prepared("2")]);
    let calls = 0;
    await expect(
      spool.replay(async () => {
        calls += 1;
        if (calls === 2) throw new Error("down again");
      }),
    ).rejects.toThrow("down again");
    expect(spool.stats().events).toBe(1);
    const seen: string[] = [];
    await spool.replay(async (events) => void seen.push(...events.map((e) => e.id)));
    expect(seen).toEqual(["2"]);
    expect(spool.isEmpty()).toBe(true);
  });

  it("refuses an append beyond maxBytes rather than dropping anything", async () => {
    const spool = createSpool({ dir, maxBytes: 300, logger: recordingLogger() });
    await spool.open();
    await spool.append([prepared("fits")]);
    await expect(spool.append([prepared("too"), prepared("much")])).rejects.toThrow(/spool is full/);
    expect(spool.stats()).toMatchObject({ events: 1, rejectedFull: 1 });
  });
});

describe.each(testBackends().filter((b) => b === "postgres"))("PostgreSQL cut during a stream of Reports (%s)", (backend) => {
  let direct: TestStore;
  let proxy: TcpProxy;
  let viaProxy: Store;
  let spoolDir: string;
  const clock = new FakeClock();

  beforeAll(async () => {
    direct = await createTestStore(backend);
    await seedLicence(direct.db, "lic-p", [{ feature: "export", kind: "boolean" }, { feature: "tokens", kind: "quota", limit: 1_000_000, period: "month" }]);
    proxy = await startTcpProxy(Number(new URL(direct.databaseUrl ?? "").port || 5432));
    const url = new URL(direct.databaseUrl ?? "");
    url.port = String(proxy.port);
    viaProxy = await createStore({ databaseUrl: url.toString(), dataDir: tmpdir(), poolMax: 4, connectTimeoutMs: 1000 });
    spoolDir = await mkdtemp(join(tmpdir(), "metering-spool-"));
  });
  afterAll(async () => {
    await viaProxy.close();
    await proxy.close();
    await direct.drop();
    await rm(spoolDir, { recursive: true, force: true });
  });

  it("every acknowledged event is in the table exactly once, and the quota counted it once", async () => {
    const { metering } = createTestMetering(viaProxy.db, clock, spoolDir, { writeTimeoutMs: 2000 });
    await metering.start();
    const acknowledged: string[] = [];
    let spooledAnswers = 0;
    for (let batch = 0; batch < 30; batch += 1) {
      if (batch === 10) proxy.cut();
      if (batch === 20) proxy.restore();
      const events = Array.from({ length: 50 }, (_, i) => ({ id: `s-${batch}-${i}`, licenseId: "lic-p", feature: i % 2 === 0 ? "export" : "tokens", quantity: 2 }));
      // Every third batch is a retry of the previous one, as a client resends after a timeout.
      const sent = batch % 3 === 2 ? events.map((e) => ({ ...e, id: e.id.replace(`s-${batch}-`, `s-${batch - 1}-`) })) : events;
      const answer = await report(metering, sent);
      expect(answer.accepted + answer.duplicates).toBe(50);
      if (metering.stats().recorder.databaseUp === false) spooledAnswers += 1;
      acknowledged.push(...sent.map((e) => e.id));
    }
    expect(spooledAnswers).toBeGreaterThan(0);
    // Replay once PostgreSQL answers again (the loop's timer does this; here the test ticks).
    for (let i = 0; i < 20 && !(metering.stats().spool.events === 0 && metering.stats().recorder.databaseUp); i += 1) {
      clock.advance(1500);
      await metering.tick();
    }
    expect(metering.stats().spool).toMatchObject({ events: 0, segments: 0 });
    const unique = [...new Set(acknowledged)];
    const { rows } = await sql<{ id: string; n: number }>`
      select id, count(*)::int8 as n from usage_events where id like 's-%' group by id`.execute(direct.db);
    expect(rows.length).toBe(unique.length);
    expect(rows.every((r) => r.n === 1)).toBe(true);
    expect(new Set(rows.map((r) => r.id))).toEqual(new Set(unique));
    const tokens = unique.filter((id) => Number(id.split("-")[2]) % 2 === 1).length;
    const counted = await direct.db.selectFrom("quota_counters").select("used").where("license_id", "=", "lic-p").where("feature", "=", "tokens").executeTakeFirst();
    expect(counted?.used).toBe(tokens * 2);
    await metering.stop();
  });

  it("a spool left by an earlier process is replayed on start", async () => {
    const { metering: first } = createTestMetering(viaProxy.db, clock, spoolDir);
    await first.start();
    // The licence is cached by a first Report (an uncached licence cannot be resolved while
    // PostgreSQL is away: such events are rejected with "retry").
    await report(first, [{ id: "left-0", licenseId: "lic-p", feature: "export" }]);
    proxy.cut();
    const answer = await report(first, [{ id: "left-1", licenseId: "lic-p", feature: "export" }, { id: "left-2", licenseId: "lic-p", feature: "export" }]);
    expect(answer.accepted).toBe(2);
    expect(first.stats().spool.events).toBe(2);
    // No stop(): the process "dies" with the spool on disk.
    proxy.restore();
    const { metering: second } = createTestMetering(viaProxy.db, clock, spoolDir);
    await second.start();
    expect(await countEvents(direct.db, sql`id like 'left-%'`)).toBe(3);
    expect(second.stats().spool.events).toBe(0);
    await second.stop();
  });

  it("Report answers UNAVAILABLE when PostgreSQL is away and the spool is full", async () => {
    const dir = await mkdtemp(join(tmpdir(), "metering-full-"));
    const { metering } = createTestMetering(viaProxy.db, clock, dir, { spoolMaxBytes: 600 });
    await metering.start();
    await report(metering, [{ id: "full-0", licenseId: "lic-p", feature: "export" }]);
    proxy.cut();
    expect((await report(metering, [{ id: "full-1", licenseId: "lic-p", feature: "export" }])).accepted).toBe(1);
    const error = await report(metering, Array.from({ length: 10 }, (_, i) => ({ id: `full-x${i}`, licenseId: "lic-p", feature: "export" }))).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConnectError);
    expect((error as ConnectError).code).toBe(Code.Unavailable);
    proxy.restore();
    await metering.stop();
    expect(await countEvents(direct.db, sql`id like 'full-%'`)).toBe(2);
    await rm(dir, { recursive: true, force: true });
  });
});
