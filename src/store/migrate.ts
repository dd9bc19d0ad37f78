/**
 * Schema migrations, run by Kysely's Migrator on either backend.
 *
 * Migrations are imported statically, not discovered on disk, so the built service carries
 * them and needs no file access at run time. Kysely's default lock (`kysely_migration_lock`
 * plus a PostgreSQL advisory lock) keeps concurrent replicas from applying one twice; on
 * PostgreSQL every pending migration of a run applies in one transaction, all or nothing.
 */
import { Migrator, type Kysely, type Migration, type MigrationResultSet } from "kysely";
import * as m20261121000000 from "../../migrations/20261121000000_foundation.js";
import * as m20261121010000 from "../../migrations/20261121010000_check_engine.js";
import * as m20261121030000 from "../../migrations/20261121030000_capacity.js";
import * as m20261121020000 from "../../migrations/20261121020000_usage.js";
import * as m20261121015000 from "../../migrations/20261121015000_routes.js";
import * as m20261121040000 from "../../migrations/20261121040000_admin_tokens.js";

/**
 * Every migration, by its file name without extension. A new file in migrations/ must be
 * added here too; test/store/migrate.test.ts fails until it is.
 */
const MIGRATIONS: Readonly<Record<string, Migration>> = {
  "20261121000000_foundation": m20261121000000,
  "20261121010000_check_engine": m20261121010000,
  "20261121030000_capacity": m20261121030000,
  "20261121020000_usage": m20261121020000,
  "20261121015000_routes": m20261121015000,
  "20261121040000_admin_tokens": m20261121040000,
};

export interface MigrateOptions {
  /** The migrations to run instead of the registered ones (tests). */
  migrations?: Readonly<Record<string, Migration>>;
}

export interface MigrationReport {
  /** Migrations this run applied, in order; empty when the schema was already current. */
  applied: string[];
}

/** The names of the registered migrations, in the order they apply. */
export function registeredMigrations(): string[] {
  return Object.keys(MIGRATIONS).sort();
}

/**
 * Applies every pending migration. Throws an Error naming the failing migration, with the
 * database error as `cause`; on PostgreSQL and PGlite the whole run then rolls back.
 */
export async function migrateToLatest<DB>(db: Kysely<DB>, options: MigrateOptions = {}): Promise<MigrationReport> {
  const resultSet = await createMigrator(db, options).migrateToLatest();
  return { applied: successfulNames(checked(resultSet)) };
}

/** Reverts the last applied migration; returns its name, or undefined when none was applied. */
export async function migrateDown<DB>(db: Kysely<DB>, options: MigrateOptions = {}): Promise<string | undefined> {
  const resultSet = await createMigrator(db, options).migrateDown();
  return successfulNames(checked(resultSet))[0];
}

/** The names of migrations not yet applied, in the order they would apply. */
export async function pendingMigrations<DB>(db: Kysely<DB>, options: MigrateOptions = {}): Promise<string[]> {
  const migrations = await createMigrator(db, options).getMigrations();
  return migrations.filter((m) => m.executedAt === undefined).map((m) => m.name);
}

function createMigrator<DB>(db: Kysely<DB>, options: MigrateOptions): Migrator {
  const migrations = options.migrations ?? MIGRATIONS;
  return new Migrator({ db, provider: { getMigrations: async () => ({ ...migrations }) } });
}

/** Turns Kysely's `{ error }` result into a thrown Error that says which migration failed. */
function checked(resultSet: MigrationResultSet): MigrationResultSet {
  if (resultSet.error === undefined) return resultSet;
  const failed = resultSet.results?.find((r) => r.status === "Error")?.migrationName;
  const cause = resultSet.error;
  const reason = cause instanceof Error ? cause.message : String(cause);
  const where = failed === undefined ? "before any migration ran" : `in ${failed}`;
  throw new Error(`migration failed ${where}: ${reason}`, { cause });
}

function successfulNames(resultSet: MigrationResultSet): string[] {
  return (resultSet.results ?? []).filter((r) => r.status === "Success").map((r) => r.migrationName);
}
