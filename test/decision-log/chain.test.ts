import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { canonicalRow, chainHash, type ChainRow } from "../../src/licensing/decision-log.js";
import { createAllowAggregator } from "../../src/licensing/decision-log/allow-aggregator.js";

const T0 = Date.parse("2026-11-21T10:00:00.123Z");

const deny: ChainRow = {
  replicaId: "r1",
  seq: 1,
  decisionId: "d-1",
  timeMs: T0,
  licenseId: "lic-1",
  feature: "export",
  decision: "deny",
  reason: "QUOTA_EXHAUSTED",
  quantity: 5,
  count: 1,
};

describe("decision log chain", () => {
  it("serializes a row exactly as documented in chain.ts", () => {
    expect(canonicalRow(deny)).toBe('["r1",1,"d-1","2026-11-21T10:00:00.123Z","lic-1","export","deny","QUOTA_EXHAUSTED",5,1]');
  });

  it("hashes prev_hash, a newline and the canonical row as lowercase hex SHA-256", () => {
    const expected = createHash("sha256").update(`\n${canonicalRow(deny)}`).digest("hex");
    expect(chainHash("", deny)).toBe(expected);
    const second = { ...deny, seq: 2 };
    expect(chainHash(expected, second)).toBe(createHash("sha256").update(`${expected}\n${canonicalRow(second)}`).digest("hex"));
  });

  it("tells null from the empty string, and every field changes the hash", () => {
    expect(canonicalRow({ ...deny, licenseId: null })).toContain(",null,");
    const base = chainHash("", deny);
    const variants: Partial<ChainRow>[] = [
      { replicaId: "r2" },
      { seq: 2 },
      { decisionId: null },
      { timeMs: T0 + 1 },
      { licenseId: "" },
      { feature: "exports" },
      { decision: "allow" },
      { reason: "RATE_LIMITED" },
      { quantity: 6 },
      { count: 2 },
    ];
    for (const variant of variants) expect(chainHash("", { ...deny, ...variant })).not.toBe(base);
    expect(chainHash("x", deny)).not.toBe(base);
  });
});

describe("allow aggregator", () => {
  it("folds one second's allows per licence, feature and reason, and drains only ended seconds", () => {
    const aggregator = createAllowAggregator();
    for (let i = 0; i < 10; i++) aggregator.add(T0 + i, "a", "f", "OK", 2, true);
    aggregator.add(T0, "a", "f", "BACKEND_UNAVAILABLE", 1, true);
    aggregator.add(T0, null, "f", "OK", 1, true);
    aggregator.add(T0 + 1000, "a", "f", "OK", 1, true);
    expect(aggregator.size).toBe(4);
    const second = Math.floor(T0 / 1000) * 1000;
    expect(aggregator.drainEndedBy(second + 999)).toEqual([]);
    const rows = aggregator.drainEndedBy(second + 1000);
    expect(rows.map((r) => [r.timeMs, r.licenseId, r.reason, r.count, r.quantity]).sort()).toEqual(
      [
        [second, "a", "OK", 10, 20],
        [second, "a", "BACKEND_UNAVAILABLE", 1, 1],
        [second, null, "OK", 1, 1],
      ].sort(),
    );
    expect(aggregator.size).toBe(1);
    expect(aggregator.drainEndedBy(Infinity)).toHaveLength(1);
    expect(aggregator.size).toBe(0);
  });

  it("refuses a new row when not allowed to create one, but still folds into an existing one", () => {
    const aggregator = createAllowAggregator();
    expect(aggregator.add(T0, "a", "f", "OK", 1, false)).toBe(false);
    expect(aggregator.add(T0, "a", "f", "OK", 1, true)).toBe(true);
    expect(aggregator.add(T0, "a", "f", "OK", 1, false)).toBe(true);
    expect(aggregator.add(T0, "a", "g", "OK", 1, false)).toBe(false);
    expect(aggregator.size).toBe(1);
  });
});
