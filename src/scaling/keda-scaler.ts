/**
 * KEDA's external scaler (`externalscaler.ExternalScaler`) over licensed demand, mounted raw on
 * the gRPC port like grpc.health.v1 (server/health.ts).
 *
 * A ScaledObject's trigger metadata names the credential and the entitlement:
 * - `apiKey`, or `licenseId` with `serviceToken` (a service token with the license_id right):
 *   resolved by the same IdentityResolver as Check. Put them in a TriggerAuthentication secret.
 * - `feature` (required): the capacity or seats entitlement that bounds the workload.
 * - `metric`: `instances` (default: live seat/capacity leases of the feature), `reported` (the
 *   last in_use reported through Scale) or `rate` (units per second of `rateFeature`, a quota;
 *   default `feature`, from the forecast).
 * - `targetPerReplica` (default 1): demand one replica absorbs (the HPA target, AverageValue).
 * - `unitsPerReplica` (default 1): licensed units each replica holds.
 *
 * The metric is capped at floor(capacity / unitsPerReplica) × targetPerReplica, so the HPA's
 * desired replicas ceil(metric / target) never exceed what the licence holds. IsActive is false
 * when the licence is suspended or outside its validity window, when it holds no capacity, or
 * when there is no demand; then GetMetrics reports 0.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import type * as grpc from "@grpc/grpc-js";
import {
  ExternalScaler,
  GetMetricSpecResponseSchema,
  GetMetricsRequestSchema,
  GetMetricsResponseSchema,
  IsActiveResponseSchema,
  ScaledObjectRefSchema,
  type ScaledObjectRef,
} from "../gen/externalscaler/externalscaler_pb.js";
import { Reason } from "../gen/licensing/v1/licensing_pb.js";
import type { Credential, IdentityResolver } from "../licensing/identity.js";
import type { LicenseSnapshot } from "../licensing/snapshot.js";
import { decodeRequest, invalidArgument, toGrpcStatus, unauthenticated, unavailable } from "../server/errors.js";
import type { RawServiceMount } from "../server/grpc-server.js";
import type { Forecast } from "./forecast.js";

export type KedaMetric = "instances" | "reported" | "rate";
const METRICS: readonly KedaMetric[] = ["instances", "reported", "rate"];

export interface KedaScalerDeps {
  readonly resolveIdentity: IdentityResolver;
  /** The licence snapshot with the capacity Scale holds (e.g. the licences cache over loadScaledLicenseSnapshot). */
  readonly snapshot: (licenseId: string) => Promise<LicenseSnapshot | undefined>;
  /** Live seat/capacity leases of a feature (count of unexpired seat_leases). */
  readonly liveInstances: (licenseId: string, feature: string, nowMs: number) => Promise<number>;
  readonly forecast?: Forecast;
  /** Epoch ms. */
  readonly now: () => number;
  /** How often an open StreamIsActive re-evaluates, ms. Default 5 000. */
  readonly streamIntervalMs?: number;
  /** Most StreamIsActive streams open at once; more are refused RESOURCE_EXHAUSTED. Default 1 000. */
  readonly maxStreams?: number;
}

/** What one ScaledObject's licence says now. */
export interface KedaEvaluation {
  readonly active: boolean;
  /** Demand after the cap; what GetMetrics reports. */
  readonly metricValue: number;
  readonly targetPerReplica: number;
  /** floor(capacity / unitsPerReplica): the most replicas the licence allows. */
  readonly maxReplicas: number;
  readonly metricName: string;
}

export interface KedaScaler extends RawServiceMount {
  /** The evaluation behind every RPC (exposed for tests and the CLI). */
  evaluate(ref: ScaledObjectRef): Promise<KedaEvaluation>;
  /** A grpc-js definition moving raw bytes, for `server.addService(definition, implementation)`. */
  readonly definition: grpc.ServiceDefinition;
  stats(): { readonly openStreams: number; readonly refusedStreams: number; readonly evaluations: number };
}

interface Parsed {
  readonly credential: Credential;
  readonly serviceToken: string | undefined;
  readonly feature: string;
  readonly metric: KedaMetric;
  readonly rateFeature: string;
  readonly targetPerReplica: number;
  readonly unitsPerReplica: number;
}

const INACTIVE_STATUSES = new Set<LicenseSnapshot["status"]>(["suspended"]);

export function createKedaScaler(deps: KedaScalerDeps): KedaScaler {
  const streamIntervalMs = deps.streamIntervalMs ?? 5_000;
  const maxStreams = deps.maxStreams ?? 1_000;
  const streams = new Map<grpc.ServerWritableStream<Buffer, Uint8Array>, NodeJS.Timeout>();
  let closed = false;
  let refusedStreams = 0;
  let evaluations = 0;

  async function evaluate(ref: ScaledObjectRef): Promise<KedaEvaluation> {
    evaluations += 1;
    const p = parseMetadata(ref.scalerMetadata);
    const nowMs = deps.now();
    const headers = {
      header: (name: string): string | undefined =>
        name === "authorization" && p.serviceToken !== undefined ? `Bearer ${p.serviceToken}` : undefined,
    };
    const resolution = await deps.resolveIdentity(p.credential, headers, nowMs);
    if (resolution.denied !== undefined) {
      if (resolution.denied.reason === Reason.BACKEND_UNAVAILABLE) throw unavailable(resolution.denied.message);
      throw unauthenticated(`scalerMetadata credential refused: ${resolution.denied.message}`);
    }
    const licenseId = resolution.identity.licenseId;
    if (licenseId === undefined) throw invalidArgument("scalerMetadata", "the credential must name a licence (not an account)");
    const metricName = metricNameOf(p);
    const snapshot = await deps.snapshot(licenseId);
    if (snapshot === undefined) throw unauthenticated(`scalerMetadata credential refused: licence ${licenseId} does not exist`);
    const rule = snapshot.entitlements.get(p.feature)?.find((r) => r.kind === "capacity" || r.kind === "seats");
    if (rule === undefined) throw invalidArgument("scalerMetadata.feature", `"${p.feature}" is not a capacity or seats entitlement of licence ${licenseId}`);
    const maxReplicas = Math.floor((rule.limit ?? 0) / p.unitsPerReplica);
    const base = { targetPerReplica: p.targetPerReplica, maxReplicas, metricName };
    if (!licenceInForce(snapshot, nowMs) || maxReplicas <= 0) return { ...base, active: false, metricValue: 0 };
    const demand = await demandOf(p, licenseId, nowMs);
    const metricValue = Math.min(demand, maxReplicas * p.targetPerReplica);
    return { ...base, active: metricValue > 0, metricValue };
  }

  async function demandOf(p: Parsed, licenseId: string, nowMs: number): Promise<number> {
    switch (p.metric) {
      case "instances":
        return deps.liveInstances(licenseId, p.feature, nowMs);
      case "reported":
        return deps.forecast?.lastUtilization(licenseId, p.feature)?.inUse ?? 0;
      case "rate":
        return Math.max(0, deps.forecast?.ratePerSecond(licenseId, p.rateFeature, nowMs) ?? 0);
    }
  }

  function unary<T>(decode: (bytes: Buffer) => T, answer: (request: T) => Promise<Uint8Array>) {
    return (call: grpc.ServerUnaryCall<Buffer, Uint8Array>, callback: grpc.sendUnaryData<Uint8Array>): void => {
      let request: T;
      try {
        request = decode(call.request);
      } catch (err) {
        callback(toGrpcStatus(err));
        return;
      }
      answer(request).then(
        (bytes) => callback(null, bytes),
        (err: unknown) => callback(toGrpcStatus(err)),
      );
    };
  }

  const isActive = unary(
    (bytes) => decodeRequest(ScaledObjectRefSchema, bytes),
    async (ref) => encodeActive((await evaluate(ref)).active),
  );
  const getMetricSpec = unary(
    (bytes) => decodeRequest(ScaledObjectRefSchema, bytes),
    async (ref) => {
      const p = parseMetadata(ref.scalerMetadata);
      const target = p.targetPerReplica;
      return toBinary(
        GetMetricSpecResponseSchema,
        create(GetMetricSpecResponseSchema, {
          metricSpecs: [{ metricName: metricNameOf(p), targetSize: BigInt(Math.max(1, Math.round(target))), targetSizeFloat: target }],
        }),
      );
    },
  );
  const getMetrics = unary(
    (bytes) => decodeRequest(GetMetricsRequestSchema, bytes),
    async (req) => {
      const evaluation = await evaluate(req.scaledObjectRef ?? create(ScaledObjectRefSchema));
      const value = evaluation.metricValue;
      return toBinary(
        GetMetricsResponseSchema,
        create(GetMetricsResponseSchema, {
          metricValues: [
            { metricName: req.metricName || evaluation.metricName, metricValue: BigInt(Math.ceil(value)), metricValueFloat: value },
          ],
        }),
      );
    },
  );

  function streamIsActive(call: grpc.ServerWritableStream<Buffer, Uint8Array>): void {
    let ref: ScaledObjectRef;
    try {
      ref = decodeRequest(ScaledObjectRefSchema, call.request);
      parseMetadata(ref.scalerMetadata);
    } catch (err) {
      call.emit("error", toGrpcStatus(err));
      return;
    }
    if (closed) {
      call.end();
      return;
    }
    if (streams.size >= maxStreams) {
      refusedStreams += 1;
      call.emit("error", toGrpcStatus(new ConnectError(`at most ${maxStreams} StreamIsActive streams are served at once`, Code.ResourceExhausted)));
      return;
    }
    let last: boolean | undefined;
    const push = (): void => {
      evaluate(ref).then(
        (evaluation) => {
          if (!streams.has(call) || evaluation.active === last) return;
          last = evaluation.active;
          call.write(encodeActive(evaluation.active));
        },
        (err: unknown) => {
          if (!streams.has(call)) return;
          stop(call);
          call.emit("error", toGrpcStatus(err));
        },
      );
    };
    const timer = setInterval(push, streamIntervalMs);
    timer.unref();
    streams.set(call, timer);
    call.once("cancelled", () => stop(call));
    push();
  }

  function stop(call: grpc.ServerWritableStream<Buffer, Uint8Array>): void {
    const timer = streams.get(call);
    if (timer !== undefined) clearInterval(timer);
    streams.delete(call);
  }

  return {
    service: ExternalScaler,
    implementation: { IsActive: isActive, StreamIsActive: streamIsActive, GetMetricSpec: getMetricSpec, GetMetrics: getMetrics },
    definition: rawDefinition(),
    evaluate,
    close() {
      closed = true;
      for (const call of [...streams.keys()]) {
        stop(call);
        call.end();
      }
    },
    stats: () => ({ openStreams: streams.size, refusedStreams, evaluations }),
  };
}

function encodeActive(result: boolean): Uint8Array {
  return toBinary(IsActiveResponseSchema, create(IsActiveResponseSchema, { result }));
}

function licenceInForce(snapshot: LicenseSnapshot, nowMs: number): boolean {
  if (INACTIVE_STATUSES.has(snapshot.status)) return false;
  if (snapshot.validFromMs !== null && nowMs < snapshot.validFromMs) return false;
  return snapshot.validUntilMs === null || nowMs < snapshot.validUntilMs;
}

/** `licensing-<metric>-<feature>`, in the lower-case alphabet Kubernetes metric names accept. */
function metricNameOf(p: Parsed): string {
  const feature = p.metric === "rate" ? p.rateFeature : p.feature;
  return `licensing-${p.metric}-${feature.toLowerCase().replace(/[^a-z0-9-]+/g, "-")}`.slice(0, 200);
}

/** The trigger metadata, validated; INVALID_ARGUMENT naming the key otherwise. */
export function parseMetadata(metadata: Readonly<Record<string, string>>): Parsed {
  const apiKey = metadata.apiKey ?? "";
  const licenseId = metadata.licenseId ?? "";
  if ((apiKey === "") === (licenseId === "")) {
    throw invalidArgument("scalerMetadata", "set exactly one of apiKey and licenseId (with serviceToken)");
  }
  const credential: Credential = apiKey !== "" ? { case: "apiKey", value: apiKey } : { case: "licenseId", value: licenseId };
  const feature = metadata.feature ?? "";
  if (feature === "") throw invalidArgument("scalerMetadata.feature", "is required");
  const metric = (metadata.metric ?? "instances") as KedaMetric;
  if (!METRICS.includes(metric)) throw invalidArgument("scalerMetadata.metric", `must be one of: ${METRICS.join(", ")}`);
  return {
    credential,
    serviceToken: metadata.serviceToken === undefined || metadata.serviceToken === "" ? undefined : metadata.serviceToken,
    feature,
    metric,
    rateFeature: metadata.rateFeature ?? feature,
    targetPerReplica: positive(metadata, "targetPerReplica"),
    unitsPerReplica: positive(metadata, "unitsPerReplica"),
  };
}

function positive(metadata: Readonly<Record<string, string>>, key: string): number {
  const raw = metadata[key];
  if (raw === undefined || raw === "") return 1;
  const value = Number(raw);
  if (!(Number.isFinite(value) && value > 0)) throw invalidArgument(`scalerMetadata.${key}`, "must be a number > 0");
  return value;
}

function rawDefinition(): grpc.ServiceDefinition {
  const definition: Record<string, grpc.MethodDefinition<Buffer, Uint8Array>> = {};
  for (const method of ExternalScaler.methods) {
    definition[method.name] = {
      path: `/${ExternalScaler.typeName}/${method.name}`,
      requestStream: false,
      responseStream: method.methodKind === "server_streaming",
      requestSerialize: (bytes) => bytes,
      requestDeserialize: (bytes) => bytes,
      responseSerialize: (bytes) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength),
      responseDeserialize: (bytes) => bytes,
      originalName: method.localName,
    };
  }
  return definition;
}
