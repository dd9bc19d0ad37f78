/**
 * /readyz: ready = migrated AND (Postgres reachable OR serving from memory with caches warm).
 * Unit tests drive the ping by hand; the integration test takes a real PostgreSQL away behind a
 * TCP proxy and shows /readyz staying 200 while memory answers, flipping to 503 once a Check
 * needs a licence loaded, and back to 200 when Postgres returns.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pino } from "pino";
import { Decision, Reason } from "../../src/gen/licensing/v1/licensing_pb.js";
import { createReadiness, readinessRoute, type ReadinessReport } from "../../src/metrics/readiness.js";
import { createStore, type Store } from "../../src/store/database.js";
import { createHttpServer } from "../../src/server/http-server.js";
import { createTestStore, type TestStore } from "../support/database.js";
import { startTcpProxy, type TcpProxy } from "../support/tcp-proxy.js";
import { startHarness, type Harness } from "../admin/harness.js";

const logger = pino({ level: "silent" });

function fakeDeps() {
  const state = { migrated: true, up: true, cached: 0, pings: 0 };
  const readiness = createReadiness({
    migrated: () => state.migrated,
    ping: () => {
      state.pings += 1;
      return state.up ? Promise.resolve() : Promise.reject(new Error("connection refused"));
    },
    cachedLicenses: () => state.cached,
    logger,
  });
  return { state, readiness };
}

describe("readiness logic", () => {
  it("is not ready before migrations are done", () => {
    const { state, readiness } = fakeDeps();
    state.migrated = false;
    expect(readiness.report()).toMatchObject({ ready: false, status: "not_ready" });
  });

  it("is ready while Postgres answers, with or without a warm cache", async () => {
    const { readiness } = fakeDeps();
    await readiness.pingNow();
    expect(readiness.report()).toMatchObject({ ready: true, status: "ready", postgres: "up" });
  });

  it("without Postgres: ready (degraded) with licences cached, until a Check needs Postgres; ready again after a good ping", async () => {
    const { state, readiness } = fakeDeps();
    state.cached = 2;
    state.up = false;
    await readiness.pingNow();
    expect(readiness.report()).toMatchObject({ ready: true, status: "degraded", postgres: "down", cachedLicenses: 2 });
    const recorded: string[] = [];
    const recorder = readiness.watchingRecorder({ record: (entry) => recorded.push(entry.reason) });
    recorder.record({ decisionId: "d1", timeMs: 0, licenseId: "l", feature: "f", allow: true, reason: "OK", quantity: 1 });
    expect(readiness.report().ready).toBe(true);
    recorder.record({ decisionId: "d2", timeMs: 0, licenseId: null, feature: "f", allow: false, reason: "BACKEND_UNAVAILABLE", quantity: 1 });
    expect(recorded).toEqual(["OK", "BACKEND_UNAVAILABLE"]);
    expect(readiness.report()).toMatchObject({ ready: false, status: "not_ready", postgres: "down" });
    state.up = true;
    await readiness.pingNow();
    expect(readiness.report()).toMatchObject({ ready: true, status: "ready" });
  });

  it("without Postgres and with nothing cached, is not ready", async () => {
    const { state, readiness } = fakeDeps();
    state.up = false;
    await readiness.pingNow();
    expect(readiness.report()).toMatchObject({ ready: false, reason: "Postgres unreachable and no licence cached" });
  });

  it("a BACKEND_UNAVAILABLE decision while Postgres looked up triggers a ping at once (coalesced)", async () => {
    const { state, readiness } = fakeDeps();
    state.up = false;
    state.cached = 1;
    readiness.noteBackendUnavailable();
    readiness.noteBackendUnavailable();
    await readiness.pingNow();
    expect(state.pings).toBe(1);
    expect(readiness.report()).toMatchObject({ ready: false, postgres: "down" });
  });

  it("/readyz answers 200 or 503 with the report, reading state only (no ping per request)", async () => {
    const { state, readiness } = fakeDeps();
    const http = createHttpServer({ bindings: [], routes: [readinessRoute(readiness)], logger });
    const port = await http.listen("127.0.0.1", 0);
    try {
      const first = await fetch(`http://127.0.0.1:${port}/readyz`);
      expect(first.status).toBe(200);
      state.migrated = false;
      const second = await fetch(`http://127.0.0.1:${port}/readyz`);
      expect(second.status).toBe(503);
      expect(((await second.json()) as ReadinessReport).status).toBe("not_ready");
      expect(state.pings).toBe(0);
    } finally {
      await http.close(100);
    }
  });
});

const RULES = `
version: 1
accounts:
  - { id: acme, name: Acme }
plans:
  - name: pro
    entitlements:
      - { feature: reports.export, kind: boolean }
licenses:
  - { id: warm-licence, account: acme, plan: pro }
  - { id: cold-licence, account: acme, plan: pro }
api_keys:
  - { id: warm-key, license: warm-licence }
  - { id: cold-key, license: cold-licence }
`;

describe.skipIf(process.env.DATABASE_URL === undefined)("/readyz while PostgreSQL is down", () => {
  let database: TestStore;
  let proxy: TcpProxy;
  let store: Store;
  let harness: Harness;
  const keys = new Map<string, string>();
  const readyz = async () => {
    const response = await fetch(`${harness.httpUrl}/readyz`);
    return { status: response.status, body: (await response.json()) as ReadinessReport };
  };
  const check = (key: string) => harness.licensing.check({ credential: { case: "apiKey", value: keys.get(key) ?? "" }, feature: "reports.export" });

  beforeAll(async () => {
    database = await createTestStore("postgres");
    const target = new URL(database.databaseUrl ?? "");
    proxy = await startTcpProxy(Number(target.port || 5432), target.hostname);
    target.port = String(proxy.port);
    store = await createStore({ databaseUrl: target.toString(), dataDir: "/nonexistent", connectTimeoutMs: 500 });
    harness = await startHarness(store);
    for (const [id, key] of await harness.apply(RULES)) keys.set(id, key.secret);
  }, 60_000);

  afterAll(async () => {
    proxy?.restore();
    await harness?.close();
    await store?.close();
    await proxy?.close();
    await database?.drop();
  });

  it("stays ready from memory, flips to 503 when a licence must be loaded, and recovers", async () => {
    expect((await check("warm-key")).decision).toBe(Decision.ALLOW);
    expect(await readyz()).toMatchObject({ status: 200, body: { status: "ready" } });

    proxy.cut();
    await harness.readiness.pingNow();
    expect(await readyz()).toMatchObject({ status: 200, body: { status: "degraded", postgres: "down", cachedLicenses: 1 } });
    expect((await check("warm-key")).decision).toBe(Decision.ALLOW);
    expect((await readyz()).status).toBe(200);

    const cold = await check("cold-key");
    expect([cold.decision, cold.reason]).toEqual([Decision.DENY, Reason.BACKEND_UNAVAILABLE]);
    expect(await readyz()).toMatchObject({ status: 503, body: { status: "not_ready", postgres: "down" } });

    proxy.restore();
    await harness.readiness.pingNow();
    expect(await readyz()).toMatchObject({ status: 200, body: { status: "ready", postgres: "up" } });
    expect((await check("cold-key")).decision).toBe(Decision.ALLOW);
  }, 30_000);
});
