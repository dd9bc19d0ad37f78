import { describe, expect, it } from "vitest";
import { newDecisionId } from "../../src/licensing/decision-id.js";

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe("decision ids", () => {
  it("are RFC 9562 version 4 UUIDs, unique over many refills of the random pool", () => {
    const ids = Array.from({ length: 20_000 }, () => newDecisionId());
    for (const id of ids) expect(id).toMatch(UUID_V4);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it("use every hex digit in every random position: no byte is stuck or reused", () => {
    const ids = Array.from({ length: 4_000 }, () => newDecisionId());
    const fixed = new Set([8, 13, 14, 18, 23]); // dashes and the version digit
    for (let position = 0; position < 36; position++) {
      if (fixed.has(position)) continue;
      const digits = new Set(ids.map((id) => id[position]));
      // The variant digit (position 19) holds 2 random bits; the others 4.
      expect(digits.size, `position ${position}`).toBe(position === 19 ? 4 : 16);
    }
    // Consecutive ids share no 4-byte run: each takes fresh bytes from the pool.
    for (let i = 1; i < ids.length; i++) expect(ids[i]?.slice(0, 8)).not.toBe(ids[i - 1]?.slice(0, 8));
  });
});
