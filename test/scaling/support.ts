/**
 * Shared fixtures for the scaling tests: a rules document with capacity entitlements, applied
 * to a fresh test database, and a settable clock.
 */
import type { Kysely } from "kysely";
import { applyRules } from "../../src/rules/apply.js";
import { validateRules } from "../../src/rules/validate.js";
import type { RulesDocument } from "../../src/rules/types.js";
import type { Database } from "../../src/store/schema.js";

export const LICENSE = "acme-prod";
export const SUSPENDED = "acme-off";

export function scalingRules(): unknown {
  return {
    version: 1,
    accounts: [{ id: "acme", name: "Acme" }],
    plans: [
      {
        name: "pro",
        entitlements: [
          {
            feature: "nodes", kind: "capacity", limit: 4, unit_price: 100,
            scaling: { min: 1, max: 64, scale_up_cooldown_seconds: 0, scale_down_cooldown_seconds: 0 },
          },
          {
            feature: "pool", kind: "capacity", limit: 2, unit_price: 10,
            scaling: {
              min: 1, max: 10, step: 2, scale_up_cooldown_seconds: 60, scale_down_cooldown_seconds: 60,
              auto: { source: "quota", quota_feature: "api.calls", horizon_seconds: 600 },
            },
          },
          { feature: "api.calls", kind: "quota", limit: 1000, period: "month" },
          { feature: "reports", kind: "boolean" },
        ],
      },
    ],
    licenses: [
      { id: LICENSE, account: "acme", plan: "pro" },
      { id: SUSPENDED, account: "acme", plan: "pro", status: "suspended" },
    ],
    api_keys: [
      { id: "prod-key", license: LICENSE },
      { id: "off-key", license: SUSPENDED },
    ],
  };
}

/** Applies the fixture rules; returns the API key secrets by key id. */
export async function seedScaling(db: Kysely<Database>, doc: unknown = scalingRules()): Promise<Record<string, string>> {
  const result = validateRules(doc);
  if (!result.ok) throw new Error(JSON.stringify(result.issues));
  const applied = await applyRules(db, result.document as RulesDocument, { prune: false, dryRun: false, now: new Date() });
  return Object.fromEntries(applied.issuedKeys.map((k) => [k.id, k.secret]));
}

/** A clock tests move by hand. */
export function manualClock(startMs: number) {
  let nowMs = startMs;
  return {
    now: () => nowMs,
    set: (ms: number) => void (nowMs = ms),
    advance: (ms: number) => void (nowMs += ms),
  };
}

export const silentLogger = {
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
};

/** A logger that keeps what it was told. */
export function recordingLogger() {
  const entries: Array<{ level: string; obj: object; msg: string }> = [];
  return {
    entries,
    info: (obj: object, msg: string) => void entries.push({ level: "info", obj, msg }),
    warn: (obj: object, msg: string) => void entries.push({ level: "warn", obj, msg }),
    error: (obj: object, msg: string) => void entries.push({ level: "error", obj, msg }),
  };
}
