import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { sql } from "kysely";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createStore, parseInt8, type StoreLogger } from "../../src/store/database.js";
import { createTestStore, testBackends, type TestStore } from "../support/database.js";

describe.each(testBackends())("store on %s", (backend) => {
  let store: TestStore;

  beforeAll(async () => {
    store = await createTestStore(backend);
  });
  afterAll(() => store.drop());

  it("answers a ping and describes itself by backend", async () => {
    await store.ping();
    expect(store.backend).toBe(backend);
    expect(store.describe()).toMatch(backend === "pglite" ? /^pglite \(in memory\)$/ : /^postgres .+:\d+\/lic_test_[0-9a-f]{12}$/);
  });

  it("int8 reads as an exact JS number, count(*) and int8[] included", async () => {
    const { rows } = await sql<{ small: unknown; edge: unknown; negative: unknown; count: unknown; list: unknown }>`
      select 42::int8 as small, 9007199254740991::int8 as edge, (-9007199254740991)::int8 as negative,
             (select count(*) from generate_series(1, 3)) as count, array[1, 2, 9007199254740991]::int8[] as list`.execute(
      store.db,
    );
    expect(rows).toEqual([
      { small: 42, edge: 9007199254740991, negative: -9007199254740991, count: 3, list: [1, 2, 9007199254740991] },
    ]);
  });

  it("int8 beyond 2^53 fails loudly instead of rounding", async () => {
    await expect(sql`select 9007199254740993::int8 as n`.execute(store.db)).rejects.toThrow(RangeError);
    await expect(sql`select (-9007199254740993)::int8 as n`.execute(store.db)).rejects.toThrow(/MAX_SAFE_INTEGER/);
    await expect(sql`select array[9007199254740993]::int8[] as n`.execute(store.db)).rejects.toThrow(/MAX_SAFE_INTEGER/);
    // The failure spoils neither the connection nor the driver.
    const { rows } = await sql<{ n: string }>`select 9007199254740993::int8::text as n`.execute(store.db);
    expect(rows).toEqual([{ n: "9007199254740993" }]);
  });

  it("date and interval read as their exact text, whatever the process's time zone", async () => {
    const { rows } = await sql<{ day: unknown; span: unknown }>`
      select '2026-01-02'::date as day, interval '1 day 02:03:04' as span`.execute(store.db);
    expect(rows).toEqual([{ day: "2026-01-02", span: "1 day 02:03:04" }]);
  });

  it("a row reads back as Date, string[], parsed jsonb and number", async () => {
    const validUntil = new Date("2027-01-31T23:59:59.123Z");
    await store.db.insertInto("accounts").values({ id: "acme", name: "Acme" }).execute();
    await store.db.insertInto("plans").values({ name: "pro", description: null }).execute();
    await store.db
      .insertInto("licenses")
      .values({ id: "lic-1", account_id: "acme", plan: "pro", status: "active", valid_from: null, valid_until: validUntil, environments: ["prod", "staging"] })
      .execute();
    await store.db
      .insertInto("entitlements")
      .values({
        plan: null,
        license_id: "lic-1",
        feature: "nodes",
        kind: "capacity",
        limit: 4_000_000_000_000,
        period: null,
        burst: null,
        overage: "block",
        failure_mode: "fail_closed",
        roles: [],
        unit_price: 125,
        scaling: JSON.stringify({ min: 1, max: 8, steps: [1, 2] }),
      })
      .execute();

    const license = await store.db.selectFrom("licenses").selectAll().where("id", "=", "lic-1").executeTakeFirstOrThrow();
    expect(license.valid_until).toBeInstanceOf(Date);
    expect(license.valid_until?.toISOString()).toBe("2027-01-31T23:59:59.123Z");
    expect(license.created_at).toBeInstanceOf(Date);
    expect(license.valid_from).toBeNull();
    expect(license.environments).toEqual(["prod", "staging"]);
    expect(license.version).toBe(1);

    const entitlement = await store.db.selectFrom("entitlements").selectAll().executeTakeFirstOrThrow();
    expect(entitlement.id).toEqual(expect.any(Number));
    expect(entitlement.limit).toBe(4_000_000_000_000);
    expect(entitlement.unit_price).toBe(125);
    expect(entitlement.roles).toEqual([]);
    expect(entitlement.scaling).toEqual({ min: 1, max: 8, steps: [1, 2] });
  });
});

describe("createStore", () => {
  it("an unparseable DATABASE_URL fails naming DATABASE_URL, without echoing the password", async () => {
    for (const databaseUrl of ["postgres://app:s3cr3t@db:notaport/licensing", "app:s3cr3t@db/licensing", "mysql://app:s3cr3t@db/x"]) {
      const attempt = createStore({ databaseUrl, dataDir: tmpdir() });
      await expect(attempt).rejects.toThrow(/DATABASE_URL/);
      await expect(attempt).rejects.not.toThrow(/s3cr3t/);
      const error: unknown = await attempt.catch((e: unknown) => e);
      expect(JSON.stringify(error, Object.getOwnPropertyNames(error))).not.toContain("s3cr3t");
    }
  });

  it("describe names host, port and database but never the password", async () => {
    // The pool connects lazily, so no server is needed to build the store.
    const store = await createStore({ databaseUrl: "postgres://app:hunter2@db.internal:6543/licensing", dataDir: tmpdir() });
    try {
      expect(store.backend).toBe("postgres");
      expect(store.describe()).toBe("postgres db.internal:6543/licensing");
    } finally {
      await store.close();
    }
  });

  it("PGlite persists its data under <dataDir>/pgdata across restarts", async () => {
    const root = await mkdtemp(path.join(tmpdir(), "licensing-store-"));
    const dataDir = path.join(root, "nested", "data");
    try {
      const first = await createStore({ dataDir });
      expect(first.backend).toBe("pglite");
      expect(first.describe()).toBe(`pglite ${path.join(dataDir, "pgdata")}`);
      await sql`create table kept (n int8)`.execute(first.db);
      await sql`insert into kept values (7)`.execute(first.db);
      await first.close();
      expect((await stat(path.join(dataDir, "pgdata"))).isDirectory()).toBe(true);

      const second = await createStore({ dataDir });
      const { rows } = await sql<{ n: number }>`select n from kept`.execute(second.db);
      expect(rows).toEqual([{ n: 7 }]);
      await second.close();
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});

describe.runIf(process.env.DATABASE_URL)("store on postgres, when the server drops a pooled connection", () => {
  let store: TestStore;
  beforeAll(async () => {
    store = await createTestStore("postgres", { migrate: false });
  });
  afterAll(() => store.drop());

  it("an idle connection killed by the server is reported, not fatal, and the next query reconnects", async () => {
    const warned: Array<{ obj: object; msg: string }> = [];
    let onWarn: () => void = () => undefined;
    const warnedOnce = new Promise<void>((resolve) => (onWarn = resolve));
    const logger: StoreLogger = {
      warn(obj, msg) {
        warned.push({ obj, msg });
        onWarn();
      },
    };
    const databaseUrl = store.databaseUrl ?? "";
    const watched = await createStore({ databaseUrl, dataDir: tmpdir(), logger });
    try {
      await watched.ping(); // leaves one idle client in the pool
      const admin = new pg.Client({ connectionString: databaseUrl });
      await admin.connect();
      await admin.query(
        "select pg_terminate_backend(pid) from pg_stat_activity where datname = current_database() and application_name = 'licensing' and pid <> pg_backend_pid()",
      );
      await admin.end();
      await warnedOnce;
      expect(warned[0]?.msg).toBe("idle PostgreSQL connection lost");
      expect(warned[0]?.obj).toMatchObject({ err: { code: "57P01" } });
      await watched.ping();
    } finally {
      await watched.close();
    }
  });
});

describe("parseInt8", () => {
  it("reads safe integers exactly and refuses the rest", () => {
    expect(parseInt8("0")).toBe(0);
    expect(parseInt8("-9007199254740991")).toBe(-9007199254740991);
    expect(() => parseInt8("9007199254740992")).toThrow(RangeError);
  });
});
