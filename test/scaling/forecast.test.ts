/**
 * The exponentially weighted rate and depletes_at, with a fixed clock.
 */
import { describe, expect, test } from "vitest";
import { createForecast, depletesAtMs } from "../../src/scaling/forecast.js";

const T0 = Date.UTC(2026, 10, 15);

describe("forecast", () => {
  test("a steady rate is measured as that rate, from the first half-life on", () => {
    const f = createForecast({ halfLifeMs: 60_000 });
    for (let s = 0; s <= 600; s += 1) f.recordConsumption("l", "api", 10, T0 + s * 1000);
    expect(f.ratePerSecond("l", "api", T0 + 600_000)).toBeCloseTo(10, 0);
    const early = createForecast({ halfLifeMs: 60_000 });
    for (let s = 0; s <= 30; s += 1) early.recordConsumption("l", "api", 10, T0 + s * 1000);
    expect(early.ratePerSecond("l", "api", T0 + 30_000)).toBeGreaterThan(9);
    expect(early.ratePerSecond("l", "api", T0 + 30_000)).toBeLessThan(11.5);
  });

  test("the rate decays by half per half-life once consumption stops", () => {
    const f = createForecast({ halfLifeMs: 60_000 });
    for (let s = 0; s <= 600; s += 1) f.recordConsumption("l", "api", 10, T0 + s * 1000);
    const at = f.ratePerSecond("l", "api", T0 + 600_000) ?? 0;
    expect(f.ratePerSecond("l", "api", T0 + 660_000)).toBeCloseTo(at / 2, 1); // the settled-fraction correction moves it by < 0.1 %
  });

  test("depletes_at is now + remaining / rate, and undefined without consumption", () => {
    const f = createForecast({ halfLifeMs: 60_000 });
    expect(f.depletesAt("l", "api", 100, T0)).toBeUndefined();
    for (let s = 0; s <= 600; s += 1) f.recordConsumption("l", "api", 10, T0 + s * 1000);
    const now = T0 + 600_000;
    const at = f.depletesAt("l", "api", 1000, now) ?? 0;
    expect(at - now).toBeGreaterThan(95_000);
    expect(at - now).toBeLessThan(105_000);
    expect(depletesAtMs(10, 0, now)).toBeUndefined();
    expect(depletesAtMs(10, -1, now)).toBeUndefined();
  });

  test("the cluster factor scales a replica's quota rate to the cluster", () => {
    const f = createForecast({ halfLifeMs: 60_000, clusterFactor: () => 3 });
    for (let s = 0; s <= 600; s += 1) f.recordConsumption("l", "api", 10, T0 + s * 1000);
    expect(f.ratePerSecond("l", "api", T0 + 600_000)).toBeCloseTo(30, 0);
  });

  test("capacity utilization: the rate is the growth of in_use, and falling demand never depletes", () => {
    const f = createForecast({ halfLifeMs: 60_000 });
    for (let s = 0; s <= 300; s += 10) f.recordUtilization("l", "nodes", s / 10, 100, T0 + s * 1000); // +1 per 10 s
    const now = T0 + 300_000;
    expect(f.ratePerSecond("l", "nodes", now)).toBeCloseTo(0.1, 1);
    expect(f.lastUtilization("l", "nodes")).toEqual({ inUse: 30, capacity: 100, atMs: now });
    const shrinking = createForecast({ halfLifeMs: 60_000 });
    for (let s = 0; s <= 300; s += 10) shrinking.recordUtilization("l", "nodes", 100 - s / 10, 100, T0 + s * 1000);
    expect(shrinking.depletesAt("l", "nodes", 10, now)).toBeUndefined();
  });

  test("keys beyond maxKeys evict the oldest, counted", () => {
    const f = createForecast({ halfLifeMs: 1000, maxKeys: 2 });
    f.recordConsumption("a", "x", 1, T0);
    f.recordConsumption("b", "x", 1, T0);
    f.recordConsumption("c", "x", 1, T0);
    expect(f.stats()).toEqual({ keys: 2, evicted: 1 });
    expect(f.ratePerSecond("a", "x", T0)).toBeUndefined();
    expect(f.ratePerSecond("c", "x", T0)).toBeGreaterThan(0);
  });

  test("a bad half-life fails at creation with the option's name", () => {
    expect(() => createForecast({ halfLifeMs: 0 })).toThrow(/halfLifeMs/);
  });
});
