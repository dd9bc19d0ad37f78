/**
 * Auto mode with an injected clock and explicit ticks: scaling ahead of a quota's forecast
 * exhaustion, from reported utilization, within the policy (step, cooldown), logged and counted.
 */
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { createAutoScaler, type AutoScaler } from "../../src/scaling/auto-scaler.js";
import { createCapacityScaler } from "../../src/scaling/capacity-scaler.js";
import { readCapacityUnits } from "../../src/scaling/capacity-store.js";
import { createForecast, type Forecast } from "../../src/scaling/forecast.js";
import { createTestStore, testBackends, type TestStore } from "../support/database.js";
import { LICENSE, manualClock, recordingLogger, scalingRules, seedScaling } from "./support.js";

const T0 = Date.UTC(2026, 10, 15, 12, 0, 0);

/** The fixture rules, with acme-prod's "nodes" overridden to scale itself from utilization. */
function rulesWithUtilizationAuto(): unknown {
  const doc = scalingRules() as { licenses: Array<Record<string, unknown>> };
  const license = doc.licenses.find((l) => l.id === LICENSE);
  if (license === undefined) throw new Error("fixture changed");
  license.overrides = [
    {
      feature: "nodes", kind: "capacity", limit: 4, unit_price: 100,
      scaling: { min: 1, max: 64, target_utilization: 0.5, scale_up_cooldown_seconds: 0, scale_down_cooldown_seconds: 0, auto: { source: "utilization" } },
    },
  ];
  return doc;
}

describe.each(testBackends())("auto mode on %s", (backend) => {
  let store: TestStore;
  let clock: ReturnType<typeof manualClock>;
  let forecast: Forecast;
  let logger: ReturnType<typeof recordingLogger>;
  let auto: AutoScaler;

  beforeEach(async () => {
    store = await createTestStore(backend);
    await seedScaling(store.db, rulesWithUtilizationAuto());
    clock = manualClock(T0);
    forecast = createForecast({ halfLifeMs: 60_000 });
    logger = recordingLogger();
    const scaler = createCapacityScaler({ db: store.db, now: clock.now, currency: "EUR", logger, forecast });
    auto = createAutoScaler({ db: store.db, scaler, forecast, now: clock.now, logger, intervalMs: 10_000 });
  });
  afterEach(async () => {
    await auto.stop();
    await store.drop();
  });

  const units = async (feature: string) => (await readCapacityUnits(store.db, LICENSE)).get(feature);

  /** 1 unit/s of api.calls for 10 minutes, ending at the clock's now, with `remaining` left. */
  function consume(remaining: number): void {
    const end = clock.now();
    for (let s = 600; s >= 0; s -= 1) forecast.recordConsumption(LICENSE, "api.calls", 1, end - s * 1000, remaining + s);
  }

  test("a quota forecast to run out within the horizon grows the linked capacity one step, ahead of exhaustion", async () => {
    consume(300); // ~300 s left at 1/s: inside the 600 s horizon
    await auto.tick();
    expect(await units("pool")).toBe(4); // 2 + one step of 2
    expect(auto.stats()).toMatchObject({ scaledUp: 1, aheadOfExhaustion: 1, failures: 0 });
    const event = logger.entries.find((e) => e.msg === "capacity scaled up ahead of forecast exhaustion");
    expect(event?.obj).toMatchObject({ licenseId: LICENSE, feature: "pool", from: 2, to: 4, horizonSeconds: 600 });
    // Within the 60 s up-cooldown nothing more changes; after it, one more step.
    clock.advance(30_000);
    await auto.tick();
    expect(await units("pool")).toBe(4);
    clock.advance(31_000);
    consume(200);
    await auto.tick();
    expect(await units("pool")).toBe(6);
  });

  test("a quota far from exhaustion leaves the capacity alone", async () => {
    consume(100_000);
    await auto.tick();
    expect(await units("pool")).toBeUndefined(); // never touched: the rules' limit holds
    expect(auto.stats()).toMatchObject({ scaledUp: 0, aheadOfExhaustion: 0 });
  });

  test("from reported utilization, target tracking both ways; stale reports are ignored", async () => {
    forecast.recordUtilization(LICENSE, "nodes", 6, 4, clock.now());
    await auto.tick();
    expect(await units("nodes")).toBe(12); // ceil(6 / 0.5)
    clock.advance(10_000);
    forecast.recordUtilization(LICENSE, "nodes", 6, 12, clock.now()); // no growth
    forecast.recordUtilization(LICENSE, "nodes", 2, 12, clock.now());
    await auto.tick();
    expect(await units("nodes")).toBe(4);
    expect(auto.stats()).toMatchObject({ scaledUp: 1, scaledDown: 1 });
    clock.advance(3_600_000);
    await auto.tick();
    expect(await units("nodes")).toBe(4);
    const rows = await store.db.selectFrom("capacity_ledger").select(["units", "caller", "reason"]).where("feature", "=", "nodes").orderBy("id").execute();
    expect(rows.map((r) => [Number(r.units), r.caller, r.reason])).toEqual([
      [4, "rules", "initial"],
      [12, "auto", "auto: utilization"],
      [4, "auto", "auto: utilization"],
    ]);
  });

  test("the interval is bounded, named in the error", () => {
    expect(() => createAutoScaler({ db: store.db, scaler: createCapacityScaler({ db: store.db, now: clock.now, currency: "EUR", logger }), forecast, now: clock.now, logger, intervalMs: 10 })).toThrow(/intervalMs/);
  });
});
