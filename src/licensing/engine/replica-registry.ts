/**
 * This replica's entry in the registry: registration (once, shared by everyone who needs it),
 * heartbeats (which also extend its quota leases and sweep vanished replicas' leases into
 * `stranded`), the live-replica count rate shares are computed from, and deregistration.
 */
import type { Kysely } from "kysely";
import { deregisterReplica, heartbeatReplica, registerReplica } from "../../store/replicas.js";
import type { Database } from "../../store/schema.js";
import type { MutableEngineStats, ResolvedEngineOptions } from "./options.js";
import type { SerialQueue } from "./serial-queue.js";

export interface ReplicaRegistry {
  /** Resolves once registered; concurrent callers share one attempt; a failed attempt is retried by the next caller. */
  ready(): Promise<void>;
  /**
   * Heartbeats (registering first if needed). Resolves the lease expiry it wrote and when
   * Postgres answered, epoch ms. Rejects when Postgres failed.
   */
  heartbeat(): Promise<{ leaseExpiresAtMs: number; answeredAtMs: number } | undefined>;
  /** Live replicas at the last heartbeat, this one included. */
  live(): number;
  deregister(): Promise<void>;
}

export function createReplicaRegistry(
  db: Kysely<Database>,
  options: ResolvedEngineOptions,
  stats: MutableEngineStats,
  serial: SerialQueue,
): ReplicaRegistry {
  let registered = false;
  let registering: Promise<void> | undefined;
  let live = 1;

  function ready(): Promise<void> {
    if (registered) return Promise.resolve();
    registering ??= register().finally(() => {
      registering = undefined;
    });
    return registering;
  }

  async function register(): Promise<void> {
    const nowMs = options.now();
    const result = await serial.run(() => registerReplica(db, options.replicaId, nowMs, nowMs + options.replicaTtlMs));
    registered = true;
    if (result.wasLive) {
      options.logger.warn(
        { replicaId: options.replicaId },
        "a live replica already had this id: a restart, or two processes sharing one id (each must be unique)",
      );
    }
    if (result.stranded > 0) {
      options.logger.warn(
        { replicaId: options.replicaId, units: result.stranded },
        "stranded quota units leased by an earlier process with this replica id",
      );
    }
  }

  async function heartbeat(): Promise<{ leaseExpiresAtMs: number; answeredAtMs: number } | undefined> {
    if (!registered) {
      await ready();
      return undefined;
    }
    const nowMs = options.now();
    const leaseExpiresAtMs = nowMs + options.leaseTtlMs;
    const result = await serial.run(() =>
      heartbeatReplica(db, options.replicaId, nowMs, nowMs + options.replicaTtlMs, leaseExpiresAtMs),
    );
    live = Math.max(1, result.live);
    stats.liveReplicas = live;
    stats.unitsStranded += result.stranded;
    if (result.stranded > 0) {
      options.logger.warn({ units: result.stranded }, "stranded the expired quota leases of vanished replicas");
    }
    return { leaseExpiresAtMs, answeredAtMs: options.now() };
  }

  async function deregister(): Promise<void> {
    await deregisterReplica(db, options.replicaId);
    registered = false;
  }

  return { ready, heartbeat, live: () => live, deregister };
}
