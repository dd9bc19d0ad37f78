import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { DurationSchema, TimestampSchema } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import {
  CheckRequestSchema,
  CheckResponseSchema,
  Decision,
  Reason,
  type CheckRequest,
  type CheckResponse,
} from "../../src/gen/licensing/v1/licensing_pb.js";
import { createCheckAnswerEncoder, decodeCheckRequest, encodeCheckResponse } from "../../src/licensing/check-codec.js";
import { createResponseBuilder, type CheckAnswer } from "../../src/licensing/check-response.js";
import type { LimitStatus } from "../../src/licensing/decide.js";
import type { LicenseSnapshot } from "../../src/licensing/snapshot.js";

/** A small deterministic generator (xorshift), so failures reproduce. */
function random(seed: number) {
  let state = seed >>> 0 || 1;
  const next = () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 0x1_0000_0000;
  };
  const pick = <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)] as T;
  return { next, pick };
}

const STRINGS = ["", "a", "reports.export", "lk_live_AbC123", "ünïcödé ✓", "\ufeffbom", "\ud800lone", "x".repeat(300), "日本語"];
const INT64S = [0n, 1n, 127n, 128n, 300n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 63n - 1n, -1n, -(2n ** 63n)];

function randomResponse(r: ReturnType<typeof random>): CheckResponse {
  const maybe = <T>(value: () => T): T | undefined => (r.next() < 0.5 ? value() : undefined);
  const seconds = () => r.pick([0n, 1n, 59n, 1_764_000_000n, -5n, 2n ** 40n]);
  const nanos = () => r.pick([0, 1, 999_999_999, 500_000_000, -1]);
  return create(CheckResponseSchema, {
    decision: r.pick([Decision.UNSPECIFIED, Decision.ALLOW, Decision.DENY]),
    reason: r.pick([Reason.UNSPECIFIED, Reason.OK, Reason.QUOTA_EXHAUSTED, Reason.CREDENTIAL_REVOKED]),
    message: r.pick(STRINGS),
    licenseId: r.pick(STRINGS),
    limit: maybe(() => r.pick(INT64S)),
    remaining: maybe(() => r.pick(INT64S)),
    resetsAt: maybe(() => create(TimestampSchema, { seconds: seconds(), nanos: nanos() })),
    retryAfter: maybe(() => create(DurationSchema, { seconds: seconds(), nanos: nanos() })),
    cacheTtl: maybe(() => create(DurationSchema, { seconds: seconds(), nanos: nanos() })),
    decisionId: r.pick(STRINGS),
    policyVersion: r.pick(INT64S),
    depletesAt: maybe(() => create(TimestampSchema, { seconds: seconds(), nanos: nanos() })),
    plan: r.pick(STRINGS),
    accountId: r.pick(STRINGS),
  });
}

function randomRequest(r: ReturnType<typeof random>): CheckRequest {
  const credentialCase = r.pick(["apiKey", "bearerToken", "licenseToken", "licenseId", undefined] as const);
  const attributes: Record<string, string> = {};
  const count = Math.floor(r.next() * 4);
  for (let i = 0; i < count; i++) attributes[r.pick(STRINGS)] = r.pick(STRINGS);
  return create(CheckRequestSchema, {
    credential: credentialCase === undefined ? { case: undefined } : { case: credentialCase, value: r.pick(STRINGS) },
    feature: r.pick(STRINGS),
    quantity: r.next() < 0.5 ? r.pick(INT64S) : undefined,
    environment: r.pick(STRINGS),
    operationId: r.pick(STRINGS),
    instanceId: r.pick(STRINGS),
    attributes,
    dryRun: r.next() < 0.5,
  });
}

describe("the specialized Check codec", () => {
  it("encodes 5,000 generated CheckResponses byte for byte as protobuf-es does", () => {
    const r = random(42);
    for (let i = 0; i < 5_000; i++) {
      const message = randomResponse(r);
      expect(Buffer.from(encodeCheckResponse(message)).toString("hex")).toBe(Buffer.from(toBinary(CheckResponseSchema, message)).toString("hex"));
    }
  });

  it("decodes 5,000 generated CheckRequests to what protobuf-es decodes", () => {
    const r = random(7);
    for (let i = 0; i < 5_000; i++) {
      const bytes = Buffer.from(toBinary(CheckRequestSchema, randomRequest(r)));
      expect(decodeCheckRequest(bytes)).toEqual(fromBinary(CheckRequestSchema, bytes));
    }
  });

  it("skips unknown fields of every wire type, as a newer client may send them", () => {
    const known = Buffer.from(toBinary(CheckRequestSchema, create(CheckRequestSchema, { feature: "f", dryRun: true })));
    const unknown = Buffer.from([0xa8, 0x01, 0x05, 0xb2, 0x01, 0x02, 0x61, 0x62, 0xbd, 0x01, 1, 2, 3, 4, 0xb9, 0x01, 1, 2, 3, 4, 5, 6, 7, 8]);
    const decoded = decodeCheckRequest(Buffer.concat([unknown, known]));
    expect(decoded.feature).toBe("f");
    expect(decoded.dryRun).toBe(true);
  });

  it.each([
    ["a truncated varint", [0x30, 0xff]],
    ["a string longer than the message", [0x2a, 0x05, 0x61]],
    ["field number 0", [0x00, 0x01]],
    ["wire type 7", [0x2f]],
    ["a varint of 11 bytes", [0x30, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]],
    ["invalid UTF-8 in a string (a lone continuation byte)", [0x2a, 0x02, 0x61, 0x80]],
    ["invalid UTF-8 in a credential (a truncated sequence)", [0x0a, 0x02, 0xe2, 0x82]],
    ["invalid UTF-8 in an attribute value (an overlong encoding)", [0x52, 0x06, 0x0a, 0x00, 0x12, 0x02, 0xc0, 0xaf]],
  ])("rejects %s, as protobuf-es does", (_name, bytes) => {
    expect(() => fromBinary(CheckRequestSchema, Buffer.from(bytes))).toThrow();
    expect(() => decodeCheckRequest(Buffer.from(bytes))).toThrow();
  });

  it("keeps an attribute named __proto__ as an own entry, as protobuf-es does", () => {
    const message = create(CheckRequestSchema, { feature: "f", attributes: { plan: "pro" } });
    Object.defineProperty(message.attributes, "__proto__", { value: "x", enumerable: true, writable: true, configurable: true });
    const bytes = Buffer.from(toBinary(CheckRequestSchema, message));
    const decoded = decodeCheckRequest(bytes);
    expect(Object.keys(decoded.attributes)).toEqual(Object.keys(fromBinary(CheckRequestSchema, bytes).attributes));
    expect(Object.hasOwn(decoded.attributes, "__proto__")).toBe(true);
    expect(Object.getPrototypeOf(decoded.attributes)).toBe(Object.prototype);
  });

  it("accepts a U+FFFD that was sent as valid UTF-8", () => {
    const bytes = Buffer.from(toBinary(CheckRequestSchema, create(CheckRequestSchema, { feature: "a\uFFFDb" })));
    expect(decodeCheckRequest(bytes)).toEqual(fromBinary(CheckRequestSchema, bytes));
    expect(decodeCheckRequest(bytes).feature).toBe("a\uFFFDb");
  });
});

/** Numbers as the engine makes them, and some it never makes (the encoder must still be exact). */
const PLAIN = [0, 1, 127, 128, 999, 1000, 1001, 16_383, 16_384, 2 ** 31, 2 ** 32 + 5, 1_800_000_000_123, Number.MAX_SAFE_INTEGER];
const ODD = [-1, -1000, 1.5, 2 ** 53, 2 ** 60];

/** An active licence without entitlements: the encoder reads only its ids, plan and version. */
function snapshotOf(fields: Pick<LicenseSnapshot, "licenseId" | "accountId" | "plan" | "version">): LicenseSnapshot {
  return { ...fields, status: "active", validFromMs: null, validUntilMs: null, environments: new Set(), entitlements: new Map() };
}

function randomAnswer(r: ReturnType<typeof random>): CheckAnswer {
  const number = () => (r.next() < 0.9 ? r.pick(PLAIN) : r.pick(ODD));
  const maybeNull = () => (r.next() < 0.3 ? null : number());
  const snapshot =
    r.next() < 0.2
      ? undefined
      : snapshotOf({ licenseId: r.pick(STRINGS), accountId: r.pick(STRINGS), plan: r.pick(STRINGS), version: r.next() < 0.2 ? 0 : number() });
  const status: LimitStatus | undefined =
    r.next() < 0.3 ? undefined : { limit: number(), remaining: number(), resetsAtMs: maybeNull(), retryAtMs: maybeNull() };
  const allow = r.next() < 0.5;
  return {
    decisionId: r.pick(STRINGS),
    verdict: { allow, reason: r.pick([Reason.UNSPECIFIED, Reason.OK, Reason.QUOTA_EXHAUSTED, Reason.RATE_LIMITED]), message: r.pick(STRINGS) },
    snapshot,
    status,
    consumed: r.next() < 0.5,
    nowMs: r.pick([0, 1_700_000_000_000, 1_800_000_000_000, 1_700_000_000_000.5]),
    depletesAtMs: r.next() < 0.5 ? undefined : number(),
  };
}

describe("the gRPC port's answer encoder", () => {
  it.each([0, 1, 1500, 30_000])("writes 5,000 generated answers byte for byte as the CheckResponse built from them (cache TTL %d ms)", (ttlMs) => {
    const r = random(ttlMs + 11);
    const encode = createCheckAnswerEncoder(ttlMs);
    const respond = createResponseBuilder(ttlMs);
    for (let i = 0; i < 5_000; i++) {
      const answer = randomAnswer(r);
      let expected: string;
      try {
        expected = Buffer.from(toBinary(CheckResponseSchema, respond(answer))).toString("hex");
      } catch (err) {
        // A number BigInt cannot take (1.5, say) fails the message too: the same error.
        expect(() => encode(answer)).toThrow((err as Error).message);
        continue;
      }
      expect(Buffer.from(encode(answer)).toString("hex")).toBe(expected);
    }
  });

  it("writes an allowed quota answer without the message, as the engine makes it", () => {
    const answer: CheckAnswer = {
      decisionId: "0b6c5a56-3f39-4d8e-9a41-6f0c2d7e8b15",
      verdict: { allow: true, reason: Reason.OK, message: "allowed" },
      snapshot: snapshotOf({ licenseId: "lic-1", accountId: "acct-1", plan: "pro", version: 3 }),
      status: { limit: 1_000_000, remaining: 999_000, resetsAtMs: 1_800_000_000_000, retryAtMs: null },
      consumed: true,
      nowMs: 1_700_000_000_000,
      depletesAtMs: 1_750_000_000_250,
    };
    const decoded = fromBinary(CheckResponseSchema, createCheckAnswerEncoder(5000)(answer));
    expect(decoded).toMatchObject({
      decision: Decision.ALLOW,
      reason: Reason.OK,
      message: "allowed",
      licenseId: "lic-1",
      limit: 1_000_000n,
      remaining: 999_000n,
      resetsAt: { seconds: 1_800_000_000n, nanos: 0 },
      cacheTtl: { seconds: 0n, nanos: 0 },
      decisionId: "0b6c5a56-3f39-4d8e-9a41-6f0c2d7e8b15",
      policyVersion: 3n,
      depletesAt: { seconds: 1_750_000_000n, nanos: 250_000_000 },
      plan: "pro",
      accountId: "acct-1",
    });
    expect(decoded.retryAfter).toBeUndefined();
  });
});
