import { RawNode, ValueNode, sql, type Kysely, type KyselyPlugin, type QueryId } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decisionsCommand } from "../../src/cli/commands/decisions.js";
import {
  chainHash,
  createDecisionLog,
  verifyDecisionLog,
  type DecisionLogEntry,
  type DecisionLogOptions,
} from "../../src/licensing/decision-log.js";
import type { Database } from "../../src/store/schema.js";
import { createTestStore, testBackends, type TestStore } from "../support/database.js";

/** 2026-11-21T10:00:00.000Z: the start of a second, so tests can stay inside or step past it. */
const T0 = Date.parse("2026-11-21T10:00:00.000Z");

interface LogEntry {
  level: "warn" | "error";
  obj: Record<string, unknown>;
  msg: string;
}

function recordingLogger() {
  const entries: LogEntry[] = [];
  return {
    entries,
    warn: (obj: object, msg: string) => void entries.push({ level: "warn", obj: obj as Record<string, unknown>, msg }),
    error: (obj: object, msg: string) => void entries.push({ level: "error", obj: obj as Record<string, unknown>, msg }),
  };
}

/** A settable clock, epoch ms. */
function testClock(start = T0) {
  let time = start;
  return {
    now: () => time,
    set: (ms: number) => void (time = ms),
  };
}

/**
 * The same database, with every INSERT's row count recorded, and a switch that makes the next
 * INSERT commit but report failure (the answer lost on the way back).
 */
function instrumented(db: Kysely<Database>) {
  const insertRows: number[] = [];
  const inserts = new WeakSet<QueryId>();
  let loseNextAnswer = false;
  const plugin: KyselyPlugin = {
    transformQuery({ node, queryId }) {
      // The writer inserts one JSON array of rows: a batch's rows are that array's length.
      if (RawNode.is(node) && node.sqlFragments.join("$").includes("insert into decision_log")) {
        inserts.add(queryId);
        const first = node.parameters[0];
        insertRows.push(first !== undefined && ValueNode.is(first) && typeof first.value === "string" ? (JSON.parse(first.value) as unknown[]).length : 0);
      }
      return node;
    },
    async transformResult({ result, queryId }) {
      if (inserts.has(queryId) && loseNextAnswer) {
        loseNextAnswer = false;
        throw new Error("connection reset after commit");
      }
      return result;
    },
  };
  return {
    db: db.withPlugin(plugin),
    insertRows,
    loseNextAnswer: () => void (loseNextAnswer = true),
  };
}

let nextDecision = 0;

function deny(timeMs: number, overrides: Partial<DecisionLogEntry> = {}): DecisionLogEntry {
  return {
    decisionId: `d-${++nextDecision}`,
    timeMs,
    licenseId: "lic-1",
    feature: "export",
    allow: false,
    reason: "QUOTA_EXHAUSTED",
    quantity: 1,
    ...overrides,
  };
}

function allow(timeMs: number, overrides: Partial<DecisionLogEntry> = {}): DecisionLogEntry {
  return deny(timeMs, { allow: true, reason: "OK", ...overrides });
}

describe.each(testBackends())("decision log on %s", (backend) => {
  let store: TestStore;
  let replicaCounter = 0;

  beforeAll(async () => {
    store = await createTestStore(backend);
  });
  afterAll(() => store.drop());

  /** A fresh replica id per test, so each test owns its chain in the shared database. */
  function replica(): string {
    return `replica-${++replicaCounter}`;
  }

  function writer(options: Partial<DecisionLogOptions> & { replicaId: string }) {
    const clock = testClock();
    const logger = recordingLogger();
    const log = createDecisionLog({ db: store.db, now: clock.now, logger, ...options });
    return { log, clock, logger };
  }

  async function rowsOf(replicaId: string) {
    return store.db.selectFrom("decision_log").selectAll().where("replica_id", "=", replicaId).orderBy("seq").execute();
  }

  async function verdictOf(replicaId: string) {
    const report = await verifyDecisionLog(store.db, { replicaId });
    expect(report.replicas).toHaveLength(1);
    return report.replicas[0];
  }

  /** Writes `n` denies one second apart to a fresh replica and returns its id. */
  async function chainOf(n: number): Promise<string> {
    const replicaId = replica();
    const { log } = writer({ replicaId });
    await log.start();
    for (let i = 0; i < n; i++) log.record(deny(T0 + i * 1000, { quantity: i + 1 }));
    await log.stop();
    return replicaId;
  }

  it("writes rows in multi-row batches of at most maxBatchRows, seq from 1 and each prev_hash the previous hash", async () => {
    const replicaId = replica();
    const { db, insertRows } = instrumented(store.db);
    const { log } = writer({ replicaId, db, maxBatchRows: 3 });
    await log.start();
    for (let i = 0; i < 7; i++) log.record(deny(T0 + i));
    expect(log.stats().queued).toBe(7);
    await log.flush();
    expect(insertRows).toEqual([3, 3, 1]);
    const rows = await rowsOf(replicaId);
    expect(rows.map((r) => r.seq)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(rows[0]?.prev_hash).toBe("");
    for (let i = 1; i < rows.length; i++) expect(rows[i]?.prev_hash).toBe(rows[i - 1]?.hash);
    const first = rows[0];
    if (first === undefined) throw new Error("no rows");
    expect(first.hash).toBe(
      chainHash("", {
        replicaId,
        seq: 1,
        decisionId: first.decision_id,
        timeMs: T0,
        licenseId: "lic-1",
        feature: "export",
        decision: "deny",
        reason: "QUOTA_EXHAUSTED",
        quantity: 1,
        count: 1,
      }),
    );
    expect(log.stats()).toMatchObject({ queued: 0, written: 7, dropped: 0, flushFailures: 0 });
    await log.stop();
  });

  it("a deny is a row of its own with its decision_id, reason, quantity and millisecond time", async () => {
    const replicaId = replica();
    const { log } = writer({ replicaId });
    await log.start();
    log.record({ decisionId: "dec-42", timeMs: T0 + 123, licenseId: null, feature: "sso", allow: false, reason: "UNKNOWN_CREDENTIAL", quantity: 3 });
    await log.flush();
    const rows = await rowsOf(replicaId);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({
      seq: 1,
      decision_id: "dec-42",
      license_id: null,
      feature: "sso",
      decision: "deny",
      reason: "UNKNOWN_CREDENTIAL",
      quantity: 3,
      count: 1,
    });
    expect(rows[0]?.time.toISOString()).toBe("2026-11-21T10:00:00.123Z");
    await log.stop();
  });

  it("stores text that JSON or array literals must escape exactly as recorded, and the chain verifies", async () => {
    const replicaId = replica();
    const { log } = writer({ replicaId });
    await log.start();
    const awkward = ['a,"b"\\{c}', "NULL", "", " spaced ", "ünïcode ✓", "[1,2]", "\\u0041", "😀", "null"];
    for (const [i, feature] of awkward.entries()) log.record(deny(T0 + i, { feature, licenseId: i === 1 ? null : feature }));
    await log.flush();
    const rows = await rowsOf(replicaId);
    expect(rows.map((r) => r.feature)).toEqual(awkward);
    expect(rows.map((r) => r.license_id)).toEqual(awkward.map((feature, i) => (i === 1 ? null : feature)));
    expect(await verdictOf(replicaId)).toEqual({ replicaId, rows: awkward.length });
    await log.stop();
  });

  it("1,000 allows in one second become one row with count 1000 and their summed quantity, once the second is over", async () => {
    const replicaId = replica();
    const { log, clock } = writer({ replicaId });
    await log.start();
    for (let i = 0; i < 1000; i++) log.record(allow(T0 + (i % 1000), { quantity: 2 }));
    expect(log.stats()).toMatchObject({ queued: 1, aggregatedAllows: 1000 });

    clock.set(T0 + 999);
    await log.flush();
    expect(await rowsOf(replicaId)).toHaveLength(0); // the second is not over: more may come

    clock.set(T0 + 1000);
    await log.flush();
    const rows = await rowsOf(replicaId);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ seq: 1, decision_id: null, decision: "allow", reason: "OK", count: 1000, quantity: 2000 });
    expect(rows[0]?.time.getTime()).toBe(T0);
    expect(await verdictOf(replicaId)).toEqual({ replicaId, rows: 1 });
    await log.stop();
  });

  it("allows of another licence, feature, reason or second are rows of their own; denies stay single", async () => {
    const replicaId = replica();
    const { log, clock } = writer({ replicaId });
    await log.start();
    log.record(allow(T0));
    log.record(allow(T0 + 1));
    log.record(allow(T0, { licenseId: "lic-2" }));
    log.record(allow(T0, { feature: "import" }));
    log.record(allow(T0, { reason: "BACKEND_UNAVAILABLE" }));
    log.record(allow(T0 + 1000));
    log.record(deny(T0 + 5));
    log.record(deny(T0 + 5));
    clock.set(T0 + 2000);
    await log.flush();
    const rows = await rowsOf(replicaId);
    expect(rows).toHaveLength(7);
    expect(rows.filter((r) => r.decision === "deny").map((r) => r.count)).toEqual([1, 1]);
    expect(rows.filter((r) => r.decision === "allow").reduce((sum, r) => sum + r.count, 0)).toBe(6);
    // Sealed in one flush, rows are chained in time order.
    const times = rows.map((r) => r.time.getTime());
    expect(times).toEqual([...times].sort((a, b) => a - b));
    await log.stop();
  });

  it('mode "all" writes every allow as a row with its decision_id', async () => {
    const replicaId = replica();
    const { log } = writer({ replicaId, mode: "all" });
    await log.start();
    log.record(allow(T0, { decisionId: "a-1" }));
    log.record(allow(T0, { decisionId: "a-2" }));
    await log.flush();
    const rows = await rowsOf(replicaId);
    expect(rows.map((r) => [r.decision_id, r.count])).toEqual([
      ["a-1", 1],
      ["a-2", 1],
    ]);
    expect(log.stats().aggregatedAllows).toBe(0);
    await log.stop();
  });

  it("stop() writes everything, the current second's aggregates included", async () => {
    const replicaId = replica();
    const { log } = writer({ replicaId });
    await log.start();
    log.record(allow(T0 + 10));
    log.record(deny(T0 + 20));
    await log.stop();
    expect((await rowsOf(replicaId)).map((r) => r.decision)).toEqual(["allow", "deny"]);
    expect(log.stats().queued).toBe(0);
  });

  it("a full queue drops new decisions but counts them, warns once per interval with the count, and tells onOverflow", async () => {
    const replicaId = replica();
    const overflows: number[] = [];
    const { log, logger } = writer({ replicaId, maxQueue: 10, onOverflow: (n) => void overflows.push(n) });
    await log.start();
    log.record(allow(T0)); // one aggregated row
    for (let i = 0; i < 14; i++) log.record(deny(T0 + i)); // 9 fit, 5 do not
    log.record(allow(T0)); // folds into the existing aggregate: accepted although full
    log.record(allow(T0, { feature: "new" })); // would need a new row: dropped
    expect(log.stats()).toMatchObject({ queued: 10, dropped: 6, aggregatedAllows: 2 });
    expect(logger.entries).toHaveLength(0); // nothing logged on the hot path

    await log.flush();
    const warnings = logger.entries.filter((e) => e.level === "warn");
    expect(warnings).toHaveLength(1);
    expect(warnings[0]?.obj).toMatchObject({ dropped: 6, droppedTotal: 6, maxQueue: 10 });
    expect(overflows).toEqual([6]);

    await log.flush(); // nothing new dropped: no second warning
    expect(logger.entries.filter((e) => e.level === "warn")).toHaveLength(1);
    await log.stop();
    const rows = await rowsOf(replicaId);
    expect(rows.reduce((sum, r) => sum + r.count, 0)).toBe(11); // 9 denies + 2 allows
    expect(log.stats()).toMatchObject({ written: 10, dropped: 6 });
  });

  it("an entry with an invalid quantity or time is dropped and counted, never written", async () => {
    const replicaId = replica();
    const { log, logger } = writer({ replicaId });
    await log.start();
    log.record(deny(T0, { quantity: -1 }));
    log.record(deny(T0, { quantity: 1.5 }));
    log.record(deny(Number.NaN));
    log.record(deny(T0));
    await log.flush();
    expect(log.stats()).toMatchObject({ dropped: 3, written: 1 });
    expect(logger.entries.find((e) => e.level === "warn")?.obj).toMatchObject({ dropped: 3, invalid: 3 });
    await log.stop();
  });

  it("a NUL character in a feature name is stored as U+FFFD and the chain still verifies", async () => {
    const replicaId = replica();
    const { log } = writer({ replicaId });
    await log.start();
    log.record(deny(T0, { feature: "ex\u0000port" }));
    await log.stop();
    expect((await rowsOf(replicaId))[0]?.feature).toBe("ex\uFFFDport");
    expect((await verdictOf(replicaId))?.firstBadSeq).toBeUndefined();
  });

  it("a lone UTF-16 surrogate is stored as U+FFFD, as UTF-8 carries it, and the chain still verifies", async () => {
    const replicaId = replica();
    const { log } = writer({ replicaId });
    await log.start();
    log.record(deny(T0, { feature: "ex\ud800port", licenseId: "lic-\udc00" }));
    await log.stop();
    const [row] = await rowsOf(replicaId);
    expect([row?.feature, row?.license_id]).toEqual(["ex\uFFFDport", "lic-\uFFFD"]);
    expect(await verdictOf(replicaId)).toEqual({ replicaId, rows: 1 });
  });

  it("while the database refuses inserts, rows are kept and retried later with the chain intact", async () => {
    const replicaId = replica();
    const { log, logger } = writer({ replicaId, maxBatchRows: 2 });
    await log.start();
    log.record(deny(T0));
    await log.flush();
    await sql`alter table decision_log rename to decision_log_away`.execute(store.db);
    try {
      log.record(deny(T0 + 1));
      log.record(deny(T0 + 2));
      log.record(deny(T0 + 3));
      await log.flush();
      log.record(deny(T0 + 4));
      await log.flush();
      expect(log.stats()).toMatchObject({ queued: 4, written: 1, flushFailures: 2 });
      const warnings = logger.entries.filter((e) => e.level === "warn").map((e) => e.obj.attempt);
      expect(warnings).toEqual([1, 2]);
    } finally {
      await sql`alter table decision_log_away rename to decision_log`.execute(store.db);
    }
    log.record(deny(T0 + 5));
    await log.flush();
    expect(log.stats()).toMatchObject({ queued: 0, written: 6, flushFailures: 2 });
    expect((await rowsOf(replicaId)).map((r) => [r.seq, r.time.getTime() - T0])).toEqual([
      [1, 0],
      [2, 1],
      [3, 2],
      [4, 3],
      [5, 4],
      [6, 5],
    ]);
    expect(await verdictOf(replicaId)).toEqual({ replicaId, rows: 6 });
    await log.stop();
  });

  it("a batch that committed but whose answer was lost is not written twice", async () => {
    const replicaId = replica();
    const { db, loseNextAnswer } = instrumented(store.db);
    const { log } = writer({ replicaId, db });
    await log.start();
    log.record(deny(T0));
    log.record(deny(T0 + 1));
    loseNextAnswer();
    await log.flush();
    expect(log.stats()).toMatchObject({ queued: 2, flushFailures: 1 });
    log.record(deny(T0 + 2));
    await log.flush();
    expect(log.stats()).toMatchObject({ queued: 0, written: 3 });
    expect((await rowsOf(replicaId)).map((r) => r.seq)).toEqual([1, 2, 3]);
    expect(await verdictOf(replicaId)).toEqual({ replicaId, rows: 3 });
    await log.stop();
  });

  it("seq and the chain continue across a restart of the writer", async () => {
    const replicaId = await chainOf(3);
    const { log } = writer({ replicaId });
    await log.start();
    log.record(deny(T0 + 10_000));
    await log.stop();
    const rows = await rowsOf(replicaId);
    expect(rows.map((r) => r.seq)).toEqual([1, 2, 3, 4]);
    expect(rows[3]?.prev_hash).toBe(rows[2]?.hash);
    expect(await verdictOf(replicaId)).toEqual({ replicaId, rows: 4 });
  });

  it("a second writer with the same replica id does not overwrite: the later one re-chains after the table's tail", async () => {
    const replicaId = replica();
    const a = writer({ replicaId });
    const b = writer({ replicaId });
    await a.log.start();
    await b.log.start(); // both believe the chain is empty
    a.log.record(deny(T0));
    await a.log.flush();
    b.log.record(deny(T0 + 1));
    await b.log.flush(); // seq 1 is taken
    await b.log.flush(); // reconciles and re-chains
    expect(b.logger.entries.some((e) => e.level === "error" && /re-chaining/.test(e.msg))).toBe(true);
    expect((await rowsOf(replicaId)).map((r) => r.seq)).toEqual([1, 2]);
    expect(await verdictOf(replicaId)).toEqual({ replicaId, rows: 2 });
    await a.log.stop();
    await b.log.stop();
  });

  it("record() after stop() is counted as dropped", async () => {
    const { log } = writer({ replicaId: replica() });
    await log.start();
    await log.stop();
    log.record(deny(T0));
    expect(log.stats()).toMatchObject({ dropped: 1, queued: 0 });
  });

  describe("verify", () => {
    it("passes on an untouched log", async () => {
      const replicaId = await chainOf(5);
      expect(await verdictOf(replicaId)).toEqual({ replicaId, rows: 5 });
    });

    it("finds an UPDATE of one row's quantity at that row's seq", async () => {
      const replicaId = await chainOf(5);
      await store.db.updateTable("decision_log").set({ quantity: 999 }).where("replica_id", "=", replicaId).where("seq", "=", 3).execute();
      expect(await verdictOf(replicaId)).toMatchObject({ replicaId, firstBadSeq: 3, problem: expect.stringMatching(/hash/) });
    });

    it("finds a deleted row at its seq, the first row too", async () => {
      const middle = await chainOf(5);
      await store.db.deleteFrom("decision_log").where("replica_id", "=", middle).where("seq", "=", 4).execute();
      expect(await verdictOf(middle)).toMatchObject({ firstBadSeq: 4, problem: expect.stringMatching(/missing/) });

      const first = await chainOf(3);
      await store.db.deleteFrom("decision_log").where("replica_id", "=", first).where("seq", "=", 1).execute();
      expect(await verdictOf(first)).toMatchObject({ firstBadSeq: 1 });
    });

    it("finds two rows swapped at the lower seq", async () => {
      const replicaId = await chainOf(5);
      const where = (seq: number) => sql`replica_id = ${replicaId} and seq = ${seq}`;
      await sql`update decision_log set seq = -1 where ${where(2)}`.execute(store.db);
      await sql`update decision_log set seq = 2 where ${where(3)}`.execute(store.db);
      await sql`update decision_log set seq = 3 where ${where(-1)}`.execute(store.db);
      expect(await verdictOf(replicaId)).toMatchObject({ firstBadSeq: 2 });
    });

    it("finds a row slipped in with a correct hash of its own at the row after it", async () => {
      const replicaId = await chainOf(5);
      // Make room at seq 3 (from the top down, as the key is unique), then forge a row there
      // whose own hash and prev_hash are right: the original seq 3, now seq 4, no longer is.
      for (const seq of [5, 4, 3]) {
        await store.db.updateTable("decision_log").set({ seq: seq + 1 }).where("replica_id", "=", replicaId).where("seq", "=", seq).execute();
      }
      const previous = (await rowsOf(replicaId))[1];
      if (previous === undefined) throw new Error("no row 2");
      const forged = {
        replicaId,
        seq: 3,
        decisionId: "forged",
        timeMs: T0 + 1500,
        licenseId: "lic-1",
        feature: "export",
        decision: "allow" as const,
        reason: "OK",
        quantity: 1,
        count: 1,
      };
      await store.db
        .insertInto("decision_log")
        .values({
          replica_id: replicaId,
          seq: 3,
          decision_id: "forged",
          time: new Date(forged.timeMs),
          license_id: "lic-1",
          feature: "export",
          decision: "allow",
          reason: "OK",
          quantity: 1,
          count: 1,
          prev_hash: previous.hash,
          hash: chainHash(previous.hash, forged),
        })
        .execute();
      expect(await verdictOf(replicaId)).toMatchObject({ firstBadSeq: 4 });
    });

    it("checks a time range, anchored on the row before it", async () => {
      const replicaId = await chainOf(6); // times T0, T0+1s, ... T0+5s
      const range = { replicaId, from: new Date(T0 + 2000), to: new Date(T0 + 4000) };
      expect((await verifyDecisionLog(store.db, range)).replicas).toEqual([{ replicaId, rows: 3 }]); // seq 2 (anchor), 3, 4
      await store.db.updateTable("decision_log").set({ quantity: 0 }).where("replica_id", "=", replicaId).where("seq", "=", 6).execute();
      expect((await verifyDecisionLog(store.db, range)).replicas[0]?.firstBadSeq).toBeUndefined(); // outside the range
      await store.db.deleteFrom("decision_log").where("replica_id", "=", replicaId).where("seq", "=", 2).execute();
      expect((await verifyDecisionLog(store.db, range)).replicas[0]).toMatchObject({ firstBadSeq: 2 });
    });

    it("reports every replica when none is named", async () => {
      const good = await chainOf(2);
      const bad = await chainOf(2);
      await store.db.updateTable("decision_log").set({ reason: "OK" }).where("replica_id", "=", bad).where("seq", "=", 2).execute();
      const { replicas } = await verifyDecisionLog(store.db);
      expect(replicas.find((r) => r.replicaId === good)).toEqual({ replicaId: good, rows: 2 });
      expect(replicas.find((r) => r.replicaId === bad)).toMatchObject({ firstBadSeq: 2 });
    });
  });

  describe("licensing decisions verify", () => {
    function io() {
      const out: string[] = [];
      const err: string[] = [];
      return {
        out,
        err,
        streams: { stdout: { write: (t: string) => out.push(t) }, stderr: { write: (t: string) => err.push(t) } },
      };
    }

    it("exits 0 on an intact chain and 1, naming the replica and first bad seq, on a tampered one", async () => {
      const replicaId = await chainOf(4);
      const ok = io();
      expect(await decisionsCommand(["verify", "--replica", replicaId], store, ok.streams)).toBe(0);
      expect(ok.out.join("")).toMatch(new RegExp(`${replicaId}\\s+4 rows\\s+ok`));

      await store.db.updateTable("decision_log").set({ quantity: 7 }).where("replica_id", "=", replicaId).where("seq", "=", 2).execute();
      const broken = io();
      expect(await decisionsCommand(["verify", "--replica", replicaId], store, broken.streams)).toBe(1);
      expect(broken.out.join("")).toMatch(new RegExp(`${replicaId}.*BROKEN at seq 2`));

      const asJson = io();
      expect(await decisionsCommand(["verify", "--replica", replicaId, "--output", "json"], store, asJson.streams)).toBe(1);
      expect(JSON.parse(asJson.out.join(""))).toMatchObject({ replicas: [{ replicaId, firstBadSeq: 2 }] });
    });

    it("exits 2 on bad usage", async () => {
      const bad = io();
      expect(await decisionsCommand(["verify", "--output", "xml"], store, bad.streams)).toBe(2);
      expect(await decisionsCommand(["frobnicate"], store, bad.streams)).toBe(2);
      expect(await decisionsCommand(["verify", "--from", "yesterday"], store, bad.streams)).toBe(2);
      expect(bad.err.join("")).toMatch(/--output/);
    });
  });
});
