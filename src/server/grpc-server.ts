/**
 * The gRPC port, on @grpc/grpc-js (about 5x the throughput of connect-node for unary calls).
 *
 * Handlers come as `ServiceBinding`s (rpc.ts) and are mounted with grpc-js service definitions
 * built from the protobuf-es service descriptors. grpc-js only moves bytes here: the request
 * deserializer passes the raw Buffer through and decoding happens inside the call wrapper, because
 * grpc-js answers INTERNAL when a deserializer throws, and undecodable input is the client's
 * fault (INVALID_ARGUMENT). Responses are encoded in the wrapper too, so a response that cannot
 * be encoded is logged like any other bug.
 *
 * The `rawUnary` methods (Check, Envoy's Check) are answered on the fast lane (unary-fast-lane.ts),
 * straight on node:http2 in front of grpc-js, which still serves every other call on the port and
 * the rare forms of those two (compressed requests) through the same handlers.
 *
 * Also mounted: `grpc.health.v1.Health` (health.ts) and server reflection v1/v1alpha
 * (reflection.ts), so grpcurl, ghz and Kubernetes probes work without .proto files.
 *
 * The server only listens when asked; nothing here reads the environment.
 */
import { toBinary } from "@bufbuild/protobuf";
import type { DescFile, DescMessage, DescMethod, DescMethodUnary, DescService, MessageShape } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { file_grpc_health_v1_health } from "../gen/grpc/health/v1/health_pb.js";
import { decodeRequest, isUnexpectedError, toGrpcStatus } from "./errors.js";
import { createHealthService } from "./health.js";
import type { HealthRegistry } from "./health.js";
import { createReflectionIndex, createReflectionServices, REFLECTION_FILES } from "./reflection.js";
import type { RpcContext, ServiceBinding, UnaryHandler } from "./rpc.js";
import { installFastLane } from "./unary-fast-lane.js";

/** The two log levels the transports use; a pino logger fits. */
export interface ServerLogger {
  error(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

/**
 * Called once per finished unary call of a binding (not health or reflection), for metrics.
 * `rpc` is the gRPC path (`/licensing.v1.LicensingService/Check`), `code` the gRPC status code.
 * Must be cheap and must not throw.
 */
export type GrpcCallObserver = (rpc: string, code: number, durationMs: number) => void;

export interface GrpcServerOptions {
  /** The services to serve; unary methods only (others answer UNIMPLEMENTED). */
  readonly bindings: readonly ServiceBinding[];
  /** Serving status for `grpc.health.v1.Health`; shutdown sets every service NOT_SERVING. */
  readonly health: HealthRegistry;
  /**
   * Files whose services reflection lists (and describes, with their imports). The health and
   * reflection files are always added.
   */
  readonly reflectionFiles: readonly DescFile[];
  /** Largest request accepted, in bytes; larger ones fail with RESOURCE_EXHAUSTED. Default 4 MiB. */
  readonly maxReceiveMessageBytes?: number;
  /** Largest response sent, in bytes. Default 4 MiB. */
  readonly maxSendMessageBytes?: number;
  /** Concurrent calls per HTTP/2 connection (Envoy multiplexes many). Default 1000. */
  readonly maxConcurrentStreams?: number;
  /**
   * Close connections after this long (with a grace period) so clients re-resolve and spread over
   * new replicas. Default: never.
   */
  readonly maxConnectionAgeMs?: number;
  readonly logger: ServerLogger;
  readonly onCall?: GrpcCallObserver;
  /**
   * Unary methods answered from the request's bytes straight to the response's, by method path:
   * they replace the binding's handler and codec for that path on this port (the HTTP port still
   * serves the binding). For a method whose answer is cheaper to write than to build as a
   * message. A raw handler throws `undecodableRequest` for bytes it cannot read. Once listening,
   * these methods run on the fast lane (unary-fast-lane.ts).
   */
  readonly rawUnary?: ReadonlyMap<string, RawUnaryHandler>;
  /** Streaming services mounted as they are (e.g. KEDA's external scaler); closed on shutdown. */
  readonly rawMounts?: readonly RawServiceMount[];
}

export interface GrpcServer {
  /** Binds `host:port` (port 0: a free port) and resolves with the bound port. */
  listen(host: string, port: number): Promise<number>;
  /**
   * Marks every service NOT_SERVING, ends open Watch and reflection streams, stops accepting,
   * waits up to `graceMs` for in-flight calls, then cuts the remaining connections.
   * Idempotent: later calls return the first call's promise.
   */
  shutdown(graceMs: number): Promise<void>;
  /** The underlying grpc-js server (for adding services main.ts owns, e.g. Envoy ext_authz). */
  readonly server: grpc.Server;
  /**
   * True once `listen` has put the fast lane (unary-fast-lane.ts) in front of grpc-js for the
   * `rawUnary` methods; false before, without `rawUnary`, or if grpc-js could not be hooked.
   */
  readonly fastLane: boolean;
}

/**
 * A service mounted over raw bytes: handlers receive the request as the Buffer off the wire and
 * send already-encoded responses. Health and reflection are mounted this way.
 */
export interface RawServiceMount {
  readonly service: DescService;
  /** grpc-js handlers keyed by the method's proto name (`Check`, `Watch`). */
  readonly implementation: grpc.UntypedServiceImplementation;
  /** Ends the service's open streams (and refuses to keep new ones open) for shutdown. */
  close(): void;
}

const DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024;
const DEFAULT_MAX_CONCURRENT_STREAMS = 1000;
/** Ping an idle-looking connection every minute, so dead peers are dropped, not kept forever. */
const KEEPALIVE_TIME_MS = 60_000;
const KEEPALIVE_TIMEOUT_MS = 20_000;

export function createGrpcServer(options: GrpcServerOptions): GrpcServer {
  const server = new grpc.Server(serverOptions(options));
  for (const binding of options.bindings) {
    server.addService(rawServiceDefinition(binding.service), bindingImplementation(binding, options));
  }
  const reflectionIndex = createReflectionIndex([
    ...options.reflectionFiles,
    file_grpc_health_v1_health,
    ...REFLECTION_FILES,
  ]);
  const mounts = [createHealthService(options.health), ...createReflectionServices(reflectionIndex), ...(options.rawMounts ?? [])];
  for (const mount of mounts) server.addService(rawServiceDefinition(mount.service), mount.implementation);

  let shuttingDown: Promise<void> | undefined;
  let fastLane = false;
  return {
    server,
    get fastLane() {
      return fastLane;
    },
    async listen(host, port) {
      const boundPort = await bind(server, host, port);
      if (options.rawUnary !== undefined && options.rawUnary.size > 0) {
        fastLane = installFastLane(server, {
          methods: options.rawUnary,
          maxReceiveMessageBytes: options.maxReceiveMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES,
          maxSendMessageBytes: options.maxSendMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES,
          logger: options.logger,
          onCall: options.onCall,
        });
        // Slower, not wrong: grpc-js still serves these methods.
        if (!fastLane) options.logger.warn({}, "grpc-js internals changed: the unary fast lane is off, Check runs through grpc-js");
      }
      return boundPort;
    },
    shutdown(graceMs) {
      shuttingDown ??= shutdown(server, graceMs, () => {
        options.health.setAll("NOT_SERVING");
        for (const mount of mounts) mount.close();
      });
      return shuttingDown;
    },
  };
}

function serverOptions(options: GrpcServerOptions): grpc.ServerOptions {
  const serverOptions: grpc.ServerOptions = {
    "grpc.max_receive_message_length": options.maxReceiveMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES,
    "grpc.max_send_message_length": options.maxSendMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES,
    "grpc.max_concurrent_streams": options.maxConcurrentStreams ?? DEFAULT_MAX_CONCURRENT_STREAMS,
    "grpc.keepalive_time_ms": KEEPALIVE_TIME_MS,
    "grpc.keepalive_timeout_ms": KEEPALIVE_TIMEOUT_MS,
    // Channelz keeps per-call statistics nobody reads here; it costs on every call.
    "grpc.enable_channelz": 0,
  };
  if (options.maxConnectionAgeMs !== undefined) {
    serverOptions["grpc.max_connection_age_ms"] = options.maxConnectionAgeMs;
    serverOptions["grpc.max_connection_age_grace_ms"] = KEEPALIVE_TIME_MS;
  }
  return serverOptions;
}

function bind(server: grpc.Server, host: string, port: number): Promise<number> {
  // IPv6 literals need brackets in a gRPC target.
  const address = host.includes(":") && !host.startsWith("[") ? `[${host}]:${port}` : `${host}:${port}`;
  return new Promise((resolve, reject) => {
    server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (err, boundPort) => {
      if (err === null) resolve(boundPort);
      else reject(err);
    });
  });
}

/** `beforeClose` runs first (so Watch streams end before grpc-js waits on them). */
function shutdown(server: grpc.Server, graceMs: number, beforeClose: () => void): Promise<void> {
  beforeClose();
  return new Promise((resolve) => {
    const force = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, graceMs);
    server.tryShutdown(() => {
      // The error tryShutdown may report is "server not running": either way it is down.
      clearTimeout(force);
      resolve();
    });
  });
}

/** A grpc-js definition that moves raw bytes: Buffers in, encoded Uint8Arrays out. */
function rawServiceDefinition(service: DescService): grpc.ServiceDefinition {
  const definition: Record<string, grpc.MethodDefinition<Buffer, Uint8Array>> = {};
  for (const method of service.methods) {
    const kind = method.methodKind;
    definition[method.name] = {
      path: `/${service.typeName}/${method.name}`,
      requestStream: kind === "client_streaming" || kind === "bidi_streaming",
      responseStream: kind === "server_streaming" || kind === "bidi_streaming",
      requestSerialize: asBuffer,
      requestDeserialize: passThrough,
      responseSerialize: asBuffer,
      responseDeserialize: passThrough,
      originalName: method.localName,
    };
  }
  return definition;
}

function passThrough(bytes: Buffer): Buffer {
  return bytes;
}

/** A Buffer over the same memory (grpc-js needs Buffer methods; copying would be waste). */
function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

type AnyUnaryHandler = UnaryHandler<DescMessage, DescMessage>;

/** A unary method over bytes: the request as it came off the wire, the response encoded. */
export type RawUnaryHandler = (request: Buffer, context: RpcContext) => Uint8Array | Promise<Uint8Array>;

/** What every call of one method shares, computed once at mount time. */
interface UnaryMethodRuntime {
  readonly rpc: string;
  readonly method: DescMethodUnary;
  readonly handler: AnyUnaryHandler;
  readonly decode: (bytes: Buffer) => MessageShape<DescMessage>;
  readonly encode: (message: MessageShape<DescMessage>) => Uint8Array;
  readonly logger: ServerLogger;
  readonly onCall: GrpcCallObserver | undefined;
}

function bindingImplementation(binding: ServiceBinding, options: GrpcServerOptions): grpc.UntypedServiceImplementation {
  // `UnaryHandlers<DescService>` erases the per-method keys; at runtime it is keyed by localName.
  const handlers = binding.handlers as unknown as Readonly<Record<string, AnyUnaryHandler | undefined>>;
  const implementation: grpc.UntypedServiceImplementation = {};
  for (const method of binding.service.methods) {
    const handler = handlers[method.localName];
    if (!isUnary(method) || typeof handler !== "function") continue;
    const rpc = `/${binding.service.typeName}/${method.name}`;
    const raw = options.rawUnary?.get(rpc);
    const runtime: UnaryMethodRuntime = raw !== undefined ? rawRuntime(rpc, method, raw, options) : {
      rpc,
      method,
      handler,
      decode: (bytes) => decodeRequest(method.input, bytes),
      encode: (message) => toBinary(method.output, message),
      logger: options.logger,
      onCall: options.onCall,
    };
    implementation[method.name] = (
      call: grpc.ServerUnaryCall<Buffer, Uint8Array>,
      callback: grpc.sendUnaryData<Uint8Array>,
    ) => GrpcUnaryCall.run(runtime, call, callback);
  }
  return implementation;
}

/**
 * One unary call: the `RpcContext` the handler sees, and the code that answers it. One object
 * per call; the AbortController behind `signal` is created only if a handler reads it.
 */
class GrpcUnaryCall implements RpcContext {
  #controller: AbortController | undefined;
  #answered = false;
  readonly #startedMs: number;

  private constructor(
    private readonly runtime: UnaryMethodRuntime,
    private readonly call: grpc.ServerUnaryCall<Buffer, Uint8Array>,
    private readonly callback: grpc.sendUnaryData<Uint8Array>,
  ) {
    this.#startedMs = runtime.onCall === undefined ? 0 : performance.now();
  }

  /** Decodes, runs the handler, answers. Never throws. */
  static run(
    runtime: UnaryMethodRuntime,
    call: grpc.ServerUnaryCall<Buffer, Uint8Array>,
    callback: grpc.sendUnaryData<Uint8Array>,
  ): void {
    const context = new GrpcUnaryCall(runtime, call, callback);
    let result: MessageShape<DescMessage> | Promise<MessageShape<DescMessage>>;
    try {
      result = runtime.handler(runtime.decode(call.request), context);
    } catch (err) {
      context.#reject(err);
      return;
    }
    if (isPromise(result)) {
      result.then(
        (value) => context.#resolve(value),
        (err: unknown) => context.#reject(err),
      );
    } else {
      context.#resolve(result);
    }
  }

  get transport(): "grpc" {
    return "grpc";
  }

  header(name: string): string | undefined {
    const value = this.call.metadata.get(name)[0];
    // Binary (`-bin`) metadata arrives as a Buffer; it is not a header string.
    return typeof value === "string" ? value : undefined;
  }

  /** Aborted when the client cancels or the deadline passes before the answer is sent. */
  get signal(): AbortSignal {
    if (this.#controller === undefined) {
      const controller = new AbortController();
      this.#controller = controller;
      if (this.call.cancelled) controller.abort();
      // grpc-js also emits 'cancelled' after a normal end; only an unanswered call is cancelled.
      else this.call.once("cancelled", () => this.#answered || controller.abort());
    }
    return this.#controller.signal;
  }

  #resolve(value: MessageShape<DescMessage>): void {
    let bytes: Uint8Array;
    try {
      bytes = this.runtime.encode(value);
    } catch (err) {
      this.#reject(err);
      return;
    }
    this.#finish(grpc.status.OK);
    this.callback(null, bytes);
  }

  #reject(err: unknown): void {
    if (isUnexpectedError(err)) {
      // The error, never the request: requests carry credentials.
      this.runtime.logger.error({ err, rpc: this.runtime.rpc }, "rpc failed");
    }
    const status = toGrpcStatus(err);
    this.#finish(status.code);
    this.callback(status);
  }

  #finish(code: number): void {
    this.#answered = true;
    const onCall = this.runtime.onCall;
    if (onCall !== undefined) onCall(this.runtime.rpc, code, performance.now() - this.#startedMs);
  }
}

/** The runtime of a raw method: bytes pass through, the handler decodes and encodes. */
function rawRuntime(rpc: string, method: DescMethodUnary, raw: RawUnaryHandler, options: GrpcServerOptions): UnaryMethodRuntime {
  return {
    rpc,
    method,
    handler: raw as unknown as AnyUnaryHandler,
    decode: passThrough as unknown as UnaryMethodRuntime["decode"],
    encode: passThroughBytes as unknown as UnaryMethodRuntime["encode"],
    logger: options.logger,
    onCall: options.onCall,
  };
}

function passThroughBytes(bytes: Uint8Array): Uint8Array {
  return bytes;
}

function isUnary(method: DescMethod): method is DescMethodUnary {
  return method.methodKind === "unary";
}

function isPromise<T>(value: T | Promise<T>): value is Promise<T> {
  return typeof (value as { then?: unknown }).then === "function";
}
