/**
 * Builds CheckResponses from decided Checks (`CheckAnswer`). The one place that knows how limits,
 * times and cache lifetimes appear on the wire; the gRPC port's encoder (check-codec.ts
 * `createCheckAnswerEncoder`) writes the same answer straight to bytes by these rules.
 */
import type { Duration, Timestamp } from "@bufbuild/protobuf/wkt";
import { Decision as WireDecision, type CheckResponse } from "../gen/licensing/v1/licensing_pb.js";
import type { LimitStatus, Verdict } from "./decide.js";
import type { LicenseSnapshot } from "./snapshot.js";

/**
 * A decided Check, before it is written: as a CheckResponse message (createResponseBuilder) or
 * straight as its bytes (check-codec.ts). What the operation cache keeps for retries, so a
 * retry gets the same answer, decision id included, whichever transport it comes by.
 */
export interface CheckAnswer {
  readonly decisionId: string;
  readonly verdict: Verdict;
  readonly snapshot: LicenseSnapshot | undefined;
  readonly status: LimitStatus | undefined;
  /** The decision consumed units (or holds a seat): the answer must not be reused. */
  readonly consumed: boolean;
  readonly nowMs: number;
  /** Forecast: when the binding limit runs out at the current rate, when known. */
  readonly depletesAtMs?: number | undefined;
}

/** `ms` rounded up to whole milliseconds, at least 0: how durations are written. */
export function wholeMs(ms: number): number {
  return Math.max(0, Math.ceil(ms));
}

/** A Duration of `ms` rounded up to whole milliseconds, at least 0. */
export function durationOfMs(ms: number): Duration {
  const whole = wholeMs(ms);
  // Literals as create() makes them, without its reflection: quota answers carry two or three.
  return { $typeName: "google.protobuf.Duration", seconds: BigInt(Math.floor(whole / 1000)), nanos: (whole % 1000) * 1_000_000 };
}

/** What timestampFromMs (@bufbuild/protobuf/wkt) returns, as a literal: nanos from 0, before 1970 too. */
export function timestampOfMs(ms: number): Timestamp {
  const seconds = Math.floor(ms / 1000);
  return { $typeName: "google.protobuf.Timestamp", seconds: BigInt(seconds), nanos: (ms - seconds * 1000) * 1_000_000 };
}

/**
 * How long the answer may be reused, in ms (written rounded up to whole ms, at least 0). 0 for
 * answers that consumed or that report a moving limit (a dry run of a quota), the configured TTL
 * for answers that depend only on the licence (boolean features, not entitled, suspended), and
 * at most the wait for denies that say when to retry.
 */
export function cacheTtlMsOf(answer: CheckAnswer, cacheTtlMs: number): number {
  if (answer.consumed) return 0;
  const retryAtMs = answer.status?.retryAtMs ?? null;
  if (retryAtMs !== null) return Math.min(cacheTtlMs, retryAtMs - answer.nowMs);
  if (answer.status !== undefined) return 0;
  return cacheTtlMs;
}

/** When a deny that says when to retry may be retried, in ms from now; undefined otherwise. */
export function retryAfterMsOf(answer: CheckAnswer): number | undefined {
  const retryAtMs = answer.status?.retryAtMs ?? null;
  return answer.verdict.allow || retryAtMs === null ? undefined : retryAtMs - answer.nowMs;
}

/**
 * `f` with a one-entry memory of its last argument. Answers on one replica repeat the same
 * policy version, limit and period end over and over; remembering the last one saves a BigInt
 * (and a Timestamp) per Check. Only for results nobody mutates: BigInts, frozen messages.
 */
function lastOne<T>(f: (n: number) => T): (n: number) => T {
  let lastIn = Number.NaN;
  let lastOut: T | undefined;
  return (n) => {
    if (n !== lastIn || lastOut === undefined) {
      lastOut = f(n);
      lastIn = n;
    }
    return lastOut;
  };
}

/** Returns a builder with the configured reuse lifetime (see cacheTtlMsOf). */
export function createResponseBuilder(cacheTtlMs: number): (answer: CheckAnswer) => CheckResponse {
  const reusable = durationOfMs(cacheTtlMs);
  const never = durationOfMs(0);
  const policyVersionOf = lastOne(BigInt);
  const limitOf = lastOne(BigInt);
  // Frozen: the one Timestamp is shared by every answer of the period (nothing writes to it).
  const resetsAtOf = lastOne((ms) => Object.freeze(timestampOfMs(ms)));

  function cacheTtl(answer: CheckAnswer): Duration {
    const ms = cacheTtlMsOf(answer, cacheTtlMs);
    if (ms === cacheTtlMs) return reusable;
    return ms === 0 ? never : durationOfMs(ms);
  }

  return (answer) => {
    const { verdict, snapshot, status } = answer;
    // A literal with every field, equivalent to create(CheckResponseSchema, ...) without its
    // reflection: this runs on every Check.
    const response: CheckResponse = {
      $typeName: "licensing.v1.CheckResponse",
      decision: verdict.allow ? WireDecision.ALLOW : WireDecision.DENY,
      reason: verdict.reason,
      message: verdict.message,
      licenseId: "",
      limit: undefined,
      remaining: undefined,
      resetsAt: undefined,
      retryAfter: undefined,
      cacheTtl: cacheTtl(answer),
      decisionId: answer.decisionId,
      policyVersion: 0n,
      depletesAt: undefined,
      plan: "",
      accountId: "",
    };
    if (snapshot !== undefined) {
      response.licenseId = snapshot.licenseId;
      response.plan = snapshot.plan;
      response.accountId = snapshot.accountId;
      response.policyVersion = policyVersionOf(snapshot.version);
    }
    if (status !== undefined) {
      response.limit = limitOf(status.limit);
      response.remaining = BigInt(status.remaining);
      if (status.resetsAtMs !== null) response.resetsAt = resetsAtOf(status.resetsAtMs);
      const retryAfterMs = retryAfterMsOf(answer);
      if (retryAfterMs !== undefined) response.retryAfter = durationOfMs(retryAfterMs);
      if (answer.depletesAtMs !== undefined) response.depletesAt = timestampOfMs(answer.depletesAtMs);
    }
    return response;
  };
}
