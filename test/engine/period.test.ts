import { describe, expect, it } from "vitest";
import { LIFETIME_START_MS, periodEndMs, periodStartMs, rateWindowSeconds } from "../../src/licensing/engine/period.js";

const at = (iso: string): number => Date.parse(iso);

describe("quota periods (UTC)", () => {
  it("an hour starts on the hour and the next one an hour later", () => {
    const start = periodStartMs("hour", at("2026-03-15T12:59:59.999Z"));
    expect(start).toBe(at("2026-03-15T12:00:00Z"));
    expect(periodEndMs("hour", start)).toBe(at("2026-03-15T13:00:00Z"));
  });

  it("an instant exactly on a boundary belongs to the period it starts", () => {
    expect(periodStartMs("hour", at("2026-03-15T13:00:00Z"))).toBe(at("2026-03-15T13:00:00Z"));
    expect(periodStartMs("day", at("2026-03-16T00:00:00Z"))).toBe(at("2026-03-16T00:00:00Z"));
    expect(periodStartMs("month", at("2026-04-01T00:00:00Z"))).toBe(at("2026-04-01T00:00:00Z"));
  });

  it("a day starts at UTC midnight, whatever the process's time zone", () => {
    const start = periodStartMs("day", at("2026-03-15T23:30:00-05:00"));
    expect(start).toBe(at("2026-03-16T00:00:00Z"));
    expect(periodEndMs("day", start)).toBe(at("2026-03-17T00:00:00Z"));
  });

  it("months have their calendar length: 31, 30, 28 and 29 (leap) days", () => {
    const length = (iso: string): number => {
      const start = periodStartMs("month", at(iso));
      return ((periodEndMs("month", start) ?? 0) - start) / 86_400_000;
    };
    expect(length("2026-01-31T23:59:59Z")).toBe(31);
    expect(length("2026-04-10T00:00:00Z")).toBe(30);
    expect(length("2026-02-14T00:00:00Z")).toBe(28);
    expect(length("2028-02-29T12:00:00Z")).toBe(29);
    expect(length("2100-02-01T00:00:00Z")).toBe(28);
  });

  it("December rolls over into January of the next year", () => {
    const start = periodStartMs("month", at("2026-12-31T23:59:59.999Z"));
    expect(start).toBe(at("2026-12-01T00:00:00Z"));
    expect(periodEndMs("month", start)).toBe(at("2027-01-01T00:00:00Z"));
  });

  it("a lifetime quota has one period from the epoch that never ends", () => {
    expect(periodStartMs("lifetime", at("2026-03-15T12:00:00Z"))).toBe(LIFETIME_START_MS);
    expect(LIFETIME_START_MS).toBe(0);
    expect(periodEndMs("lifetime", 0)).toBeNull();
    expect(periodStartMs(null, at("2030-01-01T00:00:00Z"))).toBe(0);
  });

  it("rate windows are one second or one minute", () => {
    expect(rateWindowSeconds("second")).toBe(1);
    expect(rateWindowSeconds("minute")).toBe(60);
    expect(rateWindowSeconds("month")).toBeNull();
  });
});
