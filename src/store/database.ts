/**
 * The store: a `Kysely<Database>` over real PostgreSQL (`pg` pool) when a database URL is
 * given, or over embedded PGlite otherwise.
 *
 * Both backends return the same JavaScript types, so nothing above this file knows which one
 * it runs on: int8 → number (or a thrown RangeError, never a rounded value), timestamptz →
 * Date, text[] → string[], jsonb → the parsed value, numeric, date and interval → their text.
 * Arrays of date or interval, and bytea (Buffer on pg, Uint8Array on PGlite), still differ.
 */
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { PGlite, types as pgliteTypes } from "@electric-sql/pglite";
import { Kysely, PostgresDialect, sql } from "kysely";
import pg from "pg";
import { PGliteDialect } from "./pglite-dialect.js";
import type { Database } from "./schema.js";

export interface StoreOptions {
  /** A `postgres://` URL. Unset: embedded PGlite. Never logged or echoed: it may hold a password. */
  databaseUrl?: string;
  /** PGlite's home; its files go to `<dataDir>/pgdata`, created if missing. Unused otherwise. */
  dataDir: string;
  /** Most connections the `pg` pool opens. Default 10. */
  poolMax?: number;
  /** How long `pg` waits for a new connection before failing the query, in ms. Default 5000. */
  connectTimeoutMs?: number;
  /** PGlite only: keep the database in memory, nothing on disk (tests). Default false. */
  memory?: boolean;
  /** Told about errors nobody awaits (a pooled idle connection dropped). pino fits. */
  logger?: StoreLogger;
}

export interface StoreLogger {
  warn(obj: object, msg: string): void;
}

export interface Store {
  db: Kysely<Database>;
  backend: "postgres" | "pglite";
  /** Where the data lives, for logs: "postgres 127.0.0.1:5432/test" or "pglite .data/pgdata". No password. */
  describe(): string;
  /** Resolves when the database answers a query; rejects with the driver's error otherwise. */
  ping(): Promise<void>;
  /** Waits for in-flight queries, then closes every connection (and PGlite itself). */
  close(): Promise<void>;
  /** The raw PGlite instance (pglite backend only), for LISTEN/NOTIFY. */
  pglite?: PGlite;
  /** The URL the pool connects with (postgres backend only), for a dedicated LISTEN client. */
  databaseUrl?: string;
  /** Connections of the PostgreSQL pool (absent for PGlite), for metrics. */
  poolStats?(): { total: number; idle: number; waiting: number };
}

const DEFAULT_POOL_MAX = 10;
const DEFAULT_CONNECT_TIMEOUT_MS = 5000;

const OID = { int8: 20, int8Array: 1016, date: 1082, interval: 1186 } as const;

/**
 * Scalar types that read as their PostgreSQL text on both backends, where the drivers disagree:
 * pg turns a date into a Date at local midnight (shifting with the process's time zone) and an
 * interval into an object; PGlite gives a Date at UTC midnight and a string. Text is exact.
 */
const AS_TEXT: ReadonlySet<number> = new Set([OID.date, OID.interval]);

function asText(value: string): string {
  return value;
}

/**
 * Creates the store. With a database URL, no connection is opened yet: the pool connects on the
 * first query, so a service can start (and spool) while PostgreSQL is away; call `ping()` to
 * check. Throws when the URL is unparseable, naming DATABASE_URL but not echoing it.
 */
export async function createStore(options: StoreOptions): Promise<Store> {
  if (options.databaseUrl !== undefined) return createPostgresStore(options.databaseUrl, options);
  return createPGliteStore(options);
}

/**
 * Reads an int8 as a JS number, exactly, or throws. Values beyond ±Number.MAX_SAFE_INTEGER
 * (2^53 − 1) cannot be represented exactly; rounding them silently would corrupt counters and
 * money, so the query fails instead. Cast to text in SQL to read such a value.
 */
export function parseInt8(text: string): number {
  const value = Number(text);
  if (!Number.isSafeInteger(value)) {
    throw new RangeError(
      `int8 value ${text} is outside ±Number.MAX_SAFE_INTEGER and cannot be read as a JS number exactly; select it ::text`,
    );
  }
  return value;
}

function createPostgresStore(databaseUrl: string, options: StoreOptions): Store {
  const location = describePostgresUrl(databaseUrl);
  const pool = new pg.Pool({
    connectionString: databaseUrl,
    max: options.poolMax ?? DEFAULT_POOL_MAX,
    connectionTimeoutMillis: options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
    application_name: "licensing",
    types: { getTypeParser: pgTypeParser },
  });
  // An idle pooled client whose server went away (restart, failover, idle kill) emits 'error'
  // on the pool; unhandled, it would crash the process. It is safe to only report it: the pool
  // has already discarded that client, and the next query opens a fresh connection or fails
  // in its own caller.
  pool.on("error", (error) => {
    options.logger?.warn({ err: { message: error.message, code: errorCode(error) } }, "idle PostgreSQL connection lost");
  });
  // A client that is checked out (Kysely holds it for a transaction, or between a query and
  // its release) when its connection dies emits 'error' on itself, where the pool no longer
  // listens: unhandled, that crashes the process. The query in flight fails in its caller
  // anyway, and pg marks the client broken so the pool discards it on release; here it is
  // only reported.
  pool.on("connect", (client) => {
    client.on("error", (error) => {
      // While the client is idle the pool has its own listener on it and reports the loss
      // above; speak only for clients that are checked out.
      if (client.listenerCount("error") > 1) return;
      options.logger?.warn({ err: { message: error.message, code: errorCode(error) } }, "PostgreSQL connection lost while in use");
    });
  });
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  return {
    db,
    backend: "postgres",
    poolStats: () => ({ total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount }),
    databaseUrl,
    describe: () => `postgres ${location}`,
    ping: () => ping(db),
    close: () => db.destroy(),
  };
}

async function createPGliteStore(options: StoreOptions): Promise<Store> {
  const dataDir = options.memory ? undefined : path.join(options.dataDir, "pgdata");
  if (dataDir !== undefined) await mkdir(options.dataDir, { recursive: true });
  const parsers = { [pgliteTypes.INT8]: parseInt8, [OID.date]: asText, [OID.interval]: asText };
  const pglite = await PGlite.create(dataDir, { parsers });
  const db = new Kysely<Database>({ dialect: new PGliteDialect({ pglite }) });
  return {
    db,
    backend: "pglite",
    pglite,
    describe: () => `pglite ${dataDir ?? "(in memory)"}`,
    ping: () => ping(db),
    close: async () => {
      await db.destroy();
      await pglite.close();
    },
  };
}

async function ping(db: Kysely<Database>): Promise<void> {
  await sql`select 1`.execute(db);
}

/**
 * `pg`'s type parsers for this pool only; pg's global registry is read, never changed. int8
 * and int8[] become numbers (pg's defaults give strings), date and interval stay text;
 * everything else keeps pg's default, which already matches PGlite for timestamptz, text[]
 * and jsonb. PGlite applies its int8 parser to int8[] elements by itself.
 */
function pgTypeParser(oid: number, format?: "text" | "binary"): (value: string) => unknown {
  if (format !== "binary" && oid === OID.int8) return parseInt8;
  if (format !== "binary" && AS_TEXT.has(oid)) return asText;
  const fallback: (value: string) => unknown = pg.types.getTypeParser(oid, format);
  if (format !== "binary" && oid === OID.int8Array) {
    return (value) => mapArray(fallback(value), parseInt8);
  }
  return fallback;
}

function mapArray(value: unknown, parse: (text: string) => unknown): unknown {
  if (Array.isArray(value)) return value.map((item: unknown) => mapArray(item, parse));
  return typeof value === "string" ? parse(value) : value;
}

/**
 * "host:port/database" for logs. Throws when the URL is not a postgres URL, with a message
 * that names DATABASE_URL and deliberately carries neither the URL nor the parser's error
 * (Node's URL error keeps the input, password included).
 */
function describePostgresUrl(databaseUrl: string): string {
  let url: URL;
  try {
    url = new URL(databaseUrl);
  } catch {
    throw new Error("DATABASE_URL is not a valid URL; expected postgres://user:password@host:port/database");
  }
  if (url.protocol !== "postgres:" && url.protocol !== "postgresql:") {
    throw new Error(`DATABASE_URL must start with postgres:// or postgresql://, not ${url.protocol}//`);
  }
  // A Unix socket is given as ?host=/path, with an empty host part.
  const host = url.hostname || url.searchParams.get("host") || "localhost";
  const port = url.port || "5432";
  const database = decodeURIComponent(url.pathname.replace(/^\//, "")) || "(default database)";
  return `${host}:${port}/${database}`;
}

function errorCode(error: Error): string | undefined {
  const code: unknown = (error as { code?: unknown }).code;
  return typeof code === "string" ? code : undefined;
}
