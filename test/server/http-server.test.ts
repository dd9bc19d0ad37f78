import { create, fromJson, toJson } from "@bufbuild/protobuf";
import type { JsonValue } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  CheckRequestSchema,
  CheckResponseSchema,
  file_licensing_v1_licensing,
  LicensingService,
} from "../../src/gen/licensing/v1/licensing_pb.js";
import { createGrpcServer } from "../../src/server/grpc-server.js";
import type { GrpcServer } from "../../src/server/grpc-server.js";
import { createHealthRegistry } from "../../src/server/health.js";
import { createHttpServer } from "../../src/server/http-server.js";
import type { HttpRoute, HttpServer } from "../../src/server/http-server.js";
import { fakeLicensingBinding, LEAKED_SECRET, rawClient, recordingLogger, typedUnary } from "./support.js";
import type { RecordingLogger } from "./support.js";

const MAX_BODY_BYTES = 64 * 1024;

function caught(promise: Promise<unknown>): Promise<ConnectError | undefined> {
  return promise.then(
    () => undefined,
    (err: unknown) => ConnectError.from(err),
  );
}

describe("HTTP port", () => {
  let logger: RecordingLogger;
  let http: HttpServer;
  let grpcServer: GrpcServer;
  let base: string;
  let grpcClient: grpc.Client;

  const routes: HttpRoute[] = [
    { method: "GET", path: "/healthz", handle: (_req, res) => void res.end("ok") },
    {
      path: "/authz/",
      prefix: true,
      handle: async (req, res) => {
        await Promise.resolve();
        res.writeHead(200, { "x-seen-path": req.url ?? "" }).end();
      },
    },
    {
      path: "/boom",
      handle: () => {
        throw new Error(LEAKED_SECRET);
      },
    },
  ];

  beforeAll(async () => {
    logger = recordingLogger();
    const bindings = [fakeLicensingBinding()];
    http = createHttpServer({ bindings, routes, logger, maxBodyBytes: MAX_BODY_BYTES });
    base = `http://127.0.0.1:${await http.listen("127.0.0.1", 0)}`;
    grpcServer = createGrpcServer({ bindings, health: createHealthRegistry("SERVING"), reflectionFiles: [file_licensing_v1_licensing], logger });
    grpcClient = rawClient(await grpcServer.listen("127.0.0.1", 0));
  });

  afterAll(async () => {
    grpcClient.close();
    await Promise.all([http.close(5_000), grpcServer.shutdown(5_000)]);
  });

  function postJson(path: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
    return fetch(`${base}${path}`, {
      method: "POST",
      headers: { "content-type": "application/json", ...headers },
      body: JSON.stringify(body),
    });
  }

  it("answers Check over Connect JSON exactly as over gRPC", async () => {
    const request = create(CheckRequestSchema, { feature: "export", credential: { case: "apiKey", value: "k" } });
    const viaGrpcMetadata = new grpc.Metadata();
    viaGrpcMetadata.set("x-decision-id", "dec_1");
    const viaGrpc = await typedUnary(grpcClient, "/licensing.v1.LicensingService/Check", CheckRequestSchema, CheckResponseSchema, request, viaGrpcMetadata);
    if (!viaGrpc.ok) throw viaGrpc.error;

    const response = await postJson("/licensing.v1.LicensingService/Check", toJson(CheckRequestSchema, request), { "x-decision-id": "dec_1" });
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toBe("application/json");
    const viaJson = fromJson(CheckResponseSchema, (await response.json()) as JsonValue);
    expect(viaJson).toEqual(viaGrpc.response);
  });

  it("answers the same through a Promise-returning handler, over the Connect and gRPC-Web clients", async () => {
    for (const transport of [
      createConnectTransport({ baseUrl: base, httpVersion: "1.1" }),
      createGrpcWebTransport({ baseUrl: base, httpVersion: "1.1" }),
    ]) {
      const client = createClient(LicensingService, transport);
      const response = await client.check({ feature: "async" }, { headers: { "x-decision-id": "dec_2" } });
      expect(response.decisionId).toBe("dec_2");
      expect(response.remaining).toBe(999n);
    }
  });

  it("keeps a thrown ConnectError's code and message", async () => {
    const client = createClient(LicensingService, createConnectTransport({ baseUrl: base, httpVersion: "1.1" }));
    const error = await caught(client.report({}));
    expect(error?.code).toBe(Code.InvalidArgument);
    expect(error?.rawMessage).toBe("events[0].id: must not be empty");

    const response = await postJson("/licensing.v1.LicensingService/Report", {});
    expect(response.status).toBe(400);
    expect(await response.json()).toEqual({ code: "invalid_argument", message: "events[0].id: must not be empty" });
  });

  it("answers an unexpected Error with Internal 'internal error', logged and not leaked", async () => {
    const before = logger.errors.length;
    const response = await postJson("/licensing.v1.LicensingService/Scale", {});
    expect(response.status).toBe(500);
    const body = await response.text();
    expect(JSON.parse(body)).toEqual({ code: "internal", message: "internal error" });
    expect(body).not.toContain("hunter2");

    const client = createClient(LicensingService, createConnectTransport({ baseUrl: base, httpVersion: "1.1" }));
    expect((await caught(client.check({ feature: "async-error" })))?.code).toBe(Code.Internal);

    expect(logger.errors.slice(before).map((entry) => (entry.obj as { rpc: string }).rpc)).toEqual([
      "/licensing.v1.LicensingService/Scale",
      "/licensing.v1.LicensingService/Check",
    ]);
  });

  it("rejects a body larger than maxBodyBytes with ResourceExhausted", async () => {
    const client = createClient(LicensingService, createConnectTransport({ baseUrl: base, httpVersion: "1.1" }));
    const error = await caught(client.check({ feature: "x".repeat(MAX_BODY_BYTES + 1) }));
    expect(error?.code).toBe(Code.ResourceExhausted);
  });

  it("answers unknown paths 404 with a JSON error body", async () => {
    const response = await fetch(`${base}/nope?x=1`);
    expect(response.status).toBe(404);
    expect(response.headers.get("content-type")).toBe("application/json");
    expect(await response.json()).toEqual({ error: "not_found", message: "no route for GET /nope" });
  });

  it("serves plain routes: exact, prefix, and 405 for the wrong method", async () => {
    const healthz = await fetch(`${base}/healthz`);
    expect(healthz.status).toBe(200);
    expect(await healthz.text()).toBe("ok");

    const authz = await fetch(`${base}/authz/orders/7?q=1`);
    expect(authz.status).toBe(200);
    expect(authz.headers.get("x-seen-path")).toBe("/authz/orders/7?q=1");

    const wrongMethod = await fetch(`${base}/healthz`, { method: "DELETE" });
    expect(wrongMethod.status).toBe(405);
    expect(await wrongMethod.json()).toMatchObject({ error: "method_not_allowed" });
  });

  it("answers a throwing route 500 with a JSON body that does not leak the error, and logs it", async () => {
    const before = logger.errors.length;
    const response = await fetch(`${base}/boom`);
    expect(response.status).toBe(500);
    const body = await response.text();
    expect(JSON.parse(body)).toEqual({ error: "internal", message: "internal error" });
    expect(body).not.toContain("hunter2");
    expect(logger.errors.slice(before)).toHaveLength(1);
  });
});

describe("HTTP close", () => {
  function serverWithGate() {
    let release: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let entered: () => void = () => undefined;
    const inside = new Promise<void>((resolve) => (entered = resolve));
    const http = createHttpServer({
      bindings: [],
      logger: recordingLogger(),
      routes: [
        { path: "/quick", handle: (_req, res) => void res.end("quick") },
        {
          path: "/slow",
          handle: async (_req, res) => {
            entered();
            await gate;
            res.end("done");
          },
        },
      ],
    });
    return { http, release, inside };
  }

  it("lets an in-flight request finish, and does not wait on idle keep-alive connections", async () => {
    const { http, release, inside } = serverWithGate();
    const base = `http://127.0.0.1:${await http.listen("127.0.0.1", 0)}`;
    // fetch keeps this connection alive after the answer: close must not wait for it to time out.
    expect(await (await fetch(`${base}/quick`)).text()).toBe("quick");
    const slow = fetch(`${base}/slow`);
    await inside;
    // A grace far beyond the test timeout: only a clean drain lets this resolve in time.
    const closed = http.close(600_000);
    release();
    const response = await slow;
    expect(response.status).toBe(200);
    expect(await response.text()).toBe("done");
    await closed;
    await expect(fetch(`${base}/quick`)).rejects.toThrow();
  });

  it("cuts requests still running when the grace period ends", async () => {
    const { http, inside, release } = serverWithGate();
    const base = `http://127.0.0.1:${await http.listen("127.0.0.1", 0)}`;
    const slow = fetch(`${base}/slow`);
    await inside;
    await http.close(20);
    await expect(slow).rejects.toThrow();
    release();
  });
});
