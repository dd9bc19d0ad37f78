/**
 * Group commit: one write in flight, the batches that arrive meanwhile written together next,
 * each caller answered with its own batch's result, and a failed group split so one bad batch
 * fails alone.
 */
import { describe, expect, it } from "vitest";
import { createGroupCommit, type WriteBatches } from "../../src/metering/group-commit.js";
import type { BatchResult, PreparedEvent } from "../../src/metering/usage-store.js";

function batch(name: string, size = 1): PreparedEvent[] {
  return Array.from({ length: size }, (_, i) => ({
    id: `${name}-${i}`,
    licenseId: "lic",
    feature: "tokens",
    quantity: 1,
    occurredAtMs: 0,
    receivedAtMs: 0,
    attributes: {},
    operationId: "",
    quota: null,
  }));
}

/** A writer whose calls the test completes by hand; each result is "accepted = batch size". */
function manualWriter() {
  const calls: { batches: string[]; finish: (error?: Error) => void }[] = [];
  const write: WriteBatches = (batches) =>
    new Promise<BatchResult[]>((resolve, reject) => {
      calls.push({
        batches: batches.map((b) => b[0]?.id.split("-")[0] ?? ""),
        finish: (error) => (error ? reject(error) : resolve(batches.map((b) => ({ accepted: b.length, duplicates: 0 })))),
      });
    });
  return { calls, write };
}

const notUnreachable = () => false;
const tick = () => new Promise((resolve) => setImmediate(resolve));

describe("group commit", () => {
  it("writes a lone batch at once, and the batches that arrive during a write together in the next", async () => {
    const writer = manualWriter();
    const group = createGroupCommit({ write: writer.write, isUnreachable: notUnreachable, maxInFlight: 1, maxEvents: 100 });
    const a = group.write(batch("a", 2));
    await tick();
    expect(writer.calls.map((c) => c.batches)).toEqual([["a"]]);
    const b = group.write(batch("b", 3));
    const c = group.write(batch("c", 4));
    await tick();
    expect(writer.calls).toHaveLength(1);
    writer.calls[0]?.finish();
    expect(await a).toEqual({ accepted: 2, duplicates: 0 });
    await tick();
    expect(writer.calls.map((call) => call.batches)).toEqual([["a"], ["b", "c"]]);
    writer.calls[1]?.finish();
    expect([await b, await c]).toEqual([
      { accepted: 3, duplicates: 0 },
      { accepted: 4, duplicates: 0 },
    ]);
    expect(group.stats()).toEqual({ groups: 2, batches: 3, splits: 0 });
  });

  it("with 2 in flight, the second batch starts at once and later ones wait for either to finish", async () => {
    const writer = manualWriter();
    const group = createGroupCommit({ write: writer.write, isUnreachable: notUnreachable, maxInFlight: 2, maxEvents: 100 });
    const all = ["a", "b", "c", "d"].map((name) => group.write(batch(name)));
    await tick();
    expect(writer.calls.map((c) => c.batches)).toEqual([["a"], ["b"]]);
    writer.calls[1]?.finish();
    await tick();
    expect(writer.calls.map((c) => c.batches)).toEqual([["a"], ["b"], ["c", "d"]]);
    writer.calls[0]?.finish();
    writer.calls[2]?.finish();
    await Promise.all(all);
    expect(group.stats()).toEqual({ groups: 3, batches: 4, splits: 0 });
  });

  it("stops a group at maxEvents; a batch larger than that goes alone", async () => {
    const writer = manualWriter();
    const group = createGroupCommit({ write: writer.write, isUnreachable: notUnreachable, maxInFlight: 1, maxEvents: 5 });
    const all = [group.write(batch("a", 1)), group.write(batch("b", 3)), group.write(batch("c", 2)), group.write(batch("d", 9)), group.write(batch("e", 1))];
    for (let i = 0; i < 4; i++) {
      await tick();
      writer.calls[i]?.finish();
    }
    await Promise.all(all);
    expect(writer.calls.map((c) => c.batches)).toEqual([["a"], ["b", "c"], ["d"], ["e"]]);
  });

  it("writes a failed group again one batch at a time: only the bad batch fails, and the split is reported", async () => {
    const splits: number[] = [];
    const write: WriteBatches = (batches) =>
      batches.some((b) => b[0]?.id.startsWith("bad"))
        ? Promise.reject(new Error("numeric field overflow"))
        : Promise.resolve(batches.map((b) => ({ accepted: b.length, duplicates: 0 })));
    const group = createGroupCommit({ write, isUnreachable: notUnreachable, maxInFlight: 1, maxEvents: 100, onSplit: (_, n) => splits.push(n) });
    const first = group.write(batch("first"));
    const rest = [group.write(batch("ok1")), group.write(batch("bad")), group.write(batch("ok2"))];
    await expect(first).resolves.toEqual({ accepted: 1, duplicates: 0 });
    const settled = await Promise.allSettled(rest);
    expect(settled.map((s) => s.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
    expect((settled[1] as PromiseRejectedResult).reason).toMatchObject({ message: "numeric field overflow" });
    expect(splits).toEqual([3]);
    expect(group.stats()).toEqual({ groups: 3, batches: 3, splits: 1 });
  });

  it("fails every batch of a group at once when the database is unreachable (no one-by-one retry)", async () => {
    let calls = 0;
    const write: WriteBatches = (batches) => {
      calls += 1;
      return calls === 1 ? Promise.resolve(batches.map(() => ({ accepted: 1, duplicates: 0 }))) : Promise.reject(new Error("ECONNREFUSED"));
    };
    const group = createGroupCommit({ write, isUnreachable: (e) => (e as Error).message === "ECONNREFUSED", maxInFlight: 1, maxEvents: 100 });
    const first = group.write(batch("first"));
    const rest = [group.write(batch("x")), group.write(batch("y"))];
    await first;
    const settled = await Promise.allSettled(rest);
    expect(settled.map((s) => s.status)).toEqual(["rejected", "rejected"]);
    expect(calls).toBe(2);
    expect(group.stats().splits).toBe(0);
  });

  it("keeps writing after a failure: the next batch is not stuck behind it", async () => {
    let fail = true;
    const write: WriteBatches = (batches) => {
      if (fail) {
        fail = false;
        return Promise.reject(new Error("boom"));
      }
      return Promise.resolve(batches.map((b) => ({ accepted: b.length, duplicates: 0 })));
    };
    const group = createGroupCommit({ write, isUnreachable: notUnreachable, maxInFlight: 1, maxEvents: 100 });
    await expect(group.write(batch("a"))).rejects.toThrow("boom");
    await expect(group.write(batch("b"))).resolves.toEqual({ accepted: 1, duplicates: 0 });
  });
});
