/**
 * The scaling policy's new fields (thresholds, auto) survive apply → export → apply unchanged.
 */
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { applyRules } from "../../src/rules/apply.js";
import { exportRules, formatRules } from "../../src/rules/export.js";
import { parseRules } from "../../src/rules/parse.js";
import { createTestStore, testBackends, type TestStore } from "../support/database.js";

const RULES = `
version: 1
accounts: [{ id: acme, name: Acme }]
plans:
  - name: pro
    entitlements:
      - { feature: api.calls, kind: quota, limit: 1000, period: month }
      - feature: nodes
        kind: capacity
        limit: 4
        unit_price: 35
        scaling:
          min: 2
          max: 16
          scale_up_threshold: 0.85
          scale_down_threshold: 0.25
          auto: { source: quota, quota_feature: api.calls, horizon_seconds: 300 }
licenses: [{ id: acme-prod, account: acme, plan: pro }]
`;

describe.each(testBackends())("scaling rules round trip on %s", (backend) => {
  let store: TestStore;
  beforeEach(async () => {
    store = await createTestStore(backend);
  });
  afterEach(() => store.drop());

  test("export then apply of thresholds and auto mode is a no-op", async () => {
    const opts = { prune: true, dryRun: false, now: new Date("2026-11-01T00:00:00Z") };
    await applyRules(store.db, parseRules(RULES), opts);
    const exported = await exportRules(store.db);
    expect(exported.plans[0]?.entitlements.find((e) => e.feature === "nodes")?.scaling).toEqual({
      min: 2, max: 16, scale_up_threshold: 0.85, scale_down_threshold: 0.25,
      auto: { source: "quota", quota_feature: "api.calls", horizon_seconds: 300 },
    });
    for (const format of ["yaml", "json"] as const) {
      const again = await applyRules(store.db, parseRules(formatRules(exported, format)), opts);
      expect(again).toEqual({ changes: [], issuedKeys: [] });
    }
  });
});
