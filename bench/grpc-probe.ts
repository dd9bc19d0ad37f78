/**
 * A gRPC client for what h2load cannot see: readiness (grpc.health.v1), whether an RPC is
 * implemented at all, and what the service actually decides for each body of a mix (h2load
 * only sees HTTP 200; the decision and grpc-status are inside).
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { CheckResponseSchema as EnvoyCheckResponseSchema } from "../src/gen/envoy/service/auth/v3/external_auth_pb.js";
import { HealthCheckRequestSchema, HealthCheckResponse_ServingStatus, HealthCheckResponseSchema } from "../src/gen/grpc/health/v1/health_pb.js";
import { CheckResponseSchema, Decision, Reason } from "../src/gen/licensing/v1/licensing_pb.js";
import type { MixBody } from "./workload.js";

export const PATHS = {
  check: "/licensing.v1.LicensingService/Check",
  report: "/licensing.v1.LicensingService/Report",
  scale: "/licensing.v1.LicensingService/Scale",
  extAuthz: "/envoy.service.auth.v3.Authorization/Check",
  health: "/grpc.health.v1.Health/Check",
} as const;

/** A failed call: its gRPC status code and details. */
export class CallError extends Error {
  constructor(
    readonly code: grpc.status,
    readonly details: string,
  ) {
    super(`${grpc.status[code]}: ${details}`);
  }
}

function identity(bytes: Buffer): Buffer {
  return bytes;
}

export class ProbeClient {
  readonly #client: grpc.Client;

  constructor(port: number) {
    this.#client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  }

  /** One unary call with raw bytes; rejects with CallError. */
  call(path: string, message: Uint8Array, timeoutMs = 10_000): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      this.#client.makeUnaryRequest(
        path,
        identity,
        identity,
        Buffer.from(message),
        new grpc.Metadata(),
        { deadline: Date.now() + timeoutMs },
        (error, value) => {
          if (error) reject(new CallError(error.code, error.details));
          else resolve(value ?? Buffer.alloc(0));
        },
      );
    });
  }

  /** Whether the server reports SERVING for the whole server (""). False while starting or on error. */
  async serving(): Promise<boolean> {
    try {
      const answer = await this.call(PATHS.health, toBinary(HealthCheckRequestSchema, create(HealthCheckRequestSchema, { service: "" })), 2000);
      return fromBinary(HealthCheckResponseSchema, answer).status === HealthCheckResponse_ServingStatus.SERVING;
    } catch {
      // Not listening yet, or not serving: the caller polls again.
      return false;
    }
  }

  close(): void {
    this.#client.close();
  }
}

/** What the service answered to one body of a mix. */
export interface SampledBody {
  readonly label: string;
  readonly expectAllowed: boolean;
  readonly allowed: boolean;
  /** The decision's reason, or the Envoy status code (every sampled call had grpc-status OK). */
  readonly answer: string;
}

export type ResponseKind = "check" | "extAuthz";

/** Sends each body once and reports what was decided; rejects on an RPC error. */
export async function sampleMix(client: ProbeClient, path: string, kind: ResponseKind, bodies: readonly MixBody[]): Promise<SampledBody[]> {
  const sampled: SampledBody[] = [];
  for (const body of bodies) {
    const answer = await client.call(path, body.message);
    if (kind === "check") {
      const response = fromBinary(CheckResponseSchema, answer);
      sampled.push({
        label: body.label,
        expectAllowed: body.expectAllowed,
        allowed: response.decision === Decision.ALLOW,
        answer: `reason ${Reason[response.reason]}`,
      });
    } else {
      const response = fromBinary(EnvoyCheckResponseSchema, answer);
      const code = response.status?.code ?? 0;
      sampled.push({ label: body.label, expectAllowed: body.expectAllowed, allowed: code === 0, answer: `Envoy status ${code}` });
    }
  }
  return sampled;
}

/**
 * Whether `path` is implemented: any answer or an error other than UNIMPLEMENTED counts as
 * implemented (an empty request may well be INVALID_ARGUMENT).
 */
export async function isImplemented(client: ProbeClient, path: string): Promise<boolean> {
  try {
    await client.call(path, new Uint8Array(0));
    return true;
  } catch (error) {
    if (error instanceof CallError) return error.code !== grpc.status.UNIMPLEMENTED;
    throw error;
  }
}
