/**
 * gRPC server reflection (`grpc.reflection.v1` and `v1alpha`), so grpcurl, ghz and Postman can
 * describe and call the services without the .proto files.
 *
 * The index is built once from the generated file descriptors (protobuf-es keeps each file's
 * FileDescriptorProto); answers are the serialized descriptors of the file that holds the asked
 * symbol plus its transitive imports (google/protobuf/timestamp.proto and the like), because a
 * client can only build a descriptor once it has every import.
 *
 * v1alpha is v1 under another package name: the messages are identical field for field, so both
 * are decoded and encoded with the v1 schemas.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type { DescFile, DescMessage, DescService } from "@bufbuild/protobuf";
import { nestedTypes } from "@bufbuild/protobuf/reflect";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type * as grpc from "@grpc/grpc-js";
import { Code } from "@connectrpc/connect";
import {
  ServerReflection as ServerReflectionV1,
  ServerReflectionRequestSchema,
  ServerReflectionResponseSchema,
  file_grpc_reflection_v1_reflection,
} from "../gen/grpc/reflection/v1/reflection_pb.js";
import type {
  ServerReflectionRequest,
  ServerReflectionResponse,
} from "../gen/grpc/reflection/v1/reflection_pb.js";
import {
  ServerReflection as ServerReflectionV1alpha,
  file_grpc_reflection_v1alpha_reflection,
} from "../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { toGrpcStatus, undecodableRequest } from "./errors.js";
import type { RawServiceMount } from "./grpc-server.js";

/** The files that declare the reflection services themselves, always listed. */
export const REFLECTION_FILES: readonly DescFile[] = [
  file_grpc_reflection_v1_reflection,
  file_grpc_reflection_v1alpha_reflection,
];

/** What reflection knows: listed services, and every file reachable from them by import. */
export interface ReflectionIndex {
  /** Fully-qualified names of the services declared in the indexed files, sorted. */
  readonly services: readonly string[];
  /** The file by its path (`licensing/v1/licensing.proto`), or undefined. */
  fileByName(name: string): DescFile | undefined;
  /**
   * The file declaring a fully-qualified symbol: message, field, oneof, enum, enum value,
   * service, method or extension, nested or not. Undefined when unknown.
   */
  fileBySymbol(symbol: string): DescFile | undefined;
  /** True when `typeName` is a message this index knows. */
  hasMessage(typeName: string): boolean;
  /** The serialized FileDescriptorProto of an indexed file (computed once). */
  encode(file: DescFile): Uint8Array;
}

/** Indexes `files` (whose services are listed) and, transitively, everything they import. */
export function createReflectionIndex(files: readonly DescFile[]): ReflectionIndex {
  const byName = new Map<string, DescFile>();
  for (const file of files) collectFile(file, byName);
  const bySymbol = new Map<string, DescFile>();
  const messages = new Set<string>();
  for (const file of byName.values()) indexSymbols(file, bySymbol, messages);
  const services = [...new Set(files.flatMap((file) => file.services.map((s) => s.typeName)))].sort();
  const encoded = new Map<DescFile, Uint8Array>();
  return {
    services,
    fileByName: (name) => byName.get(name),
    fileBySymbol: (symbol) => bySymbol.get(symbol),
    hasMessage: (typeName) => messages.has(typeName),
    encode(file) {
      let bytes = encoded.get(file);
      if (bytes === undefined) {
        bytes = toBinary(FileDescriptorProtoSchema, file.proto);
        encoded.set(file, bytes);
      }
      return bytes;
    },
  };
}

function collectFile(file: DescFile, byName: Map<string, DescFile>): void {
  if (byName.has(file.proto.name)) return;
  byName.set(file.proto.name, file);
  for (const dependency of file.dependencies) collectFile(dependency, byName);
}

function indexSymbols(file: DescFile, bySymbol: Map<string, DescFile>, messages: Set<string>): void {
  for (const type of nestedTypes(file)) {
    bySymbol.set(type.typeName, file);
    switch (type.kind) {
      case "message":
        messages.add(type.typeName);
        indexMessageMembers(type, file, bySymbol);
        break;
      case "enum": {
        // Enum values are scoped like their enum's siblings (C++ scoping rules), not inside it.
        const scope = type.typeName.slice(0, type.typeName.length - type.name.length);
        for (const value of type.values) bySymbol.set(scope + value.name, file);
        break;
      }
      case "service":
        indexServiceMembers(type, file, bySymbol);
        break;
      case "extension":
        break;
    }
  }
}

function indexMessageMembers(message: DescMessage, file: DescFile, bySymbol: Map<string, DescFile>): void {
  for (const field of message.fields) bySymbol.set(`${message.typeName}.${field.name}`, file);
  for (const oneof of message.oneofs) bySymbol.set(`${message.typeName}.${oneof.name}`, file);
}

function indexServiceMembers(service: DescService, file: DescFile, bySymbol: Map<string, DescFile>): void {
  for (const method of service.methods) bySymbol.set(`${service.typeName}.${method.name}`, file);
}

/**
 * Answers one reflection request.
 *
 * `sent` holds the names of the files already sent on this stream: imports in it are not sent
 * again (the client has them), but the file asked for always is, as grpc-go does.
 */
export function answerReflection(
  index: ReflectionIndex,
  request: ServerReflectionRequest,
  sent: Set<string>,
): ServerReflectionResponse {
  const response = create(ServerReflectionResponseSchema, { validHost: request.host, originalRequest: request });
  const asked = request.messageRequest;
  switch (asked.case) {
    case "listServices":
      response.messageResponse = {
        case: "listServicesResponse",
        value: { $typeName: "grpc.reflection.v1.ListServiceResponse", service: index.services.map(serviceResponse) },
      };
      break;
    case "fileByFilename":
      response.messageResponse = fileResponse(index, index.fileByName(asked.value), sent, `file "${asked.value}"`);
      break;
    case "fileContainingSymbol":
      response.messageResponse = fileResponse(index, index.fileBySymbol(asked.value), sent, `symbol "${asked.value}"`);
      break;
    case "fileContainingExtension":
      // No indexed file declares extensions.
      response.messageResponse = errorResponse(Code.NotFound, `extension ${asked.value.containingType}(${asked.value.extensionNumber}) not found`);
      break;
    case "allExtensionNumbersOfType":
      response.messageResponse = index.hasMessage(asked.value)
        ? {
            case: "allExtensionNumbersResponse",
            value: { $typeName: "grpc.reflection.v1.ExtensionNumberResponse", baseTypeName: asked.value, extensionNumber: [] },
          }
        : errorResponse(Code.NotFound, `type "${asked.value}" not found`);
      break;
    case undefined:
      response.messageResponse = errorResponse(Code.InvalidArgument, "message_request: no request given");
      break;
  }
  return response;
}

type MessageResponse = ServerReflectionResponse["messageResponse"];

function serviceResponse(name: string): { $typeName: "grpc.reflection.v1.ServiceResponse"; name: string } {
  return { $typeName: "grpc.reflection.v1.ServiceResponse", name };
}

function errorResponse(code: Code, message: string): MessageResponse {
  return {
    case: "errorResponse",
    value: { $typeName: "grpc.reflection.v1.ErrorResponse", errorCode: code, errorMessage: message },
  };
}

/** The file first, then its transitive imports not yet sent on this stream. */
function fileResponse(
  index: ReflectionIndex,
  file: DescFile | undefined,
  sent: Set<string>,
  what: string,
): MessageResponse {
  if (file === undefined) return errorResponse(Code.NotFound, `${what} not found`);
  const descriptors = [index.encode(file)];
  sent.add(file.proto.name);
  appendImports(index, file, sent, descriptors);
  return {
    case: "fileDescriptorResponse",
    value: { $typeName: "grpc.reflection.v1.FileDescriptorResponse", fileDescriptorProto: descriptors },
  };
}

function appendImports(index: ReflectionIndex, file: DescFile, sent: Set<string>, out: Uint8Array[]): void {
  for (const dependency of file.dependencies) {
    if (sent.has(dependency.proto.name)) continue;
    sent.add(dependency.proto.name);
    out.push(index.encode(dependency));
    appendImports(index, dependency, sent, out);
  }
}

/**
 * The reflection services (v1 and v1alpha) over `index`, for grpc-server.ts to mount.
 *
 * Each stream answers its requests in order and ends when the client half-closes. `close()` ends
 * open streams so a graceful shutdown does not wait on an idle grpcurl.
 */
export function createReflectionServices(index: ReflectionIndex): RawServiceMount[] {
  /** Open streams, each with the function that ends it (once). */
  const openStreams = new Map<grpc.ServerDuplexStream<Buffer, Uint8Array>, () => void>();
  const close = (): void => {
    for (const end of [...openStreams.values()]) end();
  };
  const mount = (service: DescService): RawServiceMount => ({
    service,
    implementation: {
      ServerReflectionInfo: (call: grpc.ServerDuplexStream<Buffer, Uint8Array>) =>
        serveStream(index, service, call, openStreams),
    },
    close,
  });
  return [mount(ServerReflectionV1), mount(ServerReflectionV1alpha)];
}

function serveStream(
  index: ReflectionIndex,
  service: DescService,
  call: grpc.ServerDuplexStream<Buffer, Uint8Array>,
  openStreams: Map<grpc.ServerDuplexStream<Buffer, Uint8Array>, () => void>,
): void {
  const requestTypeName = `${service.typeName.slice(0, service.typeName.lastIndexOf("."))}.ServerReflectionRequest`;
  const sent = new Set<string>();
  let done = false;
  /** Marks the stream finished; true for the first caller only, who then owns ending it. */
  const finish = (): boolean => {
    if (done) return false;
    done = true;
    openStreams.delete(call);
    return true;
  };
  openStreams.set(call, () => {
    if (finish()) call.end();
  });
  call.on("data", (bytes: Buffer) => {
    if (done) return;
    let request: ServerReflectionRequest;
    try {
      request = fromBinary(ServerReflectionRequestSchema, bytes);
    } catch (err) {
      finish();
      // grpc-js turns an 'error' event on a server stream into the call's status.
      call.emit("error", toGrpcStatus(undecodableRequest(requestTypeName, err)));
      return;
    }
    call.write(toBinary(ServerReflectionResponseSchema, answerReflection(index, request, sent)));
  });
  call.on("end", () => {
    if (finish()) call.end();
  });
  call.once("cancelled", finish);
}
