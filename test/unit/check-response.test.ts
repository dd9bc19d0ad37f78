import { create, toBinary } from "@bufbuild/protobuf";
import { DurationSchema, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { CheckResponseSchema, Reason } from "../../src/gen/licensing/v1/licensing_pb.js";
import { createResponseBuilder, durationOfMs, timestampOfMs } from "../../src/licensing/check-response.js";
import type { LimitStatus } from "../../src/licensing/decide.js";
import type { LicenseSnapshot } from "../../src/licensing/snapshot.js";

const TIMES = [0, 1, 999, 1000, 1001, 1.5, 999.999, -1, -999, -1000, -1500.25, 1_800_000_000_123, Number.MAX_SAFE_INTEGER, -8.64e15];

describe("response time literals", () => {
  it.each(TIMES)("timestampOfMs(%d) equals timestampFromMs", (ms) => {
    expect(timestampOfMs(ms)).toStrictEqual(timestampFromMs(ms));
  });

  it.each(TIMES)("durationOfMs(%d) is create()'s Duration of the whole milliseconds, at least 0", (ms) => {
    const whole = Math.max(0, Math.ceil(ms));
    const expected = create(DurationSchema, { seconds: BigInt(Math.floor(whole / 1000)), nanos: (whole % 1000) * 1_000_000 });
    expect(durationOfMs(ms)).toStrictEqual(expected);
  });
});

describe("createResponseBuilder", () => {
  const ALLOWED = { allow: true, reason: Reason.OK, message: "allowed" };
  const snapshot = (licenseId: string, version: number): LicenseSnapshot => ({
    licenseId,
    accountId: `acct-${licenseId}`,
    plan: "pro",
    status: "active",
    validFromMs: null,
    validUntilMs: null,
    environments: new Set(),
    version,
    entitlements: new Map(),
  });
  const status = (limit: number, remaining: number, resetsAtMs: number | null): LimitStatus => ({ limit, remaining, resetsAtMs, retryAtMs: null });

  it("answers each input with its own version, limit and period end, whatever came before", () => {
    const respond = createResponseBuilder(30_000);
    // Alternating inputs defeat the builder's one-entry memories; repeats hit them.
    const inputs = [
      [snapshot("a", 1), status(100, 10, 1_800_000_000_000)],
      [snapshot("a", 1), status(100, 9, 1_800_000_000_000)],
      [snapshot("b", 7), status(5, 5, 1_900_000_000_000)],
      [snapshot("a", 1), status(100, 8, null)],
      [snapshot("b", 2 ** 40), status(2 ** 53 - 1, 0, 1_800_000_000_000)],
      [snapshot("b", 7), status(5, 4, 1_900_000_000_000)],
    ] as const;
    for (const [snap, limits] of inputs) {
      const response = respond({ decisionId: "d", verdict: ALLOWED, snapshot: snap, status: limits, consumed: true, nowMs: 1_700_000_000_000 });
      expect(response.policyVersion).toBe(BigInt(snap.version));
      expect(response.limit).toBe(BigInt(limits.limit));
      expect(response.remaining).toBe(BigInt(limits.remaining));
      expect(response.resetsAt).toStrictEqual(limits.resetsAtMs === null ? undefined : timestampFromMs(limits.resetsAtMs));
    }
  });

  it("shares one frozen period end between answers of the same period, so no caller can change another's", () => {
    const respond = createResponseBuilder(30_000);
    const input = { decisionId: "d", verdict: ALLOWED, snapshot: snapshot("a", 1), status: status(100, 10, 1_800_000_000_000), consumed: true, nowMs: 1_700_000_000_000 };
    const first = respond(input).resetsAt;
    const second = respond(input).resetsAt;
    expect(second).toBe(first);
    expect(Object.isFrozen(first)).toBe(true);
    expect(() => {
      (first as { nanos: number }).nanos = 1;
    }).toThrow(TypeError);
    const response = respond(input);
    expect(toBinary(CheckResponseSchema, response)).toStrictEqual(toBinary(CheckResponseSchema, { ...response, resetsAt: timestampFromMs(1_800_000_000_000) }));
  });
});
