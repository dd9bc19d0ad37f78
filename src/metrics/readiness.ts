/**
 * Readiness (/readyz): may a load balancer send this replica traffic?
 *
 *   ready     = migrated AND (Postgres reachable OR serving from memory)
 *   from memory = caches hold at least one licence AND, since Postgres went away, no Check
 *                 has needed it (no BACKEND_UNAVAILABLE decision)
 *
 * So a replica that loses Postgres stays ready while everything asked of it is answerable from
 * memory (cached licences, leased units, held seats), and turns unready (503) the moment a
 * Check needs something it cannot load, or when it has nothing cached at all. It turns ready
 * again on the first successful ping.
 *
 * Postgres is pinged on a timer (`intervalMs`), never per request: /readyz reads state only.
 * A BACKEND_UNAVAILABLE decision also triggers a ping at once (coalesced), so the state does not
 * wait for the timer to notice an outage.
 *
 * Caveat, documented in deploy/README.md: every replica shares one Postgres, so an outage can
 * make all of them unready together; Kubernetes then has no ready endpoint to route to at all.
 * Only those Checks that need Postgres would fail anyway, so keep readiness for rollouts and
 * rely on liveness (/healthz) to restart only a wedged process.
 */
import type { DecisionRecorder } from "../licensing/check.js";
import type { HttpRoute } from "../server/http-server.js";

export interface ReadinessOptions {
  /** True once migrations are done and the service serves (the app's `ready` flag). */
  readonly migrated: () => boolean;
  /** Resolves when Postgres answers a query (Store.ping). */
  readonly ping: () => Promise<void>;
  /** Licences held in memory (caches.licenses.size). */
  readonly cachedLicenses: () => number;
  /** Time between pings, ms. Default 2000. */
  readonly intervalMs?: number;
  /** A ping slower than this counts as failed, ms. Default 1000. */
  readonly pingTimeoutMs?: number;
  readonly logger: { info(obj: object, msg: string): void; warn(obj: object, msg: string): void };
}

export type PostgresState = "up" | "down";

export interface ReadinessReport {
  readonly ready: boolean;
  /** "ready", "degraded" (ready, serving from memory while Postgres is away) or "not_ready". */
  readonly status: "ready" | "degraded" | "not_ready";
  /** Why not ready, or why degraded; absent when ready. */
  readonly reason?: string;
  readonly postgres: PostgresState;
  readonly cachedLicenses: number;
}

export interface Readiness {
  report(): ReadinessReport;
  /** Starts the ping timer (the first ping runs at once). */
  start(): void;
  stop(): void;
  /** Pings now (concurrent calls share one ping); resolves when the state is updated. */
  pingNow(): Promise<void>;
  /** A Check needed Postgres and could not have it (BACKEND_UNAVAILABLE). */
  noteBackendUnavailable(): void;
  /** Wraps a DecisionRecorder: BACKEND_UNAVAILABLE decisions call noteBackendUnavailable. One string compare per Check. */
  watchingRecorder(next: DecisionRecorder): DecisionRecorder;
}

const DEFAULT_INTERVAL_MS = 2000;
const DEFAULT_PING_TIMEOUT_MS = 1000;

export function createReadiness(options: ReadinessOptions): Readiness {
  const intervalMs = options.intervalMs ?? DEFAULT_INTERVAL_MS;
  const timeoutMs = options.pingTimeoutMs ?? DEFAULT_PING_TIMEOUT_MS;
  // Migrations just succeeded when `migrated` turns true, so "up" is the right first guess.
  let postgres: PostgresState = "up";
  let neededWhileDown = false;
  let pinging: Promise<void> | undefined;
  let timer: NodeJS.Timeout | undefined;
  let running = false;

  function setPostgres(next: PostgresState, error?: unknown): void {
    if (next === postgres) return;
    postgres = next;
    if (next === "up") {
      neededWhileDown = false;
      options.logger.info({}, "readiness: Postgres reachable again");
    } else {
      options.logger.warn({ err: error }, "readiness: Postgres unreachable; serving from memory while it can");
    }
  }

  function pingNow(): Promise<void> {
    pinging ??= withTimeout(options.ping(), timeoutMs)
      .then(
        () => setPostgres("up"),
        (error: unknown) => setPostgres("down", error),
      )
      .finally(() => {
        pinging = undefined;
      });
    return pinging;
  }

  function schedule(): void {
    if (!running) return;
    timer = setTimeout(() => void pingNow().then(schedule), intervalMs);
    timer.unref();
  }

  function noteBackendUnavailable(): void {
    neededWhileDown = true;
    if (postgres === "up") void pingNow(); // the timer may not have noticed yet
  }

  function report(): ReadinessReport {
    const cachedLicenses = options.cachedLicenses();
    const base = { postgres, cachedLicenses };
    if (!options.migrated()) return { ready: false, status: "not_ready", reason: "starting: migrations not done", ...base };
    if (postgres === "up") return { ready: true, status: "ready", ...base };
    if (cachedLicenses === 0) return { ready: false, status: "not_ready", reason: "Postgres unreachable and no licence cached", ...base };
    if (neededWhileDown) return { ready: false, status: "not_ready", reason: "Postgres unreachable and a Check needed it (a licence or units to load)", ...base };
    return { ready: true, status: "degraded", reason: "Postgres unreachable: serving from memory", ...base };
  }

  return {
    report,
    start() {
      if (running) return;
      running = true;
      void pingNow().then(schedule);
    },
    stop() {
      running = false;
      if (timer !== undefined) clearTimeout(timer);
    },
    pingNow,
    noteBackendUnavailable,
    watchingRecorder: (next) => ({
      record(entry) {
        if (entry.reason === "BACKEND_UNAVAILABLE") noteBackendUnavailable();
        next.record(entry);
      },
    }),
  };
}

/** GET /readyz: 200 when ready or degraded, 503 otherwise; the report as JSON either way. */
export function readinessRoute(readiness: Readiness): HttpRoute {
  return {
    method: "GET",
    path: "/readyz",
    handle: (_req, res) => {
      const report = readiness.report();
      const body = JSON.stringify(report);
      res.writeHead(report.ready ? 200 : 503, { "content-type": "application/json", "cache-control": "no-store" });
      res.end(body);
    },
  };
}

function withTimeout(promise: Promise<void>, ms: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`ping timed out after ${ms} ms`)), ms);
    promise.then(
      () => {
        clearTimeout(timer);
        resolve();
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}
