/**
 * The fast lane: the hottest unary methods (Check, Envoy's Check) answered straight on the HTTP/2
 * stream, in front of grpc-js.
 *
 * grpc-js spends about 7 µs and 10 KB of garbage on every call before and after the handler
 * (metadata objects, a stream decoder, an async decompression step, a call object, listeners),
 * which is more than the Check itself costs. The lane handles the plain case of a raw-bytes unary
 * method itself and hands every other stream, unchanged, to grpc-js's own stream listener:
 * - taken: POST, content-type `application/grpc` or `application/grpc+proto`, no
 *   `grpc-encoding` (or `identity`), a path in `methods`;
 * - handed over: everything else (other methods, compressed requests, other content types), so
 *   grpc-js still owns what it does well and the lane never has to be a second gRPC server.
 * Sessions stay grpc-js's: keepalive pings, max connection age, max concurrent streams, shutdown
 * (tryShutdown waits for the lane's streams like any other; forceShutdown destroys them).
 *
 * What the lane does for a call is what grpc-js does, on the same wire: `grpc-timeout` deadlines
 * (DEADLINE_EXCEEDED, the handler's signal aborted), client cancellation (signal aborted, nothing
 * sent), the receive and send size limits (RESOURCE_EXHAUSTED), exactly one request message
 * (UNIMPLEMENTED otherwise, as grpc-js), the same response headers, trailers and trailers-only
 * errors with `grpc-message` percent-encoded. test/server/grpc-fast-lane.test.ts holds both
 * paths to that.
 *
 * grpc-js has no public hook for this, so the lane reaches its HTTP/2 servers through a private
 * field. If a grpc-js upgrade moves it, `installFastLane` returns false and every call goes
 * through grpc-js as before: slower, never wrong. The tests that expect the lane on fail, so it
 * is noticed.
 */
import type * as http2 from "node:http2";
import * as grpc from "@grpc/grpc-js";
import { isUnexpectedError, toGrpcStatus } from "./errors.js";
import type { GrpcCallObserver, RawUnaryHandler, ServerLogger } from "./grpc-server.js";
import type { RpcContext } from "./rpc.js";

export interface FastLaneOptions {
  /** Handlers by gRPC path (`/licensing.v1.LicensingService/Check`). */
  readonly methods: ReadonlyMap<string, RawUnaryHandler>;
  readonly maxReceiveMessageBytes: number;
  readonly maxSendMessageBytes: number;
  readonly logger: ServerLogger;
  readonly onCall: GrpcCallObserver | undefined;
}

type StreamListener = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, ...rest: unknown[]) => void;

/** HTTP/2 servers the lane already stands in front of. */
const laned = new WeakSet<object>();

/**
 * Puts the lane in front of every HTTP/2 server `server` has bound so far (call it after
 * bindAsync; servers it already fronts are left as they are). Returns false, changing nothing,
 * when grpc-js's servers cannot be found.
 */
export function installFastLane(server: grpc.Server, options: FastLaneOptions): boolean {
  const servers = (server as unknown as { http2Servers?: unknown }).http2Servers;
  if (!(servers instanceof Map) || servers.size === 0) return false;
  const targets: http2.Http2Server[] = [];
  for (const candidate of servers.keys()) {
    const http2Server = candidate as http2.Http2Server;
    if (laned.has(http2Server)) continue;
    if (typeof http2Server.listeners !== "function" || http2Server.listeners("stream").length !== 1) return false;
    targets.push(http2Server);
  }
  for (const http2Server of targets) {
    laned.add(http2Server);
    const grpcListener = http2Server.listeners("stream")[0] as StreamListener;
    http2Server.removeListener("stream", grpcListener);
    http2Server.on("stream", laneListener(options, grpcListener));
  }
  return true;
}

function laneListener(options: FastLaneOptions, grpcListener: StreamListener): StreamListener {
  const methods = new Map<string, LaneMethod>();
  for (const [rpc, handler] of options.methods) {
    methods.set(rpc, { rpc, handler, options, noMessage: `Received no request message for unary method ${rpc}` });
  }
  return function onStream(this: http2.Http2Server, stream, headers, ...rest) {
    const method = methods.get(headers[":path"] ?? "");
    if (method === undefined || !isPlainUnary(headers)) {
      grpcListener.call(this, stream, headers, ...rest);
      return;
    }
    new LaneCall(method, stream, headers).start();
  };
}

function isPlainUnary(headers: http2.IncomingHttpHeaders): boolean {
  const contentType = headers["content-type"];
  const encoding = headers["grpc-encoding"];
  return (
    headers[":method"] === "POST" &&
    (contentType === "application/grpc" || contentType === "application/grpc+proto") &&
    (encoding === undefined || encoding === "identity")
  );
}

interface LaneMethod {
  readonly rpc: string;
  readonly handler: RawUnaryHandler;
  readonly options: FastLaneOptions;
  readonly noMessage: string;
}

// Frozen and shared: node:http2 copies headers, it never writes to them.
const RESPONSE_HEADERS = Object.freeze({
  ":status": 200,
  "content-type": "application/grpc+proto",
  "grpc-accept-encoding": "identity,deflate,gzip",
  "grpc-encoding": "identity",
});
const OK_TRAILERS = Object.freeze({ "grpc-status": "0", "grpc-message": "OK" });
const RESPOND_WITH_TRAILERS = Object.freeze({ waitForTrailers: true });
const END_STREAM = Object.freeze({ endStream: true });

/** Headers grpc-js keeps from handlers' metadata (pseudo-headers aside). */
const NOT_METADATA = new Set(["grpc-timeout", "grpc-encoding", "grpc-accept-encoding", "accept-encoding", "te", "content-type"]);

const MAX_TIMER_MS = 2 ** 31 - 1;
const DEADLINE_PATTERN = /(\d{1,8})\s*([HMSmun])/;
const DEADLINE_UNIT_MS: Readonly<Record<string, number>> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 };

/**
 * One call on the lane. Reads the single message, runs the handler after the client's half
 * close (as grpc-js does), answers once. Never throws.
 */
class LaneCall implements RpcContext {
  #chunks: Buffer[] = [];
  #bytes = 0;
  /** Prefix and message length, once the prefix has arrived. */
  #expected: number | undefined;
  #done = false;
  #controller: AbortController | undefined;
  #deadlineTimer: NodeJS.Timeout | undefined;
  readonly #startedMs: number;

  constructor(
    private readonly method: LaneMethod,
    private readonly stream: http2.ServerHttp2Stream,
    private readonly headers: http2.IncomingHttpHeaders,
  ) {
    this.#startedMs = method.options.onCall === undefined ? 0 : performance.now();
  }

  get transport(): "grpc" {
    return "grpc";
  }

  start(): void {
    const stream = this.stream;
    // An 'error' without a listener would crash the process; 'close' follows it anyway.
    stream.on("error", ignore);
    const timeout = this.headers["grpc-timeout"];
    if (timeout !== undefined && !this.#startDeadline(timeout)) return;
    stream.on("data", (chunk: Buffer) => this.#onData(chunk));
    stream.on("end", () => this.#onEnd());
  }

  header(name: string): string | undefined {
    if (name.endsWith("-bin") || NOT_METADATA.has(name) || name.startsWith(":")) return undefined;
    const value = this.headers[name];
    // As grpc-js's Metadata: a repeated header is the one value node:http2 joined with ", ".
    return typeof value === "string" ? value : value?.[0];
  }

  /** Aborted when the client cancels or the deadline passes before the answer is sent. */
  get signal(): AbortSignal {
    if (this.#controller === undefined) {
      const controller = new AbortController();
      this.#controller = controller;
      if (this.#done) return controller.signal;
      if (this.stream.destroyed || this.stream.closed) controller.abort();
      else this.stream.once("close", () => this.#done || controller.abort());
    }
    return this.#controller.signal;
  }

  #startDeadline(header: string | string[]): boolean {
    const text = typeof header === "string" ? header : header.join(",");
    const match = DEADLINE_PATTERN.exec(text);
    if (match === null) {
      this.#fail(grpc.status.INTERNAL, `Invalid grpc-timeout value "${text}"`);
      return false;
    }
    const ms = Math.floor(Number(match[1]) * (DEADLINE_UNIT_MS[match[2]!] ?? 0));
    // Beyond what a timer can hold (24.8 days) is as good as no deadline. (grpc-js truncates it
    // to 32 bits, which can turn a 30-day deadline into an instant DEADLINE_EXCEEDED.)
    if (ms <= MAX_TIMER_MS) this.#deadlineTimer = setTimeout(() => this.#expire(), ms);
    return true;
  }

  #onData(chunk: Buffer): void {
    if (this.#done) return;
    this.#chunks.push(chunk);
    this.#bytes += chunk.length;
    if (this.#expected === undefined && this.#bytes >= 5) {
      // The length prefix; rarely split over frames, and then only a few bytes are joined.
      const head = this.#chunks.length === 1 ? chunk : Buffer.concat(this.#chunks, this.#bytes);
      this.#chunks = [head];
      const length = head.readUInt32BE(1);
      const max = this.method.options.maxReceiveMessageBytes;
      if (length > max) {
        this.#fail(grpc.status.RESOURCE_EXHAUSTED, `Received message larger than max (${length} vs ${max})`);
        return;
      }
      this.#expected = 5 + length;
    }
    if (this.#expected !== undefined && this.#bytes > this.#expected) {
      this.#fail(grpc.status.UNIMPLEMENTED, `Received a second request message for unary method ${this.method.rpc}`);
    }
  }

  #onEnd(): void {
    if (this.#done) return;
    if (this.#bytes !== this.#expected) {
      // Nothing, or a message cut off: grpc-js sees no message in either case.
      this.#fail(grpc.status.UNIMPLEMENTED, this.method.noMessage);
      return;
    }
    const chunks = this.#chunks;
    const received = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, this.#bytes);
    // A compressed flag with identity encoding is read as identity, as grpc-js does.
    const request = received.subarray(5);
    let result: Uint8Array | Promise<Uint8Array>;
    try {
      result = this.method.handler(request, this);
    } catch (err) {
      this.#reject(err);
      return;
    }
    if (result instanceof Uint8Array) {
      this.#resolve(result);
    } else {
      result.then(
        (bytes) => this.#resolve(bytes),
        (err: unknown) => this.#reject(err),
      );
    }
  }

  #resolve(bytes: Uint8Array): void {
    if (this.#done) return;
    const max = this.method.options.maxSendMessageBytes;
    if (bytes.length > max) {
      this.#observe(grpc.status.RESOURCE_EXHAUSTED);
      this.#fail(grpc.status.RESOURCE_EXHAUSTED, `Sent message larger than max (${bytes.length + 5} vs. ${max})`);
      return;
    }
    this.#observe(grpc.status.OK);
    this.#finish();
    const stream = this.stream;
    if (stream.destroyed || stream.closed) return;
    const frame = Buffer.allocUnsafe(bytes.length + 5);
    frame[0] = 0;
    frame.writeUInt32BE(bytes.length, 1);
    frame.set(bytes, 5);
    try {
      stream.respond(RESPONSE_HEADERS, RESPOND_WITH_TRAILERS);
      stream.on("wantTrailers", sendOkTrailers);
      stream.end(frame);
    } catch (err) {
      this.#unsent(err);
    }
  }

  #reject(err: unknown): void {
    if (this.#done) return;
    if (isUnexpectedError(err)) {
      // The error, never the request: requests carry credentials.
      this.method.options.logger.error({ err, rpc: this.method.rpc }, "rpc failed");
    }
    const status = toGrpcStatus(err);
    this.#observe(status.code);
    this.#fail(status.code, status.details);
  }

  #expire(): void {
    this.#deadlineTimer = undefined;
    if (this.#done) return;
    this.#fail(grpc.status.DEADLINE_EXCEEDED, "Deadline exceeded");
    this.#controller?.abort();
  }

  /** A trailers-only answer: the status in the response headers, nothing else on the stream. */
  #fail(code: number, details: string): void {
    if (this.#done) return;
    this.#finish();
    const stream = this.stream;
    if (stream.destroyed || stream.closed) return;
    try {
      if (!stream.headersSent) {
        stream.respond(
          { ":status": 200, "content-type": "application/grpc+proto", "grpc-status": String(code), "grpc-message": encodeURI(details) },
          END_STREAM,
        );
      }
      // Whatever the client still sends is read and dropped, so the stream can close.
      stream.resume();
    } catch (err) {
      this.#unsent(err);
    }
  }

  /** node:http2 refused the answer (the session went away between the check and the write). */
  #unsent(err: unknown): void {
    this.method.options.logger.error({ err, rpc: this.method.rpc }, "could not send the answer");
    this.stream.destroy();
  }

  #finish(): void {
    this.#done = true;
    this.#chunks = [];
    if (this.#deadlineTimer !== undefined) {
      clearTimeout(this.#deadlineTimer);
      this.#deadlineTimer = undefined;
    }
  }

  #observe(code: number): void {
    const onCall = this.method.options.onCall;
    if (onCall !== undefined) onCall(this.method.rpc, code, performance.now() - this.#startedMs);
  }
}

function sendOkTrailers(this: http2.ServerHttp2Stream): void {
  this.sendTrailers(OK_TRAILERS);
}

function ignore(): void {}
