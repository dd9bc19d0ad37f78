import { create, createFileRegistry, fromBinary, toBinary } from "@bufbuild/protobuf";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type { FileDescriptorProto } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ServerReflectionRequestSchema,
  ServerReflectionResponseSchema,
} from "../../src/gen/grpc/reflection/v1/reflection_pb.js";
import type { ServerReflectionResponse } from "../../src/gen/grpc/reflection/v1/reflection_pb.js";
import { file_licensing_v1_licensing } from "../../src/gen/licensing/v1/licensing_pb.js";
import { createGrpcServer } from "../../src/server/grpc-server.js";
import type { GrpcServer } from "../../src/server/grpc-server.js";
import { createHealthRegistry } from "../../src/server/health.js";
import { fakeLicensingBinding, Inbox, rawClient, rawUnary, recordingLogger } from "./support.js";

type ReflectionRequestInit = MessageInitShape<typeof ServerReflectionRequestSchema>;

/** One reflection stream: `ask` sends a request and resolves with its answer. */
function openStream(client: grpc.Client, version: "v1" | "v1alpha") {
  const answers = new Inbox<ServerReflectionResponse>();
  const path = `/grpc.reflection.${version}.ServerReflection/ServerReflectionInfo`;
  const call = client.makeBidiStreamRequest(path, (b: Buffer) => b, (b: Buffer) => b);
  // v1alpha is wire-identical to v1, so the v1 schema decodes both.
  call.on("data", (bytes: Buffer) => answers.push(fromBinary(ServerReflectionResponseSchema, bytes)));
  const ended = new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve));
  call.on("error", () => undefined); // the status event carries the outcome
  return {
    call,
    ended,
    ask(init: ReflectionRequestInit): Promise<ServerReflectionResponse> {
      call.write(Buffer.from(toBinary(ServerReflectionRequestSchema, create(ServerReflectionRequestSchema, init))));
      return answers.next();
    },
  };
}

function descriptorsOf(response: ServerReflectionResponse): FileDescriptorProto[] {
  if (response.messageResponse.case !== "fileDescriptorResponse") {
    throw new Error(`expected file descriptors, got ${response.messageResponse.case ?? "nothing"}`);
  }
  return response.messageResponse.value.fileDescriptorProto.map((bytes) => fromBinary(FileDescriptorProtoSchema, bytes));
}

describe("server reflection", () => {
  let server: GrpcServer;
  let client: grpc.Client;

  beforeAll(async () => {
    server = createGrpcServer({
      bindings: [fakeLicensingBinding()],
      health: createHealthRegistry("SERVING"),
      reflectionFiles: [file_licensing_v1_licensing],
      logger: recordingLogger(),
    });
    client = rawClient(await server.listen("127.0.0.1", 0));
  });

  afterAll(async () => {
    client.close();
    await server.shutdown(5_000);
  });

  describe.each(["v1", "v1alpha"] as const)("%s", (version) => {
    it("lists our services, health and both reflection services", async () => {
      const stream = openStream(client, version);
      const response = await stream.ask({ host: "localhost", messageRequest: { case: "listServices", value: "*" } });
      expect(response.validHost).toBe("localhost");
      expect(response.messageResponse.case).toBe("listServicesResponse");
      const names = response.messageResponse.case === "listServicesResponse"
        ? response.messageResponse.value.service.map((s) => s.name)
        : [];
      expect(names).toEqual([
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "licensing.v1.LicensingService",
      ]);
      stream.call.end();
      expect((await stream.ended).code).toBe(grpc.status.OK);
    });

    it("answers file_containing_symbol with the file and its imports, enough to build the service and call Check", async () => {
      const stream = openStream(client, version);
      const files = descriptorsOf(
        await stream.ask({ messageRequest: { case: "fileContainingSymbol", value: "licensing.v1.LicensingService" } }),
      );
      expect(files[0]?.name).toBe("licensing/v1/licensing.proto");
      expect(files.map((f) => f.name)).toEqual(
        expect.arrayContaining(["google/protobuf/timestamp.proto", "google/protobuf/duration.proto"]),
      );
      // What grpcurl does: build descriptors from the answer alone, then encode a request with them.
      const [root] = files;
      if (root === undefined) throw new Error("no descriptors");
      const registry = createFileRegistry(root, (name) => files.find((file) => file.name === name));
      const service = registry.getService("licensing.v1.LicensingService");
      const method = service?.methods.find((m) => m.name === "Check");
      if (method === undefined) throw new Error("Check is not described");
      const request = create(method.input, {});
      const bytes = toBinary(method.input, request);
      const answer = await rawUnary(client, `/${service?.typeName}/${method.name}`, bytes);
      expect(answer.ok).toBe(true);
      if (answer.ok) expect(fromBinary(method.output, answer.bytes)).toHaveProperty("licenseId", "lic_123");
      stream.call.end();
    });

    it("finds methods, nested and enum symbols, and sends each import once per stream", async () => {
      const stream = openStream(client, version);
      const first = descriptorsOf(
        await stream.ask({ messageRequest: { case: "fileContainingSymbol", value: "licensing.v1.LicensingService.Check" } }),
      );
      expect(first.length).toBeGreaterThan(1);
      for (const symbol of ["licensing.v1.Decision", "licensing.v1.CheckResponse", "licensing.v1.CheckRequest.feature"]) {
        const again = descriptorsOf(await stream.ask({ messageRequest: { case: "fileContainingSymbol", value: symbol } }));
        expect(again.map((f) => f.name)).toEqual(["licensing/v1/licensing.proto"]);
      }
      stream.call.end();
    });

    it("answers file_by_filename for an imported well-known file", async () => {
      const stream = openStream(client, version);
      const files = descriptorsOf(
        await stream.ask({ messageRequest: { case: "fileByFilename", value: "google/protobuf/timestamp.proto" } }),
      );
      expect(files.map((f) => f.name)).toEqual(["google/protobuf/timestamp.proto"]);
      expect(files[0]?.messageType.map((m) => m.name)).toEqual(["Timestamp"]);
      stream.call.end();
    });

    it("answers unknown symbols and extension queries with a NOT_FOUND error_response, keeping the stream open", async () => {
      const stream = openStream(client, version);
      const unknown = await stream.ask({ messageRequest: { case: "fileContainingSymbol", value: "licensing.v1.Nope" } });
      expect(unknown.messageResponse.case).toBe("errorResponse");
      expect(unknown.messageResponse.case === "errorResponse" && unknown.messageResponse.value.errorCode).toBe(5);
      const extension = await stream.ask({
        messageRequest: { case: "fileContainingExtension", value: { containingType: "licensing.v1.CheckRequest", extensionNumber: 100 } },
      });
      expect(extension.messageResponse.case === "errorResponse" && extension.messageResponse.value.errorCode).toBe(5);
      const numbers = await stream.ask({ messageRequest: { case: "allExtensionNumbersOfType", value: "licensing.v1.CheckRequest" } });
      expect(numbers.messageResponse.case === "allExtensionNumbersResponse" && numbers.messageResponse.value.extensionNumber).toEqual([]);
      const list = await stream.ask({ messageRequest: { case: "listServices", value: "" } });
      expect(list.messageResponse.case).toBe("listServicesResponse");
      stream.call.end();
    });

    it("ends the stream with INVALID_ARGUMENT for undecodable bytes", async () => {
      const stream = openStream(client, version);
      stream.call.write(Buffer.from([0xff, 0xff, 0xff]));
      const status = await stream.ended;
      expect(status.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(status.details).toContain(`cannot decode grpc.reflection.${version}.ServerReflectionRequest`);
    });
  });

  it("shutdown does not wait for an idle reflection stream", async () => {
    const other = createGrpcServer({
      bindings: [],
      health: createHealthRegistry("SERVING"),
      reflectionFiles: [file_licensing_v1_licensing],
      logger: recordingLogger(),
    });
    const otherClient = rawClient(await other.listen("127.0.0.1", 0));
    const stream = openStream(otherClient, "v1");
    await stream.ask({ messageRequest: { case: "listServices", value: "" } });
    // A grace far beyond the test timeout: only a clean drain lets this resolve in time.
    await other.shutdown(600_000);
    expect((await stream.ended).code).toBe(grpc.status.OK);
    otherClient.close();
  });
});
