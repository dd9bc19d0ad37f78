/**
 * Scale against a real database (PGlite always; PostgreSQL when DATABASE_URL is set): the
 * ledger, serialization of concurrent calls, idempotency, refusals and billing.
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { ScaleOutcome, ScaleRequestSchema, type ScaleResponse } from "../../src/gen/licensing/v1/licensing_pb.js";
import { createLicensingCaches } from "../../src/licensing/caches.js";
import { createIdentityResolver } from "../../src/licensing/identity.js";
import type { RpcContext } from "../../src/server/rpc.js";
import { capacityCharges, capacityUnitSeconds } from "../../src/scaling/billing.js";
import { createCapacityScaler } from "../../src/scaling/capacity-scaler.js";
import { findAccountLicense } from "../../src/store/licenses.js";
import { createScaleHandler } from "../../src/scaling/scale-handler.js";
import { createTestStore, testBackends, type TestStore } from "../support/database.js";
import { LICENSE, manualClock, seedScaling, silentLogger } from "./support.js";

const T0 = Date.UTC(2026, 10, 15, 12, 0, 0);
const HOUR = 3_600_000;

/** A timestamp Scale always sets, as epoch ms. */
function ms(ts: Timestamp | undefined): number {
  if (ts === undefined) throw new Error("timestamp missing");
  return timestampMs(ts);
}

const context: RpcContext = { header: () => undefined, signal: new AbortController().signal, transport: "grpc" };

describe.each(testBackends())("Scale on %s", (backend) => {
  let store: TestStore;
  let keys: Record<string, string>;
  let clock: ReturnType<typeof manualClock>;
  let scale: (init: MessageInitShape<typeof ScaleRequestSchema>) => Promise<ScaleResponse>;

  beforeEach(async () => {
    store = await createTestStore(backend);
    keys = await seedScaling(store.db);
    clock = manualClock(T0);
    const caches = createLicensingCaches({ db: store.db, now: clock.now, unknownKeyCacheMs: 0 });
    const handler = createScaleHandler({
      resolveIdentity: createIdentityResolver({ keys: caches.keys }),
      scaler: createCapacityScaler({ db: store.db, now: clock.now, currency: "EUR", logger: silentLogger }),
      accountLicense: (id) => findAccountLicense(store.db, id),
      now: clock.now,
      logger: silentLogger,
    });
    scale = async (init) =>
      handler(create(ScaleRequestSchema, { credential: { case: "apiKey", value: keys["prod-key"] ?? "" }, feature: "nodes", ...init }), context);
  });
  afterEach(() => store.drop());

  async function ledger(feature = "nodes") {
    return store.db
      .selectFrom("capacity_ledger")
      .select(["units", "valid_from", "valid_to", "reason", "caller", "request_id"])
      .where("license_id", "=", LICENSE)
      .where("feature", "=", feature)
      .orderBy("id")
      .execute();
  }

  test("the first Scale opens the ledger at the rules' limit and records the change in the same second", async () => {
    const answer = await scale({ target: { case: "desiredUnits", value: 10n }, requestId: "r1", reason: "black friday" });
    expect(answer.grantedUnits).toBe(10n);
    expect(answer.previousUnits).toBe(4n);
    expect(answer.outcome).toBe(ScaleOutcome.SCALED_UP);
    expect(answer.unitPrice).toBe(100n);
    expect(answer.currency).toBe("EUR");
    // 10 units from 15 Nov 12:00 to 1 Dec: 372 h × 10 × 100.
    expect(answer.projectedPeriodCost).toBe(372n * 10n * 100n);
    expect(ms(answer.nextChangeAt)).toBe(T0); // cooldowns of 0: another change may happen at once
    const rows = await ledger();
    expect(rows.map((r) => [Number(r.units), r.valid_from.getTime(), r.valid_to?.getTime() ?? null, r.reason, r.caller, r.request_id])).toEqual([
      [4, T0, T0, "initial", "rules", null],
      [10, T0, null, "black friday", "api_key", "r1"],
    ]);
    const state = await store.db.selectFrom("capacity_state").selectAll().executeTakeFirstOrThrow();
    expect([Number(state.units), Number(state.version), state.last_change_at?.getTime()]).toEqual([10, 2, T0]);
  });

  test("target tracking from observed utilization: desired = ceil(in_use / 0.8)", async () => {
    const answer = await scale({ target: { case: "observed", value: { inUse: 9n, capacity: 4n } } });
    expect([answer.grantedUnits, answer.outcome]).toEqual([12n, ScaleOutcome.SCALED_UP]);
  });

  test("20 concurrent Scale calls on one entitlement end in a consistent ledger: contiguous, one open row, no lost update", async () => {
    const answers = await Promise.all(
      Array.from({ length: 20 }, (_, i) => scale({ target: { case: "desiredUnits", value: BigInt(i + 5) }, requestId: `c${i}` })),
    );
    const rows = await ledger();
    expect(rows).toHaveLength(21); // the opening row + one per distinct desired value
    expect(rows.filter((r) => r.valid_to === null)).toHaveLength(1);
    for (let i = 1; i < rows.length; i += 1) expect(rows[i]?.valid_from.getTime()).toBe(rows[i - 1]?.valid_to?.getTime());
    // Each change starts from the units the previous one left: the answers chain through the ledger.
    const byRequest = new Map(answers.map((a, i) => [`c${i}`, a]));
    for (let i = 1; i < rows.length; i += 1) {
      const answer = byRequest.get(rows[i]?.request_id ?? "");
      expect(answer?.grantedUnits).toBe(BigInt(rows[i]?.units ?? -1));
      expect(answer?.previousUnits).toBe(BigInt(rows[i - 1]?.units ?? -1));
    }
    const state = await store.db.selectFrom("capacity_state").select(["units", "version"]).executeTakeFirstOrThrow();
    expect(Number(state.units)).toBe(Number(rows.at(-1)?.units));
    expect(Number(state.version)).toBe(21);
  });

  test("a retried Scale with the same request_id gets the first answer and changes nothing", async () => {
    const first = await scale({ target: { case: "desiredUnits", value: 8n }, requestId: "same" });
    clock.advance(5_000);
    const retried = await scale({ target: { case: "desiredUnits", value: 30n }, requestId: "same" });
    expect(retried).toEqual(first);
    expect(await ledger()).toHaveLength(2);
    const stored = await store.db.selectFrom("capacity_requests").select("request_id").execute();
    expect(stored.map((r) => r.request_id)).toEqual(["same"]);
    // An unchanged answer is stored too: a retry of a COOLDOWN or UNCHANGED repeats it.
    const unchanged = await scale({ target: { case: "desiredUnits", value: 8n }, requestId: "noop" });
    expect(unchanged.outcome).toBe(ScaleOutcome.UNCHANGED);
    expect(await scale({ target: { case: "desiredUnits", value: 9n }, requestId: "noop" })).toEqual(unchanged);
  });

  test("cooldowns hold across calls: a second growth within scale_up_cooldown is COOLDOWN with next_change_at", async () => {
    const pool = (units: bigint) => scale({ feature: "pool", target: { case: "desiredUnits", value: units } });
    expect((await pool(4n)).outcome).toBe(ScaleOutcome.SCALED_UP);
    clock.advance(30_000);
    const held = await pool(6n);
    expect([held.grantedUnits, held.outcome]).toEqual([4n, ScaleOutcome.COOLDOWN]);
    expect(ms(held.nextChangeAt)).toBe(T0 + 60_000);
    clock.advance(30_000);
    expect((await pool(6n)).grantedUnits).toBe(6n);
  });

  test("refusals are RPC errors naming the cause: suspended licence, non-capacity feature, unknown key, missing target", async () => {
    const code = async (p: Promise<unknown>) => {
      try {
        await p;
      } catch (err) {
        return err instanceof ConnectError ? [err.code, err.rawMessage] : ["not a ConnectError", String(err)];
      }
      return ["no error"];
    };
    const desired = { case: "desiredUnits", value: 5n } as const;
    expect(await code(scale({ credential: { case: "apiKey", value: keys["off-key"] ?? "" }, target: desired }))).toEqual([
      Code.FailedPrecondition, "licence acme-off is suspended",
    ]);
    expect(await code(scale({ feature: "api.calls", target: desired }))).toEqual([
      Code.InvalidArgument, 'feature: feature "api.calls" is not a capacity entitlement of licence acme-prod',
    ]);
    expect(await code(scale({ credential: { case: "apiKey", value: "lk_live_nope" }, target: desired }))).toEqual([
      Code.Unauthenticated, "credential refused: unknown API key",
    ]);
    expect(await code(scale({}))).toEqual([Code.InvalidArgument, "target: one of desired_units or observed is required"]);
    expect(await code(scale({ target: { case: "desiredUnits", value: -1n } }))).toEqual([Code.InvalidArgument, "desired_units: must be at least 0"]);
    expect(await store.db.selectFrom("capacity_ledger").select("id").execute()).toEqual([]);
  });

  test("a ledger spanning a period boundary bills exactly, split at the boundary", async () => {
    const boundary = Date.UTC(2026, 10, 1);
    clock.set(boundary - HOUR); // 31 Oct 23:00
    await scale({ target: { case: "desiredUnits", value: 10n } });
    clock.set(boundary + HOUR); // 1 Nov 01:00
    await scale({ target: { case: "desiredUnits", value: 6n } });
    const now = boundary + 3 * HOUR;
    expect(await capacityUnitSeconds(store.db, LICENSE, "nodes", boundary - HOUR, now)).toBe((10n * 2n + 6n * 2n) * 3600n);
    expect(await capacityCharges(store.db, LICENSE, "2026-10")).toEqual([
      { feature: "nodes", unitSeconds: 10n * 3600n, unitPrice: 100n, amount: 1000n },
    ]);
    expect(await capacityCharges(store.db, LICENSE, "2026-11", { nowMs: now })).toEqual([
      { feature: "nodes", unitSeconds: (10n + 12n) * 3600n, unitPrice: 100n, amount: 2200n },
    ]);
    expect(await capacityCharges(store.db, LICENSE, "2026-09")).toEqual([]);
    await expect(capacityCharges(store.db, LICENSE, "2026-13")).rejects.toThrow(/YYYY-MM/);
  });
});
