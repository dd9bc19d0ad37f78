/**
 * What the bench asks: the rules document it applies (many licences and keys), and the
 * pre-encoded gRPC request bodies h2load sends (one body per h2load process).
 *
 * A gRPC request body is one length-prefixed message: 1 flag byte (0, not compressed), the
 * message length as a 4-byte big-endian integer, then the protobuf bytes.
 */
import { create, toBinary, type DescMessage, type MessageInitShape } from "@bufbuild/protobuf";
import { CheckRequestSchema as EnvoyCheckRequestSchema } from "../src/gen/envoy/service/auth/v3/external_auth_pb.js";
import { CheckRequestSchema, ScaleRequestSchema } from "../src/gen/licensing/v1/licensing_pb.js";

/** Feature keys of the bench plan, one per entitlement kind measured. */
export const FEATURES = {
  boolean: "bench.flag",
  quota: "bench.calls",
  rate: "bench.rate",
  capacity: "bench.nodes",
  /** Named by no plan: every Check for it is denied FEATURE_NOT_ENTITLED. */
  missing: "bench.missing",
} as const;

export type CheckKind = "boolean" | "quota" | "rate";

export interface WorkloadShape {
  readonly licences: number;
  readonly keys: number;
}

export const LICENCE_PREFIX = "bench-lic-";
export const KEY_PREFIX = "bench-key-";

function pad(n: number): string {
  return String(n).padStart(4, "0");
}

export function licenceId(i: number): string {
  return `${LICENCE_PREFIX}${pad(i)}`;
}

export function keyId(i: number): string {
  return `${KEY_PREFIX}${pad(i)}`;
}

/**
 * The rules document (JSON, which the YAML reader accepts): one account per licence, every
 * licence on the "bench" plan, keys spread round-robin over the licences. Limits are far above
 * what a run can use, so allowed stays allowed: the quota is 10^12 a month (leases do the work),
 * the rate 10^7 per second (the bucket is checked on every call but never empties).
 */
export function benchRules(shape: WorkloadShape): string {
  const accounts = [];
  const licenses = [];
  for (let i = 0; i < shape.licences; i++) {
    accounts.push({ id: `bench-acct-${pad(i)}`, name: `Bench account ${i}` });
    licenses.push({ id: licenceId(i), account: `bench-acct-${pad(i)}`, plan: "bench" });
  }
  const apiKeys = [];
  for (let i = 0; i < shape.keys; i++) apiKeys.push({ id: keyId(i), license: licenceId(i % shape.licences) });
  const document = {
    version: 1,
    accounts,
    plans: [
      {
        name: "bench",
        description: "Load-test plan: a flag, a large monthly quota, a high rate limit and scalable capacity",
        entitlements: [
          { feature: FEATURES.boolean, kind: "boolean" },
          { feature: FEATURES.quota, kind: "quota", limit: 1_000_000_000_000, period: "month" },
          { feature: FEATURES.rate, kind: "rate", limit: 10_000_000, period: "second" },
          {
            feature: FEATURES.capacity,
            kind: "capacity",
            limit: 4,
            unit_price: 35,
            scaling: { min: 1, max: 1_000_000, step: 1, target_utilization: 0.75 },
          },
        ],
      },
    ],
    licenses,
    api_keys: apiKeys,
  };
  return `${JSON.stringify(document, null, 1)}\n`;
}

/** A message as one gRPC length-prefixed frame. */
export function grpcFrame<T extends DescMessage>(schema: T, message: MessageInitShape<T>): Buffer {
  const bytes = toBinary(schema, create(schema, message));
  const frame = Buffer.alloc(5 + bytes.length);
  frame.writeUInt8(0, 0);
  frame.writeUInt32BE(bytes.length, 1);
  frame.set(bytes, 5);
  return frame;
}

/** One request body of a mix, and what the service should answer to it. */
export interface MixBody {
  /** Short label, e.g. "quota key 0197". */
  readonly label: string;
  /** The whole HTTP/2 request body (one gRPC frame). */
  readonly frame: Buffer;
  /** The message alone, for sampling through a gRPC client. */
  readonly message: Buffer;
  readonly expectAllowed: boolean;
}

function body<T extends DescMessage>(label: string, schema: T, init: MessageInitShape<T>, expectAllowed: boolean): MixBody {
  const frame = grpcFrame(schema, init);
  return { label, frame, message: frame.subarray(5), expectAllowed };
}

/**
 * Picks `count` keys spread over the key space with a stride of 77: keys are assigned to
 * licences round-robin, so with 200 licences (77 and 200 coprime) up to 200 picks land on as
 * many different licences.
 */
export function spreadKeys(secrets: readonly string[], count: number, offset: number): string[] {
  const picked: string[] = [];
  for (let i = 0; i < count; i++) {
    const secret = secrets[(offset + i * 77) % secrets.length];
    if (secret === undefined) throw new Error("no API keys to send");
    picked.push(secret);
  }
  return picked;
}

/**
 * The bodies of a Check mix: `allowed` bodies on different keys for the kind's feature, and
 * `denied` bodies asking for a feature no plan has (FEATURE_NOT_ENTITLED).
 */
export function checkMix(kind: CheckKind, secrets: readonly string[], allowed: number, denied: number): MixBody[] {
  const feature = FEATURES[kind];
  const keys = spreadKeys(secrets, allowed + denied, kind === "boolean" ? 0 : kind === "quota" ? 300 : 600);
  return keys.map((apiKey, i) =>
    i < allowed
      ? body(`${kind} allowed #${i}`, CheckRequestSchema, { credential: { case: "apiKey", value: apiKey }, feature }, true)
      : body(`${kind} denied #${i - allowed}`, CheckRequestSchema, { credential: { case: "apiKey", value: apiKey }, feature: FEATURES.missing }, false),
  );
}

/**
 * Envoy ext_authz CheckRequests as Envoy sends them for an HTTP request: the request's headers
 * (lower-case, pseudo-headers included), the API key in x-api-key, the feature in the route's
 * context_extensions.
 */
export function extAuthzMix(secrets: readonly string[], allowed: number, denied: number): MixBody[] {
  const keys = spreadKeys(secrets, allowed + denied, 900);
  return keys.map((apiKey, i) => {
    const feature = i < allowed ? FEATURES.boolean : FEATURES.missing;
    const init: MessageInitShape<typeof EnvoyCheckRequestSchema> = {
      attributes: {
        request: {
          http: {
            id: `1000${i}`,
            method: "GET",
            path: "/v1/reports?page=2",
            host: "api.example.com",
            scheme: "https",
            protocol: "HTTP/1.1",
            headers: {
              ":authority": "api.example.com",
              ":method": "GET",
              ":path": "/v1/reports?page=2",
              ":scheme": "https",
              accept: "application/json",
              "user-agent": "curl/8.5.0",
              "x-forwarded-proto": "https",
              "x-request-id": "8f1c2a4e-5b6d-4e7f-9a0b-1c2d3e4f5a6b",
              "x-api-key": apiKey,
            },
          },
        },
        contextExtensions: { feature },
      },
    };
    return body(`ext_authz ${i < allowed ? "allowed" : "denied"} #${i}`, EnvoyCheckRequestSchema, init, i < allowed);
  });
}

/** Scale by observed utilization (no request_id: every call is a fresh decision). */
export function scaleMix(secrets: readonly string[], count: number): MixBody[] {
  return spreadKeys(secrets, count, 450).map((apiKey, i) =>
    body(`scale #${i}`, ScaleRequestSchema, {
      credential: { case: "apiKey", value: apiKey },
      feature: FEATURES.capacity,
      target: { case: "observed", value: { inUse: 3n, capacity: 4n } },
      reason: "bench",
    }, true),
  );
}
