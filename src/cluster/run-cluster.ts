/**
 * WORKERS=N: one machine's cores used by N worker processes (node:cluster), each a full replica
 * with its own REPLICA_ID (`<base>-w<i>`), its own leases, caches and decision-log chain.
 *
 * The primary only supervises: it forks the workers, restarts one that dies (with exponential
 * backoff, reset once a worker has stayed up for `stableAfterMs`), and on SIGTERM or SIGINT
 * forwards SIGTERM to every worker, waits for all of them to exit (each drains, settles its
 * leases and flushes its decision log), and resolves with exit code 0 — or 1 if it had to
 * SIGKILL a worker that outlived `shutdownTimeoutMs`.
 *
 * Ports: workers call listen() as usual and node:cluster shares the primary's listening socket.
 * On Linux the primary accepts connections and hands them out round-robin (SCHED_RR, the
 * default everywhere but Windows), for the HTTP server and for grpc-js alike (grpc-js listens
 * through node's net/http2 servers). gRPC connections are long-lived, so balance is per
 * connection, not per call: give Envoy or the client several connections (or use
 * MAX_CONNECTION_AGE_MS) when one client produces most of the traffic. test/deploy/cluster.test.ts
 * checks that connections from separate clients reach different workers.
 */
import cluster, { type Worker } from "node:cluster";
import { serveClusterMetrics } from "./cluster-metrics.js";

export interface ClusterLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface ClusterOptions {
  /** Worker processes, at least 1. */
  readonly workers: number;
  /** The environment of this process (the primary reads nothing else from it; workers read their index). */
  readonly env: NodeJS.ProcessEnv;
  readonly logger: ClusterLogger;
  /** First restart delay after a worker dies, ms; doubles per consecutive death. Default 500. */
  readonly restartDelayMs?: number;
  /** Longest restart delay, ms. Default 30000. */
  readonly maxRestartDelayMs?: number;
  /** A worker up this long has its backoff reset when it dies, ms. Default 60000. */
  readonly stableAfterMs?: number;
  /** After forwarding SIGTERM, SIGKILL workers still running after this long, ms. Default 30000. */
  readonly shutdownTimeoutMs?: number;
  /** Signals the primary handles. Default ["SIGTERM", "SIGINT"]. */
  readonly signals?: readonly NodeJS.Signals[];
}

/** The environment variable that tells a worker its index (0 .. workers-1). */
export const WORKER_INDEX_ENV = "LICENSING_WORKER_INDEX";

/** A worker's replica id: the base id with `-w<i>`. */
export function workerReplicaId(baseReplicaId: string, index: number): string {
  return `${baseReplicaId}-w${index}`;
}

export type ClusterRole = { readonly role: "primary" } | { readonly role: "worker"; readonly index: number };

/**
 * In the primary: supervises `options.workers` workers and resolves with the exit code to use
 * once they have all stopped (after a signal). In a worker: runs `startWorker(index)` and
 * resolves with undefined when it has started (the worker then lives until its own signal
 * handling stops it).
 */
export async function runCluster(
  options: ClusterOptions,
  startWorker: (index: number) => Promise<void>,
): Promise<number | undefined> {
  if (!Number.isSafeInteger(options.workers) || options.workers < 1) {
    throw new RangeError(`WORKERS must be a positive integer, got ${options.workers}`);
  }
  if (cluster.isWorker) {
    const index = Number(options.env[WORKER_INDEX_ENV]);
    if (!Number.isSafeInteger(index) || index < 0) throw new Error(`${WORKER_INDEX_ENV} is missing or invalid in a cluster worker`);
    await startWorker(index);
    return undefined;
  }
  return supervise(options);
}

interface Slot {
  worker: Worker | undefined;
  startedAt: number;
  failures: number;
  restartTimer: NodeJS.Timeout | undefined;
}

function supervise(options: ClusterOptions): Promise<number> {
  const { logger } = options;
  const baseDelay = options.restartDelayMs ?? 500;
  const maxDelay = options.maxRestartDelayMs ?? 30_000;
  const stableAfter = options.stableAfterMs ?? 60_000;
  const shutdownTimeout = options.shutdownTimeoutMs ?? 30_000;
  const slots: Slot[] = Array.from({ length: options.workers }, () => ({ worker: undefined, startedAt: 0, failures: 0, restartTimer: undefined }));
  let stopping = false;
  let killed = false;

  return new Promise((resolve) => {
    function fork(index: number): void {
      const slot = slots[index];
      if (slot === undefined || stopping) return;
      slot.restartTimer = undefined;
      const worker = cluster.fork({ [WORKER_INDEX_ENV]: String(index) });
      slot.worker = worker;
      slot.startedAt = Date.now();
      logger.info({ worker: index, pid: worker.process.pid }, "worker started");
      worker.once("exit", (code, signal) => onExit(index, worker, code, signal));
    }

    function onExit(index: number, worker: Worker, code: number | null, signal: string | null): void {
      const slot = slots[index];
      if (slot === undefined || slot.worker !== worker) return;
      slot.worker = undefined;
      if (stopping) {
        logger.info({ worker: index, code, signal }, "worker stopped");
        if (slots.every((s) => s.worker === undefined)) finish();
        return;
      }
      const livedMs = Date.now() - slot.startedAt;
      slot.failures = livedMs >= stableAfter ? 1 : slot.failures + 1;
      const delay = Math.min(maxDelay, baseDelay * 2 ** (slot.failures - 1));
      logger.error({ worker: index, code, signal, livedMs, restartInMs: delay }, "worker died: restarting");
      slot.restartTimer = setTimeout(() => fork(index), delay);
    }

    let forceTimer: NodeJS.Timeout | undefined;
    const stopMetrics = serveClusterMetrics();
    function finish(): void {
      if (forceTimer !== undefined) clearTimeout(forceTimer);
      stopMetrics();
      for (const signal of signals) process.off(signal, onSignal);
      logger.info({ killed }, "all workers stopped");
      resolve(killed ? 1 : 0);
    }

    function onSignal(signal: NodeJS.Signals): void {
      if (stopping) {
        logger.warn({ signal }, "second signal during shutdown: killing workers");
        killAll();
        return;
      }
      stopping = true;
      logger.info({ signal, workers: slots.filter((s) => s.worker !== undefined).length }, "signal received: stopping workers");
      for (const slot of slots) {
        if (slot.restartTimer !== undefined) clearTimeout(slot.restartTimer);
        slot.restartTimer = undefined;
        // SIGTERM whatever the primary received: a worker drains the same way for both.
        slot.worker?.process.kill("SIGTERM");
      }
      if (slots.every((s) => s.worker === undefined)) {
        finish();
        return;
      }
      forceTimer = setTimeout(killAll, shutdownTimeout);
      forceTimer.unref();
    }

    function killAll(): void {
      for (const slot of slots) {
        if (slot.worker !== undefined && !slot.worker.isDead()) {
          killed = true;
          slot.worker.process.kill("SIGKILL");
        }
      }
    }

    const signals = options.signals ?? ["SIGTERM", "SIGINT"];
    for (const signal of signals) process.on(signal, onSignal);
    for (let i = 0; i < slots.length; i++) fork(i);
  });
}
