/**
 * Serving status per service, and the standard gRPC health service over it
 * (https://github.com/grpc/grpc/blob/master/doc/health-checking.md).
 *
 * The registry is transport-neutral: main.ts flips it (NOT_SERVING while warming up or draining,
 * SERVING when ready) and anything may read it (the HTTP /readyz route, for instance).
 * `createHealthService` mounts it on the gRPC port as `grpc.health.v1.Health`.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import type * as grpc from "@grpc/grpc-js";
import {
  Health,
  HealthCheckRequestSchema,
  HealthCheckResponse_ServingStatus,
  HealthCheckResponseSchema,
} from "../gen/grpc/health/v1/health_pb.js";
import { decodeRequest, notFound, toGrpcStatus } from "./errors.js";
import type { RawServiceMount } from "./grpc-server.js";

export type ServingStatus = "SERVING" | "NOT_SERVING";

/** Called with a service's new status. */
export type HealthListener = (status: ServingStatus) => void;

export interface HealthRegistry {
  /** Sets `service`'s status (`""` is the whole server), registering it if new. Watchers hear only changes. */
  set(service: string, status: ServingStatus): void;
  /** Sets every registered service, the server (`""`) included, to `status`. */
  setAll(status: ServingStatus): void;
  /** The service's status, or undefined when the service was never registered. */
  get(service: string): ServingStatus | undefined;
  /**
   * Calls `listener` on every later change of `service`'s status (not with the current one; read
   * it with `get`). Works for services not registered yet. Returns the function that stops it.
   * Listeners run synchronously inside `set` and must not throw.
   */
  watch(service: string, listener: HealthListener): () => void;
}

/**
 * Creates a registry where only the whole server (`""`) is known, with status `initial`
 * (NOT_SERVING by default: a replica is ready only once main.ts says so).
 */
export function createHealthRegistry(initial: ServingStatus = "NOT_SERVING"): HealthRegistry {
  const statuses = new Map<string, ServingStatus>([["", initial]]);
  const listeners = new Map<string, Set<HealthListener>>();

  function set(service: string, status: ServingStatus): void {
    if (statuses.get(service) === status) return;
    statuses.set(service, status);
    const watchers = listeners.get(service);
    if (watchers === undefined) return;
    for (const listener of watchers) listener(status);
  }

  function watch(service: string, listener: HealthListener): () => void {
    let watchers = listeners.get(service);
    if (watchers === undefined) {
      watchers = new Set();
      listeners.set(service, watchers);
    }
    watchers.add(listener);
    return () => {
      watchers.delete(listener);
      if (watchers.size === 0) listeners.delete(service);
    };
  }

  return {
    set,
    setAll(status) {
      for (const service of [...statuses.keys()]) set(service, status);
    },
    get: (service) => statuses.get(service),
    watch,
  };
}

const ENCODED_STATUS: ReadonlyMap<HealthCheckResponse_ServingStatus, Uint8Array> = new Map(
  [
    HealthCheckResponse_ServingStatus.SERVING,
    HealthCheckResponse_ServingStatus.NOT_SERVING,
    HealthCheckResponse_ServingStatus.SERVICE_UNKNOWN,
  ].map((status) => [status, toBinary(HealthCheckResponseSchema, create(HealthCheckResponseSchema, { status }))]),
);

/** The encoded HealthCheckResponse for a status; unknown services answer SERVICE_UNKNOWN. */
function encodedStatus(status: ServingStatus | undefined): Uint8Array {
  const wire =
    status === undefined
      ? HealthCheckResponse_ServingStatus.SERVICE_UNKNOWN
      : HealthCheckResponse_ServingStatus[status];
  // Every value that `wire` can take was encoded above.
  return ENCODED_STATUS.get(wire) as Uint8Array;
}

/**
 * `grpc.health.v1.Health` over `registry`, for grpc-server.ts to mount.
 *
 * Check answers NOT_FOUND for a service never registered (as the spec says). Watch sends the
 * current status at once, then every change; SERVICE_UNKNOWN while the service is unknown. A Watch
 * stream ends (status OK) when the client cancels or when `close()` is called, so a graceful
 * server shutdown is not held open by load balancers that watch forever.
 */
export function createHealthService(registry: HealthRegistry): RawServiceMount {
  /** Open Watch streams, each with the function that stops its subscription. */
  const openWatches = new Map<grpc.ServerWritableStream<Buffer, Uint8Array>, () => void>();
  let closed = false;

  function check(call: grpc.ServerUnaryCall<Buffer, Uint8Array>, callback: grpc.sendUnaryData<Uint8Array>): void {
    let service: string;
    try {
      service = decodeRequest(HealthCheckRequestSchema, call.request).service;
    } catch (err) {
      callback(toGrpcStatus(err));
      return;
    }
    const status = registry.get(service);
    if (status === undefined) callback(toGrpcStatus(notFound(`unknown service "${service}"`)));
    else callback(null, encodedStatus(status));
  }

  function watch(call: grpc.ServerWritableStream<Buffer, Uint8Array>): void {
    let service: string;
    try {
      service = decodeRequest(HealthCheckRequestSchema, call.request).service;
    } catch (err) {
      // grpc-js turns an 'error' event on a server stream into the call's status.
      call.emit("error", toGrpcStatus(err));
      return;
    }
    call.write(encodedStatus(registry.get(service)));
    if (closed) {
      call.end();
      return;
    }
    const unsubscribe = registry.watch(service, (status) => call.write(encodedStatus(status)));
    openWatches.set(call, unsubscribe);
    call.once("cancelled", () => {
      unsubscribe();
      openWatches.delete(call);
    });
  }

  return {
    service: Health,
    implementation: { Check: check, Watch: watch },
    close() {
      closed = true;
      for (const [call, unsubscribe] of openWatches) {
        unsubscribe();
        call.end();
      }
      openWatches.clear();
    },
  };
}
