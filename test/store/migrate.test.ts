import { readdir } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { sql, type Kysely, type Migration } from "kysely";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { migrateDown, migrateToLatest, pendingMigrations, registeredMigrations } from "../../src/store/migrate.js";
import type { Database } from "../../src/store/schema.js";
import { createTestStore, testBackends, type TestStore } from "../support/database.js";

const MIGRATIONS_DIR = fileURLToPath(new URL("../../migrations/", import.meta.url));

async function tablesIn(db: Kysely<Database>): Promise<string[]> {
  const { rows } = await sql<{ name: string }>`
    select table_name as name from information_schema.tables
    where table_schema = current_schema() order by table_name`.execute(db);
  return rows.map((r) => r.name);
}

describe("migration registry", () => {
  it("every file in migrations/ is registered", async () => {
    const files = (await readdir(MIGRATIONS_DIR)).filter((f) => f.endsWith(".ts") && !f.endsWith(".d.ts"));
    const onDisk = files.map((f) => f.replace(/\.ts$/, "")).sort();
    expect(onDisk.length).toBeGreaterThan(0);
    expect(registeredMigrations()).toEqual(onDisk);
  });
});

describe.each(testBackends())("migrations on %s", (backend) => {
  let store: TestStore;
  beforeAll(async () => {
    store = await createTestStore(backend, { migrate: false });
  });
  afterAll(() => store.drop());

  it(`migrations go up, down and up again on ${backend}`, async () => {
    const all = registeredMigrations();
    const last = all.at(-1);
    expect(await pendingMigrations(store.db)).toEqual(all);

    expect(await migrateToLatest(store.db)).toEqual({ applied: all });
    expect(await pendingMigrations(store.db)).toEqual([]);
    expect(await tablesIn(store.db)).toEqual(
      expect.arrayContaining(["accounts", "api_keys", "entitlements", "kysely_migration", "kysely_migration_lock", "licenses", "plans"]),
    );
    expect(await migrateToLatest(store.db)).toEqual({ applied: [] });

    expect(await migrateDown(store.db)).toBe(last);
    expect(await pendingMigrations(store.db)).toEqual([last]);
    if (all.length === 1) {
      expect(await tablesIn(store.db)).toEqual(["kysely_migration", "kysely_migration_lock"]);
      expect(await migrateDown(store.db)).toBeUndefined();
    }

    expect(await migrateToLatest(store.db)).toEqual({ applied: [last] });
    expect(await pendingMigrations(store.db)).toEqual([]);
  });
});

describe.each(testBackends())("migration runs on %s", (backend) => {
  // A fresh, empty database per test: these runs use their own migration lists.
  let store: TestStore | undefined;
  async function emptyStore(): Promise<TestStore> {
    store = await createTestStore(backend, { migrate: false });
    return store;
  }
  afterEach(async () => {
    await store?.drop();
    store = undefined;
  });

  it("two concurrent runs apply each migration exactly once", async () => {
    const { db } = await emptyStore();
    const migrations: Record<string, Migration> = {
      "0001_counter": {
        up: async (trx) => {
          await sql`create table race_counter (n int not null)`.execute(trx);
          await sql`insert into race_counter values (1)`.execute(trx);
        },
      },
    };
    const [a, b] = await Promise.all([migrateToLatest(db, { migrations }), migrateToLatest(db, { migrations })]);
    expect([...a.applied, ...b.applied]).toEqual(["0001_counter"]);
    const { rows } = await sql<{ n: number }>`select count(*) as n from race_counter`.execute(db);
    expect(rows).toEqual([{ n: 1 }]);
  });

  it("a failing migration is reported by name with its cause, and its whole run rolls back", async () => {
    const { db } = await emptyStore();
    const migrations: Record<string, Migration> = {
      "0001_good": { up: async (trx) => void (await sql`create table made_by_good (n int)`.execute(trx)) },
      "0002_broken": { up: async (trx) => void (await sql`select * from no_such_table`.execute(trx)) },
    };
    const error: unknown = await migrateToLatest(db, { migrations }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).message).toMatch(/^migration failed in 0002_broken: .*no_such_table/);
    expect((error as Error).cause).toMatchObject({ code: "42P01" });
    expect(await tablesIn(db)).not.toContain("made_by_good");
    expect(await pendingMigrations(db, { migrations })).toEqual(["0001_good", "0002_broken"]);
  });

  it("a previously applied migration missing from the registry stops the run before anything applies", async () => {
    const { db } = await emptyStore();
    await migrateToLatest(db, { migrations: { "0001_gone": { up: async () => undefined } } });
    const later = { "0002_next": { up: async (trx: Kysely<unknown>) => void (await sql`create table next_one (n int)`.execute(trx)) } };
    await expect(migrateToLatest(db, { migrations: later })).rejects.toThrow(
      /^migration failed before any migration ran: .*0001_gone is missing/,
    );
    expect(await tablesIn(db)).not.toContain("next_one");
  });
});
