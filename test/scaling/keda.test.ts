/**
 * KEDA's external scaler through a @grpc/grpc-js client against createGrpcServer: the wire
 * protocol (package externalscaler, KEDA's field numbers), the demand metric and its cap at
 * the licensed capacity, and inactivity of a suspended licence.
 */
import { create, fromBinary, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import {
  GetMetricSpecResponseSchema,
  GetMetricsRequestSchema,
  GetMetricsResponseSchema,
  IsActiveResponseSchema,
  ScaledObjectRefSchema,
} from "../../src/gen/externalscaler/externalscaler_pb.js";
import { createLicensingCaches } from "../../src/licensing/caches.js";
import { createIdentityResolver } from "../../src/licensing/identity.js";
import { createCapacityScaler } from "../../src/scaling/capacity-scaler.js";
import { loadScaledLicenseSnapshot } from "../../src/scaling/capacity-snapshot.js";
import { countLiveSeats } from "../../src/scaling/capacity-store.js";
import { createForecast } from "../../src/scaling/forecast.js";
import { createKedaScaler, type KedaScaler } from "../../src/scaling/keda-scaler.js";
import { createGrpcServer, type GrpcServer } from "../../src/server/grpc-server.js";
import { createHealthRegistry } from "../../src/server/health.js";
import { acquireSeatLease } from "../../src/store/leases.js";
import { RawGrpcClient, grpcError } from "../support/grpc.js";
import { createTestStore, testBackends, type TestStore } from "../support/database.js";
import { LICENSE, SUSPENDED, seedScaling, silentLogger } from "./support.js";

const SERVICE = "/externalscaler.ExternalScaler";

describe.each(testBackends())("KEDA external scaler on %s", (backend) => {
  let store: TestStore;
  let keys: Record<string, string>;
  let server: GrpcServer;
  let client: RawGrpcClient;
  let keda: KedaScaler;
  let forecast: ReturnType<typeof createForecast>;

  beforeEach(async () => {
    store = await createTestStore(backend);
    keys = await seedScaling(store.db);
    forecast = createForecast({ halfLifeMs: 60_000 });
    const caches = createLicensingCaches({ db: store.db, now: Date.now, unknownKeyCacheMs: 0 });
    keda = createKedaScaler({
      resolveIdentity: createIdentityResolver({ keys: caches.keys }),
      snapshot: (id) => loadScaledLicenseSnapshot(store.db, id),
      liveInstances: (id, feature, nowMs) => countLiveSeats(store.db, id, feature, nowMs),
      forecast,
      now: Date.now,
      streamIntervalMs: 20,
    });
    server = createGrpcServer({ bindings: [], health: createHealthRegistry("SERVING"), reflectionFiles: [], logger: silentLogger });
    server.server.addService(keda.definition, keda.implementation);
    const port = await server.listen("127.0.0.1", 0);
    client = new RawGrpcClient(`127.0.0.1:${port}`);
  });
  afterEach(async () => {
    client.close();
    keda.close();
    await server.shutdown(1000);
    await store.drop();
  });

  function ref(metadata: Record<string, string>): MessageInitShape<typeof ScaledObjectRefSchema> {
    return { name: "worker", namespace: "default", scalerMetadata: { apiKey: keys["prod-key"] ?? "", feature: "nodes", ...metadata } };
  }
  const isActive = (metadata: Record<string, string> = {}) =>
    client.call(`${SERVICE}/IsActive`, ScaledObjectRefSchema, IsActiveResponseSchema, ref(metadata));
  const getMetrics = (metadata: Record<string, string> = {}) =>
    client.call(`${SERVICE}/GetMetrics`, GetMetricsRequestSchema, GetMetricsResponseSchema, { scaledObjectRef: ref(metadata), metricName: "s0-licensing" });

  async function takeSeats(count: number): Promise<void> {
    const nowMs = Date.now();
    for (let i = 0; i < count; i += 1) {
      await acquireSeatLease(store.db, {
        licenseId: LICENSE, feature: "nodes", instanceId: `pod-${i}`, replicaId: "r", limit: 4, nowMs, expiresAtMs: nowMs + 60_000,
      });
    }
  }

  test("GetMetricSpec names the metric and sends the target in both the int and the float field", async () => {
    const spec = await client.call(`${SERVICE}/GetMetricSpec`, ScaledObjectRefSchema, GetMetricSpecResponseSchema, ref({ targetPerReplica: "2.5" }));
    expect(spec.metricSpecs.map((s) => [s.metricName, s.targetSize, s.targetSizeFloat])).toEqual([["licensing-instances-nodes", 3n, 2.5]]);
  });

  test("demand is the live instances; active while there is demand", async () => {
    expect((await isActive()).result).toBe(false);
    await takeSeats(3);
    expect((await isActive()).result).toBe(true);
    const metrics = await getMetrics();
    expect(metrics.metricValues.map((v) => [v.metricName, v.metricValue, v.metricValueFloat])).toEqual([["s0-licensing", 3n, 3]]);
  });

  test("the metric is capped so that replicas never exceed the licensed capacity, and follows Scale", async () => {
    forecast.recordUtilization(LICENSE, "nodes", 50, 50, Date.now());
    // capacity 4, 2 units per replica → at most 2 replicas → metric ≤ 2 × target 10.
    const capped = await getMetrics({ metric: "reported", unitsPerReplica: "2", targetPerReplica: "10" });
    expect(capped.metricValues[0]?.metricValueFloat).toBe(20);
    const scaler = createCapacityScaler({ db: store.db, now: Date.now, currency: "EUR", logger: silentLogger });
    await scaler.scale({ licenseId: LICENSE, feature: "nodes", intent: { kind: "desired", units: 8 }, requestId: "", reason: "", caller: "test" });
    const grown = await getMetrics({ metric: "reported", unitsPerReplica: "2", targetPerReplica: "10" });
    expect(grown.metricValues[0]?.metricValueFloat).toBe(40);
  });

  test("a suspended licence is inactive with a zero metric", async () => {
    forecast.recordUtilization(SUSPENDED, "nodes", 3, 4, Date.now());
    const suspended = { apiKey: keys["off-key"] ?? "", metric: "reported" };
    expect((await isActive(suspended)).result).toBe(false);
    expect((await getMetrics(suspended)).metricValues[0]?.metricValue).toBe(0n);
  });

  test("StreamIsActive sends the state at once, then each change (here: the licence suspended)", async () => {
    await takeSeats(1);
    const raw = new grpc.Client(client.client.getChannel().getTarget(), grpc.credentials.createInsecure());
    const body = Buffer.from(toBinary(ScaledObjectRefSchema, create(ScaledObjectRefSchema, ref({}))));
    const call = raw.makeServerStreamRequest(`${SERVICE}/StreamIsActive`, (b: Buffer) => b, (b: Buffer) => b, body);
    const received: boolean[] = [];
    // The client's own cancel at the end surfaces as a CANCELLED error event.
    call.on("error", () => undefined);
    const waitFor = (count: number) =>
      new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`got ${JSON.stringify(received)}`)), 2000);
        const check = (): void => {
          if (received.length >= count) {
            clearTimeout(timer);
            resolve();
          }
        };
        call.on("data", (bytes: Buffer) => {
          received.push(fromBinary(IsActiveResponseSchema, bytes).result);
          check();
        });
        check();
      });
    const first = waitFor(1);
    await first;
    await store.db.updateTable("licenses").set({ status: "suspended" }).where("id", "=", LICENSE).execute();
    await waitFor(2);
    expect(received.slice(0, 2)).toEqual([true, false]);
    expect(keda.stats().openStreams).toBe(1);
    call.cancel();
    raw.close();
  });

  test("bad metadata is INVALID_ARGUMENT naming the key; an unknown key is UNAUTHENTICATED", async () => {
    expect(await grpcError(isActive({ feature: "" }))).toEqual({ code: grpc.status.INVALID_ARGUMENT, details: "scalerMetadata.feature: is required" });
    expect(await grpcError(isActive({ metric: "cpu" }))).toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    expect(await grpcError(isActive({ feature: "api.calls" }))).toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    expect(await grpcError(isActive({ apiKey: "lk_live_unknown" }))).toMatchObject({ code: grpc.status.UNAUTHENTICATED });
  });
});
