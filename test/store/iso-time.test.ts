import { describe, expect, it } from "vitest";
import { iso } from "../../src/store/iso-time.js";

const EDGES = [
  0, -0, 1, -1, 999, 1000, 1001, -999, -1000, -1001, 0.5, -0.5, 1.999, -1.999, 1_800_000_000_123.9,
  Date.UTC(2024, 1, 29, 23, 59, 59, 999), Date.UTC(2024, 2, 1), Date.UTC(9999, 11, 31, 23, 59, 59, 999), Date.UTC(10000, 0, 1),
  Date.UTC(-1, 0, 1), Date.UTC(0, 0, 1) - 1, 8.64e15, -8.64e15, 8.64e15 + 0.5,
];

describe("iso", () => {
  it.each(EDGES)("iso(%d) is toISOString's string", (ms) => {
    expect(iso(ms)).toBe(new Date(ms).toISOString());
  });

  it("matches toISOString on times in and across seconds, in any order (its memory of the last second never leaks)", () => {
    // A seeded walk: runs within one second (what a batch looks like) and jumps anywhere.
    let seed = 42;
    const random = () => ((seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31);
    let ms = 1_800_000_000_000;
    for (let i = 0; i < 20_000; i++) {
      ms = random() < 0.9 ? ms + Math.floor(random() * 700) - 350 : Math.floor((random() - 0.5) * 2 * 8.64e15);
      expect(iso(ms)).toBe(new Date(ms).toISOString());
    }
  });

  it.each([Number.NaN, Infinity, -Infinity, 8.64e15 + 1, -8.64e15 - 1])("iso(%d) throws a RangeError like Date", (ms) => {
    expect(() => iso(ms)).toThrow(RangeError);
  });
});
