/**
 * The database harness for integration tests: every test file gets a database of its own.
 *
 * PGlite always runs (in memory). PostgreSQL runs too when DATABASE_URL is set: each store is a
 * fresh database `lic_test_<random hex>` on that server, dropped by `drop()`. If DATABASE_URL
 * is set but the server does not answer, the test fails; it is never skipped, so a CI job that
 * means to test PostgreSQL cannot pass without it.
 *
 * Typical use:
 *
 * ```ts
 * describe.each(testBackends())("something on %s", (backend) => {
 *   let store: TestStore;
 *   beforeAll(async () => {
 *     store = await createTestStore(backend);
 *   });
 *   afterAll(() => store.drop());
 *   // ... store.db is migrated to the latest schema
 * });
 * ```
 */
import { randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import pg from "pg";
import { createStore, type Store } from "../../src/store/database.js";
import { migrateToLatest } from "../../src/store/migrate.js";

export type TestBackend = "pglite" | "postgres";

export type TestStore = Store & {
  /** postgres only: the URL of this test's own database. */
  databaseUrl?: string;
  /** Closes the store and, on postgres, drops its database. Safe to call twice. */
  drop(): Promise<void>;
};

export interface TestStoreOptions {
  /** Apply every registered migration before returning. Default true. */
  migrate?: boolean;
}

/** 'pglite' always; 'postgres' as well when DATABASE_URL is set. */
export function testBackends(): TestBackend[] {
  return process.env.DATABASE_URL ? ["pglite", "postgres"] : ["pglite"];
}

export async function createTestStore(
  backend: TestBackend,
  { migrate = true }: TestStoreOptions = {},
): Promise<TestStore> {
  const store = backend === "pglite" ? await createPGliteTestStore() : await createPostgresTestStore();
  if (!migrate) return store;
  try {
    await migrateToLatest(store.db);
  } catch (error) {
    await store.drop();
    throw error;
  }
  return store;
}

async function createPGliteTestStore(): Promise<TestStore> {
  const store = await createStore({ dataDir: tmpdir(), memory: true });
  return { ...store, drop: once(() => store.close()) };
}

async function createPostgresTestStore(): Promise<TestStore> {
  const adminUrl = requireDatabaseUrl();
  const name = `lic_test_${randomBytes(6).toString("hex")}`;
  await withAdminClient(adminUrl, (admin) => admin.query(`create database ${name}`));
  const databaseUrl = withDatabase(adminUrl, name);
  const store = await createStore({ databaseUrl, dataDir: tmpdir(), poolMax: 4 });
  const drop = once(async () => {
    await store.close();
    await withAdminClient(adminUrl, (admin) => admin.query(`drop database if exists ${name} with (force)`));
  });
  return { ...store, databaseUrl, drop };
}

function requireDatabaseUrl(): string {
  const url = process.env.DATABASE_URL;
  if (!url) throw new Error("the postgres test backend needs DATABASE_URL");
  return url;
}

/** Runs `work` on a short-lived connection to DATABASE_URL; fails loudly when nobody answers. */
async function withAdminClient<T>(adminUrl: string, work: (admin: pg.Client) => Promise<T>): Promise<T> {
  const admin = new pg.Client({
    connectionString: adminUrl,
    connectionTimeoutMillis: 5000,
    application_name: "licensing-tests",
  });
  try {
    await admin.connect();
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new Error(
      `DATABASE_URL is set but PostgreSQL did not answer (${reason}); start it, or unset DATABASE_URL to test on PGlite only`,
      { cause: error },
    );
  }
  try {
    return await work(admin);
  } finally {
    await admin.end();
  }
}

function withDatabase(databaseUrl: string, database: string): string {
  const url = new URL(databaseUrl);
  url.pathname = `/${database}`;
  return url.toString();
}

function once(fn: () => Promise<void>): () => Promise<void> {
  let done: Promise<void> | undefined;
  return () => (done ??= fn());
}
