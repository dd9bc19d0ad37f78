/**
 * The Check handler: validate, resolve the credential, find the licence snapshot, decide,
 * commit what was consumed, record, answer.
 *
 * Memory first: with the credential and licence cached and lease units in hand, a Check is
 * synchronous from request to response (no promise, no await). Only a cache miss, a dry lease
 * or a seat not yet held waits on Postgres, and concurrent waits for one thing share one
 * round trip. A deny is an answer; an RPC error means the request itself was wrong
 * (INVALID_ARGUMENT) or the caller may not ask (UNAUTHENTICATED).
 */
import {
  Reason,
  type CheckRequest,
  type CheckRequestSchema,
  type CheckResponseSchema,
} from "../gen/licensing/v1/licensing_pb.js";
import { invalidArgument, unavailable } from "../server/errors.js";
import type { RpcContext, UnaryHandler } from "../server/rpc.js";
import { validateCheckRequest, type ValidCheck } from "./check-request.js";
import { createResponseBuilder, type CheckAnswer } from "./check-response.js";
import type { Counters } from "./counters.js";
import { newDecisionId } from "./decision-id.js";
import { decide, verdictOnly, type Decision, type DecisionRequest, type Need, type PostgresState, type Verdict } from "./decide.js";
import type { OperationCache } from "./idempotency.js";
import { BACKEND_DOWN_VERDICT, type Identity, type IdentityResolver, type Resolution } from "./identity.js";
import { MISS, type LoadingCache } from "./loading-cache.js";
import type { LicenseSnapshot } from "./snapshot.js";
import { isPromise, type MaybePromise } from "./sync.js";

/** One decision as the decision log records it. */
export interface DecisionEntry {
  readonly decisionId: string;
  readonly timeMs: number;
  readonly licenseId: string | null;
  readonly feature: string;
  readonly allow: boolean;
  /** The Reason's name without prefix, e.g. "QUOTA_EXHAUSTED". */
  readonly reason: string;
  readonly quantity: number;
}

export interface DecisionRecorder {
  /** Must not block or throw: called on every Check. */
  record(entry: DecisionEntry): void;
}

/** Reservations made by consuming Checks with an operation_id, settled later by Report. */
export interface ReservationSink {
  /** Must not block or throw: an in-memory enqueue. */
  record(snapshot: LicenseSnapshot, feature: string, operationId: string, quantity: number, nowMs: number): void;
}

/** Consumption rates, for depletes_at (src/scaling/forecast.ts). */
export interface ConsumptionForecast {
  /** Must not block or throw. */
  recordConsumption(licenseId: string, feature: string, units: number, nowMs: number, remaining?: number): void;
  /** When `remaining` units run out at the current rate (epoch ms), when known. */
  depletesAt(licenseId: string, feature: string, remaining: number, nowMs: number): number | undefined;
}

export interface CheckDeps {
  /** Feeds and answers depletes_at; absent: no forecast. */
  readonly forecast?: ConsumptionForecast;
  /** Where consuming Checks with an operation_id reserve; absent: no reservations. */
  readonly reservations?: ReservationSink;
  readonly resolveIdentity: IdentityResolver;
  /** Licence snapshots by licence id. */
  readonly licenses: LoadingCache<string, LicenseSnapshot>;
  /** An account's licence, for credentials that name an account. */
  readonly accountLicenses: LoadingCache<string, string>;
  readonly counters: Counters;
  /** Answers remembered by operation_id, shared by every transport's Check. */
  readonly operations: OperationCache<CheckAnswer>;
  readonly decisions: DecisionRecorder;
  /** Epoch milliseconds. */
  readonly now: () => number;
  /** cache_ttl for answers that depend only on the licence, in ms. */
  readonly cacheTtlMs: number;
}

/**
 * Round trips one Check may make before giving up. Each round either gets units or learns the
 * quota is exhausted, so this bounds only pathological contention.
 */
const MAX_ROUNDS = 100;

/** Why no snapshot: a licence that is unknown, or unreachable. */
interface NotLoaded {
  readonly denied: Verdict;
}

/** The snapshot itself (no wrapper: this is every Check), or why there is none. */
type Loaded = LicenseSnapshot | NotLoaded;

function notLoaded(loaded: Loaded): loaded is NotLoaded {
  return "denied" in loaded;
}

/** Check up to its answer, which each transport writes its own way. */
export type CheckDecider = (request: CheckRequest, context: RpcContext) => MaybePromise<CheckAnswer>;

/** The Check handler of the service binding: the decider's answer as a CheckResponse message. */
export function createCheckHandler(deps: CheckDeps): UnaryHandler<typeof CheckRequestSchema, typeof CheckResponseSchema> {
  const decideCheck = createCheckDecider(deps);
  const respond = createResponseBuilder(deps.cacheTtlMs);
  return (request, context) => {
    const answer = decideCheck(request, context);
    return isPromise(answer) ? answer.then(respond) : respond(answer);
  };
}

/**
 * Check up to its answer: validate, resolve the credential, decide, commit, record. The
 * binding's handler (above) and the gRPC port's bytes-to-bytes handler (licensing-binding.ts)
 * write the same answer their own way.
 */
export function createCheckDecider(deps: CheckDeps): CheckDecider {
  function finish(check: ValidCheck, snapshot: LicenseSnapshot | undefined, decision: Decision & { outcome: "decided" }, nowMs: number): CheckAnswer {
    const consumed = decision.consumption.length > 0 || decision.failOpen.length > 0;
    if (decision.verdict.allow && snapshot !== undefined) {
      if (decision.consumption.length > 0) {
        deps.counters.commit(snapshot.licenseId, decision.consumption, nowMs);
        // Retries answered from the operation cache never reach here: one reservation per operation.
        if (check.operationId !== "") deps.reservations?.record(snapshot, check.feature, check.operationId, check.quantity, nowMs);
      }
      for (const use of decision.failOpen) deps.counters.recordFailOpen(snapshot.licenseId, use.rule, use.quantity, nowMs);
    }
    const depletesAtMs = forecastFor(snapshot, check.feature, decision, nowMs);
    const answer: CheckAnswer = {
      decisionId: newDecisionId(),
      verdict: decision.verdict,
      snapshot,
      status: decision.status,
      consumed,
      nowMs,
      depletesAtMs,
    };
    deps.decisions.record({
      decisionId: answer.decisionId,
      timeMs: nowMs,
      licenseId: snapshot?.licenseId ?? null,
      feature: check.feature,
      allow: decision.verdict.allow,
      reason: Reason[decision.verdict.reason],
      quantity: check.quantity,
    });
    return answer;
  }

  /** Feeds the forecast with what a quota decision consumed, and reads when the quota runs out. */
  function forecastFor(snapshot: LicenseSnapshot | undefined, feature: string, decision: Decision & { outcome: "decided" }, nowMs: number): number | undefined {
    const forecast = deps.forecast;
    const status = decision.status;
    if (forecast === undefined || snapshot === undefined || status === undefined || status.resetsAtMs === null) return undefined;
    for (const use of decision.consumption) {
      if (use.kind === "quota") forecast.recordConsumption(snapshot.licenseId, feature, use.quantity, nowMs, status.remaining);
    }
    return forecast.depletesAt(snapshot.licenseId, feature, status.remaining, nowMs);
  }

  function deny(check: ValidCheck, snapshot: LicenseSnapshot | undefined, verdict: Verdict, nowMs: number): CheckAnswer {
    return finish(check, snapshot, verdictOnly(verdict), nowMs);
  }

  function loadSnapshot(identity: Identity): MaybePromise<Loaded> {
    if (identity.licenseId !== undefined) return snapshotOf(identity.licenseId);
    const accountId = identity.accountId ?? "";
    const cached = deps.accountLicenses.peek(accountId);
    if (cached === undefined) return unknownLicence(`account ${accountId} has no single active licence`);
    if (cached !== MISS) return snapshotOf(cached);
    return deps.accountLicenses.get(accountId).then(
      (licenseId): MaybePromise<Loaded> => (licenseId === undefined ? unknownLicence(`account ${accountId} has no single active licence`) : snapshotOf(licenseId)),
      (): Loaded => BACKEND_DOWN,
    );
  }

  function snapshotOf(licenseId: string): MaybePromise<Loaded> {
    const cached = deps.licenses.peek(licenseId);
    if (cached !== MISS) return cached ?? unknownLicence(`licence ${licenseId} does not exist`);
    return deps.licenses.get(licenseId).then(
      (snapshot): Loaded => snapshot ?? unknownLicence(`licence ${licenseId} does not exist`),
      (): Loaded => BACKEND_DOWN,
    );
  }

  function evaluate(check: ValidCheck, snapshot: LicenseSnapshot, roles: readonly string[], nowMs: number): MaybePromise<CheckAnswer> {
    requireInstanceForSeats(check, snapshot);
    const request = decisionRequest(check, roles, "ask");
    const first = decide(snapshot, request, deps.counters, nowMs);
    if (first.outcome === "decided") return finish(check, snapshot, first, nowMs);
    return resolveNeeds(check, snapshot, request, first.needs, 1);
  }

  /** Asks Postgres for what memory could not answer, then decides again with a fresh clock. */
  async function resolveNeeds(
    check: ValidCheck,
    snapshot: LicenseSnapshot,
    request: DecisionRequest,
    needs: readonly Need[],
    round: number,
  ): Promise<CheckAnswer> {
    if (round > MAX_ROUNDS) throw unavailable("could not obtain quota units after repeated attempts; retry");
    const postgres = await fulfil(snapshot.licenseId, needs);
    const nowMs = deps.now();
    const next = decide(snapshot, { ...request, postgres }, deps.counters, nowMs);
    if (next.outcome === "decided") return finish(check, snapshot, next, nowMs);
    return resolveNeeds(check, snapshot, request, next.needs, round + 1);
  }

  /**
   * Leases quota and takes seats together. A seat taken for a Check that another limit then
   * denies stays held by that instance until its TTL, as if it had checked once.
   */
  async function fulfil(licenseId: string, needs: readonly Need[]): Promise<PostgresState> {
    const nowMs = deps.now();
    try {
      await Promise.all(
        needs.map((need) =>
          need.kind === "quota"
            ? deps.counters.refillQuota(licenseId, need.rule, need.quantity, nowMs)
            : deps.counters.acquireSeat(licenseId, need.rule, need.instanceId, nowMs),
        ),
      );
      return "asked";
    } catch {
      // Postgres is unreachable (the engine logs and counts it): each entitlement's failure
      // mode answers instead.
      return "unreachable";
    }
  }

  /** After the credential: its licence, or the deny. */
  function withIdentity(input: ValidCheck, resolution: Resolution, nowMs: number): MaybePromise<CheckAnswer> {
    if (resolution.denied !== undefined) return deny(input, undefined, resolution.denied, nowMs);
    const roles = resolution.identity.roles;
    const loaded = loadSnapshot(resolution.identity);
    return isPromise(loaded) ? loaded.then((ready) => withSnapshot(input, roles, ready, nowMs)) : withSnapshot(input, roles, loaded, nowMs);
  }

  /** After the licence: the decision, or the answer already given to this operation. */
  function withSnapshot(input: ValidCheck, roles: readonly string[], loaded: Loaded, nowMs: number): MaybePromise<CheckAnswer> {
    if (notLoaded(loaded)) return deny(input, undefined, loaded.denied, nowMs);
    const snapshot = loaded;
    if (input.operationId === "") return evaluate(input, snapshot, roles, nowMs);
    const fingerprint = `${input.feature}\u0000${input.quantity}\u0000${input.instanceId}\u0000${input.dryRun}`;
    const prior = deps.operations.lookup(snapshot.licenseId, input.operationId, fingerprint);
    if (prior !== undefined) return prior;
    const answer = evaluate(input, snapshot, roles, nowMs);
    deps.operations.remember(snapshot.licenseId, input.operationId, fingerprint, answer);
    return answer;
  }

  // Named steps rather than closures: from memory, a Check allocates no function and no promise.
  return function check(req, context) {
    const input = validateCheckRequest(req);
    const nowMs = deps.now();
    const resolution = deps.resolveIdentity(req.credential, context, nowMs);
    return isPromise(resolution) ? resolution.then((ready) => withIdentity(input, ready, nowMs)) : withIdentity(input, resolution, nowMs);
  };
}

function decisionRequest(check: ValidCheck, roles: readonly string[], postgres: PostgresState): DecisionRequest {
  return {
    feature: check.feature,
    quantity: check.quantity,
    environment: check.environment,
    roles,
    instanceId: check.instanceId,
    dryRun: check.dryRun,
    postgres,
  };
}

function requireInstanceForSeats(check: ValidCheck, snapshot: LicenseSnapshot): void {
  if (check.instanceId !== "") return;
  const rule = snapshot.entitlements.get(check.feature)?.find((r) => r.kind === "seats" || r.kind === "capacity");
  if (rule !== undefined) {
    throw invalidArgument("instance_id", `is required: feature "${check.feature}" is licensed by ${rule.kind}`);
  }
}

function unknownLicence(message: string): NotLoaded {
  return { denied: { allow: false, reason: Reason.UNKNOWN_CREDENTIAL, message } };
}

const BACKEND_DOWN: NotLoaded = { denied: BACKEND_DOWN_VERDICT };
