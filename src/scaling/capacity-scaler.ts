/**
 * Scale's core, shared by the RPC handler and auto mode: one transaction per call that locks
 * the entitlement's capacity_state row, replays a stored answer for a known request_id,
 * decides (policy.ts), records the change in the ledger and stores the answer.
 *
 * Times: a change takes effect at the current whole second (never before the ledger's open
 * row, so the ledger stays contiguous and ordered even when replicas' clocks disagree), which
 * makes billed unit-seconds exact integers.
 */
import type { Kysely } from "kysely";
import { periodEndMs, periodStartMs } from "../licensing/engine/period.js";
import type { Database } from "../store/schema.js";
import {
  findStoredAnswer,
  loadEntitlement,
  lockCapacityState,
  readLedgerSpans,
  recordCapacityChange,
  storeAnswer,
  type CapacityEntitlement,
} from "./capacity-store.js";
import type { Forecast } from "./forecast.js";
import { integrateUnitMs } from "./ledger-math.js";
import { decideScale, resolvePolicy, type ScaleIntent, type ScaleOutcomeName, type ScalingPolicy } from "./policy.js";

const YEAR_MS = 366 * 24 * 3600 * 1000;

export interface ScalingLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface CapacityScalerDeps {
  readonly db: Kysely<Database>;
  /** Epoch ms. */
  readonly now: () => number;
  /** ISO 4217 code of every price (one currency per deployment). */
  readonly currency: string;
  readonly logger: ScalingLogger;
  /** Fed with observed utilization; gives depletes_at. Optional. */
  readonly forecast?: Forecast;
}

export interface ScaleCommand {
  readonly licenseId: string;
  readonly feature: string;
  readonly intent: ScaleIntent;
  /** Empty: not idempotent. At most 128 characters. */
  readonly requestId: string;
  /** Recorded in the ledger; empty becomes "scale". */
  readonly reason: string;
  /** Who asks, for the ledger: "api_key", "license_id", "auto", ... Never a secret. */
  readonly caller: string;
}

/** Scale's answer; JSON-safe (money as decimal strings), as stored for replays. */
export interface ScaleResult {
  readonly grantedUnits: number;
  readonly previousUnits: number;
  readonly outcome: ScaleOutcomeName;
  readonly nextChangeAtMs: number;
  readonly depletesAtMs: number | null;
  /** Minor units per unit-hour, decimal string. */
  readonly unitPrice: string;
  /** Minor units, decimal string. */
  readonly projectedPeriodCost: string;
  readonly currency: string;
}

export type ScaleRefusal = "unknown_license" | "not_capacity" | "license_suspended" | "license_not_valid";

/** Scale cannot apply to this licence or feature; `refusal` says why. */
export class ScaleRefusedError extends Error {
  constructor(
    readonly refusal: ScaleRefusal,
    message: string,
  ) {
    super(message);
    this.name = "ScaleRefusedError";
  }
}

export interface CapacityScaler {
  /**
   * Applies one Scale. Resolves the answer (the stored first answer for a known request_id).
   * @throws ScaleRefusedError when the licence or feature cannot be scaled; database errors
   *   otherwise (nothing was changed).
   */
  scale(command: ScaleCommand): Promise<ScaleResult>;
  /** The policy of a licence's capacity feature, or undefined (auto mode, KEDA). */
  policyOf(licenseId: string, feature: string): Promise<{ entitlement: CapacityEntitlement; policy: ScalingPolicy } | undefined>;
}

export function createCapacityScaler(deps: CapacityScalerDeps): CapacityScaler {
  const { db, logger } = deps;

  async function scale(command: ScaleCommand): Promise<ScaleResult> {
    const clockMs = Math.floor(deps.now() / 1000) * 1000;
    const { licenseId, feature, intent } = command;
    if (intent.kind === "observed") deps.forecast?.recordUtilization(licenseId, feature, intent.inUse, intent.capacity, clockMs);
    const outcome = await db.transaction().execute(async (trx) => {
      const entitlement = await requireCapacity(trx, licenseId, feature, clockMs);
      const locked = await lockCapacityState(trx, licenseId, feature, entitlement.limit, clockMs);
      if (command.requestId !== "") {
        const stored = await findStoredAnswer(trx, licenseId, feature, command.requestId);
        if (stored !== undefined) return { result: stored as ScaleResult, changed: false };
      }
      const policy = resolvePolicy(entitlement.limit, entitlement.unitPrice, entitlement.scaling);
      const periodStart = periodStartMs("month", clockMs);
      // Up to a year ahead: a clock behind the ledger's last change still reads the open row.
      const spans = await readLedgerSpans(trx, licenseId, feature, periodStart, clockMs + YEAR_MS);
      const openFromMs = spans.find((s) => s.toMs === null)?.fromMs ?? clockMs;
      const nowMs = Math.max(clockMs, openFromMs, locked.lastChangeAtMs ?? clockMs);
      const state = {
        units: locked.units,
        lastChangeAtMs: locked.lastChangeAtMs,
        periodEndMs: periodEndMs("month", periodStartMs("month", nowMs)) ?? nowMs,
        periodUnitMsSoFar: integrateUnitMs(spans, periodStartMs("month", nowMs), nowMs),
      };
      const decision = decideScale(policy, state, intent, nowMs);
      const changed = decision.granted !== decision.previous;
      if (changed) {
        await recordCapacityChange(trx, {
          licenseId,
          feature,
          units: decision.granted,
          atMs: nowMs,
          reason: command.reason === "" ? "scale" : command.reason,
          caller: command.caller,
          requestId: command.requestId === "" ? null : command.requestId,
        });
      }
      const result: ScaleResult = {
        grantedUnits: decision.granted,
        previousUnits: decision.previous,
        outcome: decision.outcome,
        nextChangeAtMs: decision.nextChangeAtMs,
        depletesAtMs: depletesAt(licenseId, feature, decision.granted, intent, nowMs),
        unitPrice: policy.unitPrice.toString(),
        projectedPeriodCost: decision.projectedPeriodCost.toString(),
        currency: deps.currency,
      };
      if (command.requestId !== "") await storeAnswer(trx, licenseId, feature, command.requestId, result);
      return { result, changed };
    });
    if (outcome.changed) {
      const r = outcome.result;
      logger.info(
        { licenseId, feature, from: r.previousUnits, to: r.grantedUnits, outcome: r.outcome, caller: command.caller },
        "capacity changed",
      );
    }
    return outcome.result;
  }

  function depletesAt(licenseId: string, feature: string, units: number, intent: ScaleIntent, nowMs: number): number | null {
    const forecast = deps.forecast;
    if (forecast === undefined) return null;
    const inUse = intent.kind === "observed" ? intent.inUse : forecast.lastUtilization(licenseId, feature)?.inUse;
    if (inUse === undefined) return null;
    return forecast.depletesAt(licenseId, feature, units - inUse, nowMs) ?? null;
  }

  async function policyOf(licenseId: string, feature: string) {
    const found = await loadEntitlement(db, licenseId, feature, "capacity");
    if (found.entitlement === undefined) return undefined;
    const e = found.entitlement;
    return { entitlement: e, policy: resolvePolicy(e.limit, e.unitPrice, e.scaling) };
  }

  return { scale, policyOf };
}

async function requireCapacity(db: Kysely<Database>, licenseId: string, feature: string, nowMs: number): Promise<CapacityEntitlement> {
  const found = await loadEntitlement(db, licenseId, feature, "capacity");
  if (!found.license) throw new ScaleRefusedError("unknown_license", `licence ${licenseId} does not exist`);
  const e = found.entitlement;
  if (e === undefined) {
    throw new ScaleRefusedError("not_capacity", `feature "${feature}" is not a capacity entitlement of licence ${licenseId}`);
  }
  if (e.status === "suspended") throw new ScaleRefusedError("license_suspended", `licence ${licenseId} is suspended`);
  if ((e.validFromMs !== null && nowMs < e.validFromMs) || (e.validUntilMs !== null && nowMs >= e.validUntilMs)) {
    throw new ScaleRefusedError("license_not_valid", `licence ${licenseId} is not within its validity window`);
  }
  return e;
}
