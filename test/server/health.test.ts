import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import {
  HealthCheckRequestSchema,
  HealthCheckResponse_ServingStatus as Wire,
  HealthCheckResponseSchema,
} from "../../src/gen/grpc/health/v1/health_pb.js";
import { createGrpcServer } from "../../src/server/grpc-server.js";
import type { GrpcServer } from "../../src/server/grpc-server.js";
import { createHealthRegistry } from "../../src/server/health.js";
import type { HealthRegistry, ServingStatus } from "../../src/server/health.js";
import { errorOf, fakeLicensingBinding, Inbox, rawClient, rawUnary, recordingLogger } from "./support.js";

const CHECK = "/grpc.health.v1.Health/Check";
const WATCH = "/grpc.health.v1.Health/Watch";
const LICENSING = "licensing.v1.LicensingService";

describe("health registry", () => {
  it("knows only the whole server at first, NOT_SERVING unless told otherwise", () => {
    expect(createHealthRegistry().get("")).toBe("NOT_SERVING");
    expect(createHealthRegistry("SERVING").get("")).toBe("SERVING");
    expect(createHealthRegistry().get(LICENSING)).toBeUndefined();
  });

  it("tells watchers about changes only, and setAll reaches every registered service", () => {
    const health = createHealthRegistry();
    const heard: ServingStatus[] = [];
    const stop = health.watch(LICENSING, (status) => heard.push(status));
    health.set(LICENSING, "NOT_SERVING");
    health.set(LICENSING, "NOT_SERVING");
    health.setAll("SERVING");
    expect(health.get("")).toBe("SERVING");
    stop();
    health.set(LICENSING, "NOT_SERVING");
    expect(heard).toEqual(["NOT_SERVING", "SERVING"]);
  });
});

describe("grpc.health.v1.Health", () => {
  let server: GrpcServer | undefined;
  let client: grpc.Client | undefined;

  afterEach(async () => {
    client?.close();
    await server?.shutdown(1_000);
  });

  async function start(health: HealthRegistry): Promise<grpc.Client> {
    server = createGrpcServer({ bindings: [fakeLicensingBinding()], health, reflectionFiles: [], logger: recordingLogger() });
    client = rawClient(await server.listen("127.0.0.1", 0));
    return client;
  }

  function request(service: string): Buffer {
    return Buffer.from(toBinary(HealthCheckRequestSchema, create(HealthCheckRequestSchema, { service })));
  }

  /** Opens a Watch; statuses arrive in `updates`, the final status in `ended`. */
  function watch(client: grpc.Client, service: string) {
    const updates = new Inbox<Wire>();
    const call = client.makeServerStreamRequest(WATCH, (b: Buffer) => b, (b: Buffer) => b, request(service));
    call.on("data", (bytes: Buffer) => updates.push(fromBinary(HealthCheckResponseSchema, bytes).status));
    const ended = new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve));
    call.on("error", () => undefined); // the status event carries the outcome
    return { call, updates, ended };
  }

  it("Check answers the status of the server and of a service, NOT_FOUND for an unknown one", async () => {
    const health = createHealthRegistry("SERVING");
    health.set(LICENSING, "NOT_SERVING");
    const client = await start(health);
    const whole = await rawUnary(client, CHECK, request(""));
    expect(whole.ok && fromBinary(HealthCheckResponseSchema, whole.bytes).status).toBe(Wire.SERVING);
    const service = await rawUnary(client, CHECK, request(LICENSING));
    expect(service.ok && fromBinary(HealthCheckResponseSchema, service.bytes).status).toBe(Wire.NOT_SERVING);
    expect(errorOf(await rawUnary(client, CHECK, request("no.such.Service"))).code).toBe(grpc.status.NOT_FOUND);
  });

  it("Check answers INVALID_ARGUMENT for undecodable bytes", async () => {
    const client = await start(createHealthRegistry());
    const error = errorOf(await rawUnary(client, CHECK, Buffer.from([0xff, 0xff])));
    expect(error.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(error.details).toContain("grpc.health.v1.HealthCheckRequest");
  });

  it("Watch sends the current status, then NOT_SERVING -> SERVING -> NOT_SERVING as they happen", async () => {
    const health = createHealthRegistry("NOT_SERVING");
    const { call, updates } = watch(await start(health), "");
    expect(await updates.next()).toBe(Wire.NOT_SERVING);
    health.set("", "SERVING");
    expect(await updates.next()).toBe(Wire.SERVING);
    health.set("", "NOT_SERVING");
    expect(await updates.next()).toBe(Wire.NOT_SERVING);
    call.cancel();
  });

  it("Watch of an unknown service sends SERVICE_UNKNOWN, then its status once it is registered", async () => {
    const health = createHealthRegistry("SERVING");
    const { call, updates } = watch(await start(health), LICENSING);
    expect(await updates.next()).toBe(Wire.SERVICE_UNKNOWN);
    health.set(LICENSING, "SERVING");
    expect(await updates.next()).toBe(Wire.SERVING);
    call.cancel();
  });

  it("shutdown with an open Watch completes: the watcher sees NOT_SERVING and a clean end", async () => {
    const health = createHealthRegistry("SERVING");
    const { updates, ended } = watch(await start(health), "");
    expect(await updates.next()).toBe(Wire.SERVING);
    // A grace far beyond the test timeout: only a clean drain lets this resolve in time.
    await server?.shutdown(600_000);
    expect(await updates.next()).toBe(Wire.NOT_SERVING);
    expect((await ended).code).toBe(grpc.status.OK);
    expect(health.get("")).toBe("NOT_SERVING");
  });

  it("a cancelled Watch ends CANCELLED and does not hold up a later shutdown", async () => {
    const health = createHealthRegistry("SERVING");
    const { call, updates, ended } = watch(await start(health), "");
    expect(await updates.next()).toBe(Wire.SERVING);
    call.cancel();
    expect((await ended).code).toBe(grpc.status.CANCELLED);
    // Shutting down (which notifies watchers) must not write to the cancelled stream.
    await server?.shutdown(600_000);
  });
});
