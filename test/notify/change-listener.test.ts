import { randomBytes } from "node:crypto";
import { sql } from "kysely";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createChangeListener, LISTEN_APPLICATION_NAME, type ChangeListener } from "../../src/store/notify.js";
import { createTestStore, testBackends, type TestStore } from "../support/database.js";

/** How long a notification may take to arrive before a test fails: the service promises well under 1 s. */
const DELIVERY_MS = 1000;

interface LogEntry {
  level: "info" | "warn" | "error";
  obj: object;
  msg: string;
}

function recordingLogger() {
  const entries: LogEntry[] = [];
  return {
    entries,
    info: (obj: object, msg: string) => void entries.push({ level: "info", obj, msg }),
    warn: (obj: object, msg: string) => void entries.push({ level: "warn", obj, msg }),
    error: (obj: object, msg: string) => void entries.push({ level: "error", obj, msg }),
  };
}

/** Collects payloads and lets a test wait for one, event-driven, failing after `timeoutMs`. */
function payloadRecorder() {
  const payloads: string[] = [];
  const waiters: Array<{ predicate: (payload: string) => boolean; resolve: () => void }> = [];
  function onChange(payload: string): void {
    payloads.push(payload);
    for (const waiter of [...waiters]) {
      if (waiter.predicate(payload)) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve();
      }
    }
  }
  function waitFor(payload: string, timeoutMs = DELIVERY_MS): Promise<void> {
    if (payloads.includes(payload)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no "${payload}" within ${timeoutMs} ms (got ${JSON.stringify(payloads)})`)), timeoutMs);
      waiters.push({ predicate: (p) => p === payload, resolve: () => (clearTimeout(timer), resolve()) });
    });
  }
  return { payloads, onChange, waitFor };
}

/** A promise resolved by the n-th call of the returned function. */
function calls() {
  let count = 0;
  const waiters: Array<{ n: number; resolve: () => void }> = [];
  return {
    get count() {
      return count;
    },
    fn: () => {
      count += 1;
      for (const waiter of waiters.filter((w) => w.n <= count)) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve();
      }
    },
    reached(n: number, timeoutMs = 5000): Promise<void> {
      if (count >= n) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`not called ${n} times within ${timeoutMs} ms`)), timeoutMs);
        waiters.push({ n, resolve: () => (clearTimeout(timer), resolve()) });
      });
    },
  };
}

describe.each(testBackends())("change listener on %s", (backend) => {
  let store: TestStore;
  let listener: ChangeListener;
  let recorder: ReturnType<typeof payloadRecorder>;
  let reconnects: ReturnType<typeof calls>;
  let logger: ReturnType<typeof recordingLogger>;
  let marker = 0;

  beforeAll(async () => {
    store = await createTestStore(backend);
    recorder = payloadRecorder();
    reconnects = calls();
    logger = recordingLogger();
    listener = createChangeListener({
      store,
      logger,
      onChange: recorder.onChange,
      onReconnect: reconnects.fn,
      reconnectDelayMs: 20,
      maxReconnectDelayMs: 200,
    });
    await listener.start();
    await store.db.insertInto("accounts").values({ id: "acme", name: "Acme" }).execute();
    await store.db.insertInto("plans").values([{ name: "pro", description: null }]).execute();
  });

  afterAll(async () => {
    await listener.stop();
    await store.drop();
  });

  /**
   * The payloads `work` caused, exactly: notifications reach a listener in commit order, so
   * everything sent before a marker notification has arrived once the marker has.
   */
  async function changesOf(work: () => Promise<unknown>): Promise<string[]> {
    const start = recorder.payloads.length;
    await work();
    const name = `marker:${++marker}`;
    await sql`select pg_notify('licensing_changes', ${name})`.execute(store.db);
    await recorder.waitFor(name);
    return recorder.payloads.slice(start, recorder.payloads.indexOf(name));
  }

  it("is connected once start() resolves", () => {
    expect(listener.connected()).toBe(true);
  });

  it("a licence change made through Kysely reaches onChange in well under a second", async () => {
    const started = performance.now();
    await store.db.insertInto("licenses").values({ id: "fast", account_id: "acme", plan: "pro", status: "active", environments: [] }).execute();
    await recorder.waitFor("license:fast");
    expect(performance.now() - started).toBeLessThan(DELIVERY_MS);
  });

  it("licenses: insert, update and delete each notify license:<id>", async () => {
    const { db } = store;
    expect(
      await changesOf(() => db.insertInto("licenses").values({ id: "l1", account_id: "acme", plan: "pro", status: "active", environments: [] }).execute()),
    ).toEqual(["license:l1"]);
    expect(await changesOf(() => db.updateTable("licenses").set({ status: "suspended" }).where("id", "=", "l1").execute())).toEqual(["license:l1"]);
    expect(await changesOf(() => db.deleteFrom("licenses").where("id", "=", "l1").execute())).toEqual(["license:l1"]);
  });

  it("entitlements: a plan's notify plan:<name>, a licence's notify license:<id>", async () => {
    const { db } = store;
    await changesOf(() => db.insertInto("licenses").values({ id: "l2", account_id: "acme", plan: "pro", status: "active", environments: [] }).execute());
    const entitlement = {
      feature: "export",
      kind: "boolean",
      limit: null,
      period: null,
      burst: null,
      overage: "block",
      failure_mode: "fail_closed",
      roles: [],
      unit_price: null,
      scaling: null,
    } as const;
    const planRow = { ...entitlement, plan: "pro", license_id: null, roles: [] };
    const licenseRow = { ...entitlement, plan: null, license_id: "l2", roles: [] };
    expect(await changesOf(() => db.insertInto("entitlements").values(planRow).execute())).toEqual(["plan:pro"]);
    expect(await changesOf(() => db.insertInto("entitlements").values(licenseRow).execute())).toEqual(["license:l2"]);
    expect(
      await changesOf(() => db.updateTable("entitlements").set({ roles: ["admin"] }).where("plan", "=", "pro").execute()),
    ).toEqual(["plan:pro"]);
    expect(
      await changesOf(() => db.updateTable("entitlements").set({ roles: ["admin"] }).where("license_id", "=", "l2").execute()),
    ).toEqual(["license:l2"]);
    expect(await changesOf(() => db.deleteFrom("entitlements").where("plan", "=", "pro").execute())).toEqual(["plan:pro"]);
    expect(await changesOf(() => db.deleteFrom("entitlements").where("license_id", "=", "l2").execute())).toEqual(["license:l2"]);
  });

  it("api_keys: insert, update and delete notify key:<hash> and license:<id>", async () => {
    const { db } = store;
    await changesOf(() => db.insertInto("licenses").values({ id: "l3", account_id: "acme", plan: "pro", status: "active", environments: [] }).execute());
    const key = { id: "k1", license_id: "l3", prefix: "lk_test_k1", secret_hash: "aa11", scopes: [] };
    const both = ["key:aa11", "license:l3"];
    expect((await changesOf(() => db.insertInto("api_keys").values(key).execute())).sort()).toEqual(both);
    expect(
      (await changesOf(() => db.updateTable("api_keys").set({ revoked_at: new Date() }).where("id", "=", "k1").execute())).sort(),
    ).toEqual(both);
    expect((await changesOf(() => db.deleteFrom("api_keys").where("id", "=", "k1").execute())).sort()).toEqual(both);
  });

  it("service_tokens notify service_token:<hash>; issuers notify issuers; signing_keys notify signing_keys", async () => {
    const { db } = store;
    const token = { id: "t1", prefix: "st_t1", secret_hash: "bb22", rights: ["license_id"] };
    expect(await changesOf(() => db.insertInto("service_tokens").values(token).execute())).toEqual(["service_token:bb22"]);
    expect(
      await changesOf(() => db.updateTable("service_tokens").set({ revoked_at: new Date() }).where("id", "=", "t1").execute()),
    ).toEqual(["service_token:bb22"]);
    expect(await changesOf(() => db.deleteFrom("service_tokens").where("id", "=", "t1").execute())).toEqual(["service_token:bb22"]);

    const issuer = {
      id: "i1",
      issuer: "https://idp.example",
      jwks_url: "https://idp.example/jwks",
      audiences: ["licensing"],
      algorithms: ["RS256"],
      license_claim: "lic",
      account_claim: null,
    };
    expect(await changesOf(() => db.insertInto("issuers").values(issuer).execute())).toEqual(["issuers"]);
    expect(await changesOf(() => db.updateTable("issuers").set({ leeway_seconds: 30 }).where("id", "=", "i1").execute())).toEqual(["issuers"]);
    expect(await changesOf(() => db.deleteFrom("issuers").where("id", "=", "i1").execute())).toEqual(["issuers"]);

    const signingKey = { kid: "s1", public_jwk: JSON.stringify({ kty: "OKP" }), private_key_encrypted: "x" };
    expect(await changesOf(() => db.insertInto("signing_keys").values(signingKey).execute())).toEqual(["signing_keys"]);
    expect(
      await changesOf(() => db.updateTable("signing_keys").set({ retired_at: new Date() }).where("kid", "=", "s1").execute()),
    ).toEqual(["signing_keys"]);
    expect(await changesOf(() => db.deleteFrom("signing_keys").where("kid", "=", "s1").execute())).toEqual(["signing_keys"]);
  });

  it("a change inside a rolled-back transaction notifies nothing", async () => {
    const payloads = await changesOf(() =>
      store.db
        .transaction()
        .execute(async (trx) => {
          await trx.insertInto("licenses").values({ id: "ghost", account_id: "acme", plan: "pro", status: "active", environments: [] }).execute();
          throw new Error("roll back");
        })
        .catch(() => undefined),
    );
    expect(payloads).toEqual([]);
  });

  it("an onChange that throws is logged and the listener keeps delivering", async () => {
    const seen = payloadRecorder();
    const throwingLogger = recordingLogger();
    const throwing = createChangeListener({
      store,
      logger: throwingLogger,
      onChange: (payload) => {
        seen.onChange(payload);
        throw new Error("cache exploded");
      },
      onReconnect: () => undefined,
    });
    await throwing.start();
    try {
      await sql`select pg_notify('licensing_changes', 'one')`.execute(store.db);
      await sql`select pg_notify('licensing_changes', 'two')`.execute(store.db);
      await seen.waitFor("two");
      expect(seen.payloads.filter((p) => p === "one" || p === "two")).toEqual(["one", "two"]);
      const errors = throwingLogger.entries.filter((e) => e.level === "error" && /onChange threw/.test(e.msg));
      expect(errors.length).toBeGreaterThanOrEqual(2);
    } finally {
      await throwing.stop();
    }
  });

  it("after stop() no callback runs and connected() is false", async () => {
    const seen = payloadRecorder();
    const other = createChangeListener({ store, logger: recordingLogger(), onChange: seen.onChange, onReconnect: () => undefined });
    await other.start();
    await sql`select pg_notify('licensing_changes', 'before-stop')`.execute(store.db);
    await seen.waitFor("before-stop");
    await other.stop();
    expect(other.connected()).toBe(false);
    await changesOf(() => sql`select pg_notify('licensing_changes', 'after-stop')`.execute(store.db));
    expect(seen.payloads).not.toContain("after-stop");
  });

  it("rejects a channel name that is not a plain identifier", () => {
    expect(() =>
      createChangeListener({ store, channel: "x; drop table licenses", logger: recordingLogger(), onChange: () => undefined, onReconnect: () => undefined }),
    ).toThrow(/channel/);
  });

  if (backend === "postgres") {
    it("after its backend is terminated, it reconnects, calls onReconnect, and later changes still arrive", async () => {
      const before = reconnects.count;
      const terminated = await sql<{ ok: boolean }>`
        select pg_terminate_backend(pid) as ok from pg_stat_activity
        where application_name = ${LISTEN_APPLICATION_NAME} and datname = current_database()`.execute(store.db);
      expect(terminated.rows.length).toBeGreaterThanOrEqual(1);
      await reconnects.reached(before + 1);
      expect(listener.connected()).toBe(true);
      expect(logger.entries.some((e) => e.level === "warn" && /connection lost/.test(e.msg))).toBe(true);
      await store.db.insertInto("licenses").values({ id: "after-reconnect", account_id: "acme", plan: "pro", status: "active", environments: [] }).execute();
      await recorder.waitFor("license:after-reconnect");
    });

    it("when PostgreSQL is unreachable, start() resolves, retries with attempt counts at warn, and never throws", async () => {
      const unreachable = { ...store, databaseUrl: "postgres://postgres@127.0.0.1:1/nowhere" };
      const log = recordingLogger();
      const other = createChangeListener({
        store: unreachable,
        logger: log,
        onChange: () => undefined,
        onReconnect: () => undefined,
        reconnectDelayMs: 10,
        maxReconnectDelayMs: 40,
      });
      const warned = new Promise<void>((resolve) => {
        const warn = log.warn;
        log.warn = (obj, msg) => {
          warn(obj, msg);
          if ((obj as { attempt?: number }).attempt === 3) resolve();
        };
      });
      await other.start();
      expect(other.connected()).toBe(false);
      await warned;
      await other.stop();
      const attempts = log.entries.filter((e) => e.level === "warn").map((e) => (e.obj as { attempt?: number }).attempt);
      expect(attempts.slice(0, 3)).toEqual([1, 2, 3]);
    });

    it("a first connection that start() could not make is followed by onReconnect once it succeeds", async () => {
      const adminUrl = process.env.DATABASE_URL ?? "";
      const name = `lic_test_late_${randomBytes(4).toString("hex")}`;
      const url = new URL(adminUrl);
      url.pathname = `/${name}`;
      const late = calls();
      const other = createChangeListener({
        store: { ...store, databaseUrl: url.toString() },
        logger: recordingLogger(),
        onChange: () => undefined,
        onReconnect: late.fn,
        reconnectDelayMs: 20,
        maxReconnectDelayMs: 50,
      });
      const admin = new pg.Client({ connectionString: adminUrl });
      await admin.connect();
      try {
        await other.start(); // the database does not exist yet
        expect(other.connected()).toBe(false);
        await admin.query(`create database ${name}`);
        await late.reached(1);
        expect(other.connected()).toBe(true);
      } finally {
        await other.stop();
        await admin.query(`drop database if exists ${name} with (force)`);
        await admin.end();
      }
    });
  }
});

describe("change listener misuse", () => {
  let store: TestStore;
  beforeAll(async () => {
    store = await createTestStore("pglite");
  });
  afterAll(() => store.drop());

  it("start() twice is refused", async () => {
    const listener = createChangeListener({ store, logger: recordingLogger(), onChange: () => undefined, onReconnect: () => undefined });
    await listener.start();
    await expect(listener.start()).rejects.toThrow(/twice/);
    await listener.stop();
  });
});
