import { create, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  CheckRequestSchema,
  CheckResponseSchema,
  file_licensing_v1_licensing,
  LicensingService,
  ReportRequestSchema,
  ReportResponseSchema,
  ScaleRequestSchema,
  ScaleResponseSchema,
} from "../../src/gen/licensing/v1/licensing_pb.js";
import { createGrpcServer } from "../../src/server/grpc-server.js";
import type { GrpcServer } from "../../src/server/grpc-server.js";
import { createHealthRegistry } from "../../src/server/health.js";
import {
  errorOf,
  fakeCheckResponse,
  fakeLicensingBinding,
  LEAKED_SECRET,
  rawCheckHandler,
  rawClient,
  rawUnary,
  recordingLogger,
  typedUnary,
} from "./support.js";
import type { RecordingLogger } from "./support.js";

const CHECK = "/licensing.v1.LicensingService/Check";
const MAX_RECEIVE_BYTES = 64 * 1024;

// Once through grpc-js alone, once with Check on the fast lane (unary-fast-lane.ts): same answers.
describe.each([
  { path: "grpc-js", lane: false },
  { path: "the fast lane", lane: true },
])("gRPC port, Check through $path", ({ lane }) => {
  const seen: { signal?: AbortSignal } = {};
  const calls: { rpc: string; code: number }[] = [];
  let logger: RecordingLogger;
  let server: GrpcServer;
  let port: number;
  let client: grpc.Client;

  beforeAll(async () => {
    logger = recordingLogger();
    const binding = fakeLicensingBinding(seen);
    server = createGrpcServer({
      bindings: [binding],
      rawUnary: lane ? new Map([[CHECK, rawCheckHandler(binding)]]) : undefined,
      health: createHealthRegistry("SERVING"),
      reflectionFiles: [file_licensing_v1_licensing],
      maxReceiveMessageBytes: MAX_RECEIVE_BYTES,
      logger,
      onCall: (rpc, code) => calls.push({ rpc, code }),
    });
    port = await server.listen("127.0.0.1", 0);
    client = rawClient(port);
  });

  it(lane ? "puts Check on the fast lane" : "leaves every call to grpc-js", () => {
    expect(server.fastLane).toBe(lane);
  });

  afterAll(async () => {
    client.close();
    await server.shutdown(5_000);
  });

  function check(feature: string, metadata?: grpc.Metadata) {
    return typedUnary(client, CHECK, CheckRequestSchema, CheckResponseSchema, create(CheckRequestSchema, { feature }), metadata);
  }

  it("answers Check with the handler's response, and the handler sees request metadata", async () => {
    const metadata = new grpc.Metadata();
    metadata.set("x-decision-id", "dec_7");
    const result = await check("export", metadata);
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    const expected = fakeCheckResponse(create(CheckRequestSchema, { feature: "export" }), {
      header: (name) => (name === "x-decision-id" ? "dec_7" : undefined),
      signal: new AbortController().signal,
      transport: "grpc",
    });
    expect(result.response).toEqual(expected);
    expect(result.response.limit).toBe(1000n);
  });

  it("shows handlers metadata as grpc-js does: repeated values joined, no transport headers", async () => {
    const metadata = new grpc.Metadata();
    metadata.add("x-tenant", "t1");
    metadata.add("x-tenant", "t2");
    const seenAs = async (name: string) => {
      const result = await check(`header:${name}`, metadata);
      return result.ok ? result.response.message : `error ${result.error.code}`;
    };
    expect(await seenAs("x-tenant")).toBe("t1, t2");
    for (const name of [":authority", ":path", "te", "content-type", "grpc-accept-encoding", "x-absent"]) {
      expect(await seenAs(name)).toBe("undefined");
    }
  });

  it("answers the same whether the handler returns a value or a Promise", async () => {
    const sync = await check("export");
    const async = await check("async");
    expect(sync.ok && async.ok).toBe(true);
    if (!sync.ok || !async.ok) return;
    expect({ ...async.response, message: "" }).toEqual({ ...sync.response, message: "" });
  });

  it("answers undecodable bytes with INVALID_ARGUMENT naming the message type, then serves the next call", async () => {
    // 0xff: field 31 with wire type 7, which does not exist.
    const garbage = Buffer.from([0xff, 0xff, 0xff, 0xff]);
    const error = errorOf(await rawUnary(client, CHECK, garbage));
    expect(error.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(error.details).toMatch(/^request: cannot decode licensing\.v1\.CheckRequest: /);
    expect((await check("export")).ok).toBe(true);
  });

  it("keeps the code and message of a thrown ConnectError", async () => {
    const report = await typedUnary(client, "/licensing.v1.LicensingService/Report", ReportRequestSchema, ReportResponseSchema, create(ReportRequestSchema));
    expect(errorOf(report).code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(errorOf(report).details).toBe("events[0].id: must not be empty");
    const unavailable = errorOf(await check("unavailable"));
    expect(unavailable.code).toBe(grpc.status.UNAVAILABLE);
    expect(unavailable.details).toBe("store is away");
  });

  it("answers an unexpected Error with INTERNAL 'internal error', logging it with the method but not leaking it", async () => {
    const before = logger.errors.length;
    const scale = errorOf(await typedUnary(client, "/licensing.v1.LicensingService/Scale", ScaleRequestSchema, ScaleResponseSchema, create(ScaleRequestSchema)));
    expect(scale.code).toBe(grpc.status.INTERNAL);
    expect(scale.details).toBe("internal error");
    expect(JSON.stringify(scale.metadata.getMap())).not.toContain("hunter2");

    const rejected = errorOf(await check("async-error"));
    expect(rejected.code).toBe(grpc.status.INTERNAL);
    expect(rejected.details).toBe("internal error");

    const logged = logger.errors.slice(before);
    expect(logged.map((entry) => (entry.obj as { rpc: string }).rpc)).toEqual([
      "/licensing.v1.LicensingService/Scale",
      CHECK,
    ]);
    expect(((logged[0]?.obj as { err: Error }).err).message).toContain(LEAKED_SECRET);
  });

  it("rejects a request larger than maxReceiveMessageBytes with RESOURCE_EXHAUSTED", async () => {
    const error = errorOf(await check("x".repeat(MAX_RECEIVE_BYTES + 1)));
    expect(error.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect((await check("export")).ok).toBe(true);
  });

  it("answers UNIMPLEMENTED for a method no binding serves", async () => {
    const error = errorOf(await rawUnary(client, "/licensing.v1.LicensingService/Nope", new Uint8Array()));
    expect(error.code).toBe(grpc.status.UNIMPLEMENTED);
  });

  it("does not abort the signal of a call that was answered", async () => {
    expect((await check("signal")).ok).toBe(true);
    // grpc-js emits 'cancelled' when the stream closes, even after a normal answer.
    await new Promise((resolve) => setImmediate(resolve));
    expect(seen.signal?.aborted).toBe(false);
  });

  it("aborts the handler's signal when the deadline passes before the answer", async () => {
    const deadline = new Date(Date.now() + 50);
    const result = await new Promise<grpc.ServiceError | null>((resolve) => {
      client.makeUnaryRequest(
        CHECK,
        (b: Buffer) => b,
        (b: Buffer) => b,
        Buffer.from(toBinary(CheckRequestSchema, create(CheckRequestSchema, { feature: "hang" }))),
        new grpc.Metadata(),
        { deadline },
        (error) => resolve(error),
      );
    });
    expect(result?.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    const signal = seen.signal;
    if (signal === undefined) throw new Error("handler did not run");
    if (!signal.aborted) await new Promise((resolve) => signal.addEventListener("abort", resolve));
    expect(signal.aborted).toBe(true);
  });

  it("reports every finished call to onCall with its gRPC code", async () => {
    calls.length = 0;
    await check("export");
    await check("unavailable");
    expect(calls).toEqual([
      { rpc: CHECK, code: grpc.status.OK },
      { rpc: CHECK, code: grpc.status.UNAVAILABLE },
    ]);
  });

  it("serves Connect's gRPC client the same answers and codes", async () => {
    const connect = createClient(LicensingService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${port}` }));
    const response = await connect.check({ feature: "export" }, { headers: { "x-decision-id": "dec_9" } });
    expect(response.decisionId).toBe("dec_9");
    expect(response.remaining).toBe(999n);
    const error = await connect.report({}).then(
      () => undefined,
      (err: unknown) => ConnectError.from(err),
    );
    expect(error?.code).toBe(Code.InvalidArgument);
    expect(error?.rawMessage).toBe("events[0].id: must not be empty");
  });
});
