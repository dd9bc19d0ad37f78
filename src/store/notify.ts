/**
 * Change notifications: LISTEN on `licensing_changes` (see migration 20261121010000 for the
 * payloads: "license:<id>", "plan:<name>", "key:<secret_hash>", "service_token:<secret_hash>",
 * "issuers", "signing_keys") and hand each payload to `onChange`.
 *
 * PostgreSQL: a dedicated `pg.Client` (application_name "licensing-listen"), never one from the
 * pool, since a LISTEN belongs to its session. When that connection fails or ends, the listener
 * reconnects with a doubling delay capped at `maxReconnectDelayMs`, logging each failed attempt
 * at warn with its number, and never throws. Notifications sent while it was away are lost, so
 * after every LISTEN but the first it calls `onReconnect`: the caller drops what it cached.
 *
 * PGlite: the database runs in this process, so the connection cannot drop; `pglite.listen`
 * registers a callback. Its LISTEN is issued while holding the store's connection lock, so it
 * cannot land inside (and be rolled back with) a transaction someone runs through Kysely.
 *
 * Neither blocks a Check: `onChange` runs on the event loop as notifications arrive.
 */
import type { Kysely } from "kysely";
import pg from "pg";
import type { Store } from "./database.js";
import type { Database } from "./schema.js";

export const DEFAULT_CHANGE_CHANNEL = "licensing_changes";

/** The PostgreSQL application_name of the LISTEN connection, to find it in pg_stat_activity. */
export const LISTEN_APPLICATION_NAME = "licensing-listen";

export interface ChangeListenerLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface ChangeListenerOptions {
  store: Store;
  /** A plain identifier ([a-z_][a-z0-9_]*). Default "licensing_changes". */
  channel?: string;
  logger: ChangeListenerLogger;
  /** Called with each payload, in the order PostgreSQL delivers them. Exceptions are logged. */
  onChange(payload: string): void;
  /**
   * Called after the listener is back (LISTEN re-issued) following a lost connection, or after
   * a first connection that start() could not make: changes in between were not seen.
   */
  onReconnect(): void;
  /** First delay before reconnecting, ms; doubles per failed attempt. Default 250. */
  reconnectDelayMs?: number;
  /** Longest delay between attempts, ms. Default 10_000. */
  maxReconnectDelayMs?: number;
  /** PostgreSQL: how long one connection attempt may take, ms. Default 5000. */
  connectTimeoutMs?: number;
}

export interface ChangeListener {
  /**
   * Starts listening. Resolves once LISTEN is in place, or — PostgreSQL unreachable — after the
   * first failed attempt, with retries continuing in the background. Rejects only on misuse
   * (called twice).
   */
  start(): Promise<void>;
  /** Stops listening and closes the connection; no callback runs after it resolves. */
  stop(): Promise<void>;
  /** True while LISTEN is in place. */
  connected(): boolean;
}

const DEFAULTS = { reconnectDelayMs: 250, maxReconnectDelayMs: 10_000, connectTimeoutMs: 5000 } as const;

/** Throws when the channel is not a plain identifier or the store lacks its backend handle. */
export function createChangeListener(options: ChangeListenerOptions): ChangeListener {
  const channel = options.channel ?? DEFAULT_CHANGE_CHANNEL;
  if (!/^[a-z_][a-z0-9_]*$/.test(channel)) {
    throw new RangeError(`change listener option channel must match [a-z_][a-z0-9_]*, got "${channel}"`);
  }
  const deliver = safeDelivery(options);
  if (options.store.backend === "pglite") return createPGliteListener(options, channel, deliver);
  return createPostgresListener(options, channel, deliver);
}

/** onChange that cannot throw into the driver's event emitter. */
function safeDelivery(options: ChangeListenerOptions): (payload: string) => void {
  return (payload) => {
    try {
      options.onChange(payload);
    } catch (error) {
      // The listener must keep running; the cache this payload named may stay stale until the
      // next change or reconnect, which the error log makes visible.
      options.logger.error({ err: errorSummary(error), payload }, "change listener: onChange threw");
    }
  };
}

function createPGliteListener(options: ChangeListenerOptions, channel: string, deliver: (payload: string) => void): ChangeListener {
  const { pglite } = options.store;
  if (pglite === undefined) throw new Error("change listener: the PGlite store has no pglite handle");
  let unlisten: (() => Promise<void>) | undefined;
  let stopped = false;
  // Set once stop() starts: PGlite may deliver a notification already in flight.
  const callback = (payload: string) => {
    if (!stopped) deliver(payload);
  };

  return {
    async start() {
      if (unlisten !== undefined || stopped) throw new Error("change listener: start() called twice, or after stop()");
      unlisten = await underStoreLock(options.store.db, () => pglite.listen(channel, callback));
      options.logger.info({ channel }, "listening for changes (PGlite)");
    },
    async stop() {
      stopped = true;
      const release = unlisten;
      unlisten = undefined;
      if (release === undefined) return;
      try {
        await underStoreLock(options.store.db, release);
      } catch (error) {
        // The store may already be closed, which ends the LISTEN with it.
        options.logger.warn({ err: errorSummary(error) }, "change listener: UNLISTEN failed");
      }
    },
    connected: () => unlisten !== undefined,
  };
}

/**
 * Runs raw PGlite work while holding the Kysely dialect's connection lock, so no Kysely
 * transaction is open around it.
 */
function underStoreLock<T>(db: Kysely<Database>, work: () => Promise<T>): Promise<T> {
  return db.connection().execute(() => work());
}

function createPostgresListener(options: ChangeListenerOptions, channel: string, deliver: (payload: string) => void): ChangeListener {
  const { logger } = options;
  const databaseUrl = options.store.databaseUrl;
  if (databaseUrl === undefined) throw new Error("change listener: the PostgreSQL store has no databaseUrl");
  const reconnectDelayMs = options.reconnectDelayMs ?? DEFAULTS.reconnectDelayMs;
  const maxReconnectDelayMs = options.maxReconnectDelayMs ?? DEFAULTS.maxReconnectDelayMs;
  let client: pg.Client | undefined;
  let listening = false;
  let started = false;
  let stopped = false;
  /** Set after the first LISTEN: every later one follows a gap in which changes were missed. */
  let listenedBefore = false;
  /** Failed attempts since the last successful LISTEN. */
  let failures = 0;
  let retryTimer: NodeJS.Timeout | undefined;

  /** One attempt: connect, LISTEN. True on success; on failure the client is discarded. */
  async function connectAndListen(): Promise<boolean> {
    const attempt = new pg.Client({
      connectionString: databaseUrl,
      application_name: LISTEN_APPLICATION_NAME,
      connectionTimeoutMillis: options.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs,
      // A silently dead peer (no RST) would otherwise leave us "listening" to nothing.
      keepAlive: true,
      keepAliveInitialDelayMillis: 10_000,
    });
    client = attempt;
    attempt.on("notification", (message) => {
      if (message.channel === channel && attempt === client && !stopped) deliver(message.payload ?? "");
    });
    attempt.on("error", (error) => lost(attempt, error));
    attempt.on("end", () => lost(attempt, undefined));
    try {
      await attempt.connect();
      await attempt.query(`LISTEN ${attempt.escapeIdentifier(channel)}`);
    } catch (error) {
      if (stopped) return false;
      failures += 1;
      logger.warn(
        { channel, attempt: failures, err: errorSummary(error), retryInMs: nextDelay() },
        "change listener: could not LISTEN; retrying",
      );
      discard(attempt);
      return false;
    }
    if (stopped) {
      discard(attempt);
      return false;
    }
    listening = true;
    logger.info({ channel, attempts: failures + 1 }, "listening for changes (PostgreSQL)");
    failures = 0;
    if (listenedBefore) notifyReconnect();
    listenedBefore = true;
    return true;
  }

  function notifyReconnect(): void {
    try {
      options.onReconnect();
    } catch (error) {
      logger.error({ err: errorSummary(error) }, "change listener: onReconnect threw");
    }
  }

  /** The connection `which` failed or ended: forget it and schedule a reconnect, once. */
  function lost(which: pg.Client, error: Error | undefined): void {
    if (which !== client || stopped) return;
    const wasListening = listening;
    listening = false;
    discard(which);
    if (!wasListening) return; // a failing attempt: connectAndListen schedules the retry
    logger.warn(
      { channel, err: error === undefined ? { message: "connection ended" } : errorSummary(error) },
      "change listener: connection lost; reconnecting",
    );
    // Changes may be missed from now until the next LISTEN; onReconnect then covers them.
    listenedBefore = true;
    scheduleRetry(0);
  }

  /** Drops a client without waiting; its errors are expected now and not reported. */
  function discard(which: pg.Client): void {
    if (client === which) client = undefined;
    which.removeAllListeners("notification");
    // Keep an error listener: a late socket error with none would crash the process.
    which.on("error", () => {});
    which.end().catch(() => {
      // Ending a connection that already failed can fail again; there is nothing left to close.
    });
  }

  function nextDelay(): number {
    return Math.min(maxReconnectDelayMs, reconnectDelayMs * 2 ** Math.max(0, failures - 1));
  }

  function scheduleRetry(delayMs: number): void {
    if (stopped || retryTimer !== undefined) return;
    retryTimer = setTimeout(() => {
      retryTimer = undefined;
      void connectAndListen().then((ok) => {
        if (!ok) scheduleRetry(nextDelay());
      });
    }, delayMs);
    // Retrying must not keep a process alive on its own; stop() clears the timer anyway.
    retryTimer.unref();
  }

  return {
    async start() {
      if (started) throw new Error("change listener: start() called twice");
      started = true;
      // A first attempt that fails still counts as a gap: whatever the caller caches until the
      // listener is up may go stale unseen, so the later LISTEN calls onReconnect.
      if (!(await connectAndListen())) {
        listenedBefore = true;
        scheduleRetry(nextDelay());
      }
    },
    async stop() {
      stopped = true;
      listening = false;
      clearTimeout(retryTimer);
      retryTimer = undefined;
      const current = client;
      client = undefined;
      if (current === undefined) return;
      current.removeAllListeners("notification");
      current.on("error", () => {});
      try {
        await current.end();
      } catch {
        // Already closed or failed: nothing left to release.
      }
    },
    connected: () => listening,
  };
}

function errorSummary(error: unknown): { message: string; code?: string } {
  if (!(error instanceof Error)) return { message: String(error) };
  const code: unknown = (error as { code?: unknown }).code;
  return typeof code === "string" ? { message: error.message, code } : { message: error.message };
}
