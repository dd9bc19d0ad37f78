/**
 * A Kysely dialect over PGlite (embedded PostgreSQL in WebAssembly).
 *
 * Our own rather than `kysely-pglite-dialect`, whose peer range excludes PGlite 0.5.
 *
 * PGlite is one PostgreSQL backend: one session, so one transaction at a time. Kysely, written
 * for pools, assumes each acquired connection is its own session. The driver therefore hands its
 * single connection out exclusively: `acquireConnection` waits, first come first served, until
 * the previous holder has released it. A Kysely transaction holds the connection from `begin`
 * to `commit`/`rollback`, so no other query issued through Kysely can land inside it.
 *
 * Queries made on the raw PGlite instance (LISTEN/NOTIFY) bypass this lock; they must not
 * change data, or they could run inside someone else's transaction.
 *
 * The dialect does not own the PGlite instance: `Kysely.destroy()` waits for queued work and
 * then refuses new queries, but closing PGlite is its creator's job.
 */
import type { PGlite, Results } from "@electric-sql/pglite";
import {
  CompiledQuery,
  PostgresAdapter,
  PostgresIntrospector,
  PostgresQueryCompiler,
  type DatabaseConnection,
  type DatabaseIntrospector,
  type Dialect,
  type DialectAdapter,
  type Driver,
  type Kysely,
  type QueryCompiler,
  type QueryResult,
  type TransactionSettings,
} from "kysely";

export interface PGliteDialectOptions {
  /** An open (or opening) PGlite instance; the dialect waits for it to be ready. */
  pglite: PGlite;
}

export class PGliteDialect implements Dialect {
  readonly #options: PGliteDialectOptions;

  constructor(options: PGliteDialectOptions) {
    this.#options = options;
  }

  createAdapter(): DialectAdapter {
    return new PostgresAdapter();
  }

  createDriver(): Driver {
    return new PGliteDriver(this.#options.pglite);
  }

  createQueryCompiler(): QueryCompiler {
    return new PostgresQueryCompiler();
  }

  createIntrospector(db: Kysely<unknown>): DatabaseIntrospector {
    return new PostgresIntrospector(db);
  }
}

/**
 * A first-in, first-out mutex. `release` hands ownership straight to the next waiter, so a
 * caller that arrives between a release and the waiter's wake-up cannot jump the queue.
 */
class FifoLock {
  #held = false;
  readonly #waiters: Array<() => void> = [];

  acquire(): Promise<void> {
    if (!this.#held) {
      this.#held = true;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  release(): void {
    const next = this.#waiters.shift();
    if (next) next();
    else this.#held = false;
  }
}

class PGliteDriver implements Driver {
  readonly #pglite: PGlite;
  readonly #lock = new FifoLock();
  #destroyed = false;

  constructor(pglite: PGlite) {
    this.#pglite = pglite;
  }

  async init(): Promise<void> {
    await this.#pglite.waitReady;
  }

  /**
   * Resolves once every earlier holder has released the connection. Each acquisition gets a
   * fresh connection object, so a holder that keeps a reference after releasing cannot slip a
   * query into the next holder's transaction (it gets an error instead). Throws once the
   * driver is destroyed; callers already queued by then still get their turn.
   */
  async acquireConnection(): Promise<DatabaseConnection> {
    if (this.#destroyed) throw new Error("PGlite dialect: the Kysely instance has been destroyed");
    await this.#lock.acquire();
    return new PGliteConnection(this.#pglite);
  }

  async beginTransaction(connection: DatabaseConnection, settings: TransactionSettings): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw(beginStatement(settings)));
  }

  async commitTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw("commit"));
  }

  async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw("rollback"));
  }

  async savepoint(connection: DatabaseConnection, name: string): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw(`savepoint ${quoteIdentifier(name)}`));
  }

  async rollbackToSavepoint(connection: DatabaseConnection, name: string): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw(`rollback to savepoint ${quoteIdentifier(name)}`));
  }

  async releaseSavepoint(connection: DatabaseConnection, name: string): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw(`release savepoint ${quoteIdentifier(name)}`));
  }

  /** Kysely calls this in a `finally`, so a failed query or transaction never keeps the lock. */
  async releaseConnection(connection: DatabaseConnection): Promise<void> {
    if (connection instanceof PGliteConnection && connection.release()) this.#lock.release();
  }

  /**
   * Lets every query already queued finish, then refuses new ones. Called from inside a
   * transaction it would wait for that transaction forever; Kysely never does that.
   */
  async destroy(): Promise<void> {
    this.#destroyed = true;
    await this.#lock.acquire();
    this.#lock.release();
  }
}

class PGliteConnection implements DatabaseConnection {
  readonly #pglite: PGlite;
  #released = false;

  constructor(pglite: PGlite) {
    this.#pglite = pglite;
  }

  /** Marks this lease over; true the first time only, so a double release frees the lock once. */
  release(): boolean {
    if (this.#released) return false;
    this.#released = true;
    return true;
  }

  async executeQuery<R>(compiledQuery: CompiledQuery): Promise<QueryResult<R>> {
    if (this.#released) throw new Error("PGlite dialect: connection used after it was released");
    const result = await this.#run<R>(compiledQuery);
    return { rows: result.rows, numAffectedRows: affectedRows(result) };
  }

  /** PGlite has no cursors over this API: the query runs whole, then rows are yielded in chunks. */
  async *streamQuery<R>(compiledQuery: CompiledQuery, chunkSize: number): AsyncIterableIterator<QueryResult<R>> {
    if (!Number.isInteger(chunkSize) || chunkSize <= 0) {
      throw new Error("chunkSize must be a positive integer");
    }
    const { rows } = await this.executeQuery<R>(compiledQuery);
    for (let start = 0; start < rows.length; start += chunkSize) {
      yield { rows: rows.slice(start, start + chunkSize) };
    }
  }

  /**
   * Without parameters the script goes through the simple-query protocol (`exec`), as `pg` does,
   * so a multi-statement script (a function and its trigger, say) runs the same on both
   * backends. Its result is the last statement's. With parameters it is one prepared statement.
   */
  async #run<R>(compiledQuery: CompiledQuery): Promise<Results<R>> {
    if (compiledQuery.parameters.length > 0) {
      return this.#pglite.query<R>(compiledQuery.sql, [...compiledQuery.parameters]);
    }
    const results = await this.#pglite.exec(compiledQuery.sql);
    const last = results.at(-1);
    // Rows are typed by the caller's query, exactly as with `query<R>`; PGlite types exec's as Row.
    return (last ?? { rows: [], fields: [] }) as Results<R>;
  }
}

/** The same rule as Kysely's PostgresDriver: only writes report affected rows. */
function affectedRows(result: Results<unknown>): bigint | undefined {
  switch (result.command) {
    case "INSERT":
    case "UPDATE":
    case "DELETE":
    case "MERGE":
      return BigInt(result.rowCount ?? 0);
    default:
      return undefined;
  }
}

/** Kysely validates both settings against fixed lists before they reach the driver. */
function beginStatement(settings: TransactionSettings): string {
  const parts = ["start transaction"];
  if (settings.isolationLevel) parts.push(`isolation level ${settings.isolationLevel}`);
  if (settings.accessMode) parts.push(settings.accessMode);
  return parts.join(" ");
}

function quoteIdentifier(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}
