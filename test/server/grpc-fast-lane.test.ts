/**
 * The fast lane (unary-fast-lane.ts) on the wire: what grpc-server.test.ts cannot see through a
 * gRPC client. Every case runs against two servers, one with Check on the lane and one without,
 * and the lane must answer as grpc-js does (headers, trailers, codes), or be handed the stream.
 */
import * as http2 from "node:http2";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  CheckRequestSchema,
  CheckResponseSchema,
  file_licensing_v1_licensing,
} from "../../src/gen/licensing/v1/licensing_pb.js";
import { createGrpcServer } from "../../src/server/grpc-server.js";
import type { GrpcServer, RawUnaryHandler } from "../../src/server/grpc-server.js";
import { createHealthRegistry } from "../../src/server/health.js";
import { fakeLicensingBinding, rawCheckHandler, recordingLogger } from "./support.js";

const CHECK = "/licensing.v1.LicensingService/Check";
const MAX_RECEIVE_BYTES = 1024;
const MAX_SEND_BYTES = 200;

interface Answer {
  readonly headers: http2.IncomingHttpHeaders;
  readonly trailers: http2.IncomingHttpHeaders | undefined;
  readonly body: Buffer;
}

/** The status of an answer: from the trailers, or from the headers of a trailers-only answer. */
function statusOf(answer: Answer): { code: string | undefined; message: string | undefined } {
  const source = answer.trailers ?? answer.headers;
  return { code: source["grpc-status"] as string | undefined, message: source["grpc-message"] as string | undefined };
}

function frame(message: Uint8Array, compressed = false): Buffer {
  const out = Buffer.alloc(5 + message.length);
  out[0] = compressed ? 1 : 0;
  out.writeUInt32BE(message.length, 1);
  out.set(message, 5);
  return out;
}

function checkBytes(feature: string): Uint8Array {
  return toBinary(CheckRequestSchema, create(CheckRequestSchema, { feature }));
}

/** Headers and trailers without what differs between any two answers (the date). */
function comparable(headers: http2.IncomingHttpHeaders | undefined): Record<string, unknown> | undefined {
  if (headers === undefined) return undefined;
  const { date: _date, ...rest } = headers;
  return rest;
}

class Server {
  readonly seen: { signal?: AbortSignal } = {};
  readonly logger = recordingLogger();
  /** While set, Check waits for it before answering; `entered` counts the calls that wait. */
  hold: Promise<void> | undefined;
  entered = 0;
  server!: GrpcServer;
  session!: http2.ClientHttp2Session;
  port = 0;

  constructor(readonly lane: boolean) {}

  async start(): Promise<void> {
    const binding = fakeLicensingBinding(this.seen);
    this.server = createGrpcServer({
      bindings: [binding],
      rawUnary: this.lane ? new Map([[CHECK, this.#held(rawCheckHandler(binding))]]) : undefined,
      health: createHealthRegistry("SERVING"),
      reflectionFiles: [file_licensing_v1_licensing],
      maxReceiveMessageBytes: MAX_RECEIVE_BYTES,
      maxSendMessageBytes: MAX_SEND_BYTES,
      logger: this.logger,
    });
    this.port = await this.server.listen("127.0.0.1", 0);
    this.session = http2.connect(`http://127.0.0.1:${this.port}`);
  }

  #held(handler: RawUnaryHandler): RawUnaryHandler {
    return (bytes, context) => {
      if (this.hold === undefined) return handler(bytes, context);
      this.entered++;
      return this.hold.then(() => handler(bytes, context));
    };
  }

  async stop(): Promise<void> {
    this.session.close();
    await this.server.shutdown(2_000);
  }

  /** Sends `chunks` as separate DATA frames, then half-closes; resolves with the whole answer. */
  call(chunks: readonly Buffer[], extra: http2.OutgoingHttpHeaders = {}): Promise<Answer> {
    const stream = this.session.request({
      ":method": "POST",
      ":path": CHECK,
      "content-type": "application/grpc",
      te: "trailers",
      ...extra,
    });
    return answerOf(stream, () => {
      for (const chunk of chunks) stream.write(chunk);
      stream.end();
    });
  }
}

/** Polls until `value` returns something (bounded: the test's timeout stops it). */
async function until<T>(value: () => T | undefined): Promise<T> {
  for (;;) {
    const found = value();
    if (found !== undefined) return found;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

function answerOf(stream: http2.ClientHttp2Stream, send: () => void): Promise<Answer> {
  return new Promise((resolve, reject) => {
    let headers: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders | undefined;
    const body: Buffer[] = [];
    stream.on("response", (h) => (headers = h));
    stream.on("trailers", (t) => (trailers = t));
    stream.on("data", (chunk: Buffer) => body.push(chunk));
    stream.on("error", reject);
    stream.on("close", () => resolve({ headers, trailers, body: Buffer.concat(body) }));
    send();
  });
}

describe("gRPC fast lane on the wire", () => {
  const plain = new Server(false);
  const lane = new Server(true);

  beforeAll(async () => {
    await Promise.all([plain.start(), lane.start()]);
  });

  afterAll(async () => {
    await Promise.all([plain.stop(), lane.stop()]);
  });

  async function both(chunks: readonly Buffer[], extra?: http2.OutgoingHttpHeaders): Promise<[Answer, Answer]> {
    return [await plain.call(chunks, extra), await lane.call(chunks, extra)];
  }

  it("is on only where rawUnary methods are given", () => {
    expect(plain.server.fastLane).toBe(false);
    expect(lane.server.fastLane).toBe(true);
  });

  it("answers with grpc-js's headers, body and trailers", async () => {
    const [fromGrpcJs, fromLane] = await both([frame(checkBytes("export"))], { "x-decision-id": "dec_1" });
    expect(comparable(fromLane.headers)).toEqual(comparable(fromGrpcJs.headers));
    expect(comparable(fromLane.trailers)).toEqual(comparable(fromGrpcJs.trailers));
    expect(fromLane.body).toEqual(fromGrpcJs.body);
    expect(statusOf(fromLane)).toEqual({ code: "0", message: "OK" });
    expect(fromBinary(CheckResponseSchema, fromLane.body.subarray(5)).decisionId).toBe("dec_1");
  });

  it("answers errors trailers-only, with grpc-js's percent-encoded grpc-message", async () => {
    const [fromGrpcJs, fromLane] = await both([frame(Buffer.from([0xff, 0xff]))]);
    expect(fromLane.trailers).toBeUndefined();
    expect(comparable(fromLane.headers)).toEqual(comparable(fromGrpcJs.headers));
    expect(statusOf(fromLane).code).toBe(String(grpc.status.INVALID_ARGUMENT));
    expect(decodeURI(statusOf(fromLane).message ?? "")).toMatch(/^request: cannot decode licensing\.v1\.CheckRequest: /);
  });

  it("reads a message split over several DATA frames", async () => {
    const whole = frame(checkBytes("a-rather-long-feature-name"));
    const pieces = [whole.subarray(0, 2), whole.subarray(2, 7), whole.subarray(7)];
    const [fromGrpcJs, fromLane] = await both(pieces);
    expect(statusOf(fromLane)).toEqual({ code: "0", message: "OK" });
    expect(fromLane.body).toEqual(fromGrpcJs.body);
  });

  it("answers UNIMPLEMENTED for no message, a cut-off message and a second message, as grpc-js does", async () => {
    const one = frame(checkBytes("export"));
    for (const chunks of [[], [one.subarray(0, one.length - 1)], [one, one]]) {
      const [fromGrpcJs, fromLane] = await both(chunks);
      expect(statusOf(fromGrpcJs).code).toBe(String(grpc.status.UNIMPLEMENTED));
      expect(statusOf(fromLane).code).toBe(String(grpc.status.UNIMPLEMENTED));
    }
    expect((await lane.call([one])).body).toEqual((await plain.call([one])).body);
  });

  it("answers RESOURCE_EXHAUSTED for a request over the receive limit, without reading it whole", async () => {
    const big = frame(checkBytes("x".repeat(MAX_RECEIVE_BYTES + 1)));
    const [fromGrpcJs, fromLane] = await both([big]);
    expect(statusOf(fromGrpcJs).code).toBe(String(grpc.status.RESOURCE_EXHAUSTED));
    expect(statusOf(fromLane)).toEqual(statusOf(fromGrpcJs));
    // Only the 5-byte prefix: the limit is known before the message arrives.
    expect(statusOf(await lane.call([big.subarray(0, 5)])).code).toBe(String(grpc.status.RESOURCE_EXHAUSTED));
  });

  it("answers RESOURCE_EXHAUSTED for a response over the send limit", async () => {
    // The fake echoes the feature into its message, so a long feature makes a long response.
    const [fromGrpcJs, fromLane] = await both([frame(checkBytes("y".repeat(MAX_SEND_BYTES)))]);
    expect(statusOf(fromGrpcJs).code).toBe(String(grpc.status.RESOURCE_EXHAUSTED));
    expect(statusOf(fromLane).code).toBe(String(grpc.status.RESOURCE_EXHAUSTED));
  });

  it("answers INTERNAL for a grpc-timeout it cannot read, as grpc-js does", async () => {
    const [fromGrpcJs, fromLane] = await both([frame(checkBytes("export"))], { "grpc-timeout": "soon" });
    expect(statusOf(fromLane)).toEqual(statusOf(fromGrpcJs));
    expect(statusOf(fromLane).code).toBe(String(grpc.status.INTERNAL));
  });

  it("answers DEADLINE_EXCEEDED when grpc-timeout passes, and aborts the handler's signal", async () => {
    const answer = await lane.call([frame(checkBytes("hang"))], { "grpc-timeout": "30m" });
    // grpc-js's encoding of the message (encodeURI), which its clients decode.
    expect(statusOf(answer)).toEqual({ code: String(grpc.status.DEADLINE_EXCEEDED), message: "Deadline%20exceeded" });
    expect(lane.seen.signal?.aborted).toBe(true);
  });

  it("serves a deadline longer than a timer can hold as no deadline", async () => {
    // 30 days: 2.6e9 ms, past setTimeout's 2^31 - 1. The answer is held long enough for a
    // timer that misread it to fire first.
    let release = (): void => {};
    lane.hold = new Promise((resolve) => (release = resolve));
    const pending = lane.call([frame(checkBytes("export"))], { "grpc-timeout": "2592000S" });
    await new Promise((resolve) => setTimeout(resolve, 50));
    release();
    lane.hold = undefined;
    expect(statusOf(await pending)).toEqual({ code: "0", message: "OK" });
  });

  it("aborts the handler's signal when the client cancels, and keeps serving", async () => {
    delete lane.seen.signal;
    const stream = lane.session.request({ ":method": "POST", ":path": CHECK, "content-type": "application/grpc", te: "trailers" });
    stream.on("error", () => {});
    stream.end(frame(checkBytes("hang")));
    const signal = await until(() => lane.seen.signal);
    stream.close(http2.constants.NGHTTP2_CANCEL);
    await new Promise((resolve) => signal.addEventListener("abort", resolve));
    expect(signal.aborted).toBe(true);
    expect(statusOf(await lane.call([frame(checkBytes("export"))])).code).toBe("0");
  });

  it("hands compressed requests and other content types to grpc-js", async () => {
    // gzip is grpc-js's: the lane must not read the compressed bytes as a message.
    const gzipClient = new grpc.Client(`127.0.0.1:${lane.port}`, grpc.credentials.createInsecure(), {
      "grpc.default_compression_algorithm": grpc.compressionAlgorithms.gzip,
    });
    try {
      const bytes = await new Promise<Buffer>((resolve, reject) => {
        gzipClient.makeUnaryRequest(CHECK, (b: Buffer) => b, (b: Buffer) => b, Buffer.from(checkBytes("gzipped")), (err, value) =>
          err !== null || value === undefined ? reject(err) : resolve(value),
        );
      });
      expect(fromBinary(CheckResponseSchema, bytes).message).toBe("feature gzipped allowed");
    } finally {
      gzipClient.close();
    }
    const [fromGrpcJs, fromLane] = await both([frame(checkBytes("export"))], { "content-type": "application/json" });
    expect(fromLane.headers[":status"]).toBe(fromGrpcJs.headers[":status"]);
    expect(fromLane.headers[":status"]).toBe(415);
  });

  it("lets a graceful shutdown finish a call in flight", async () => {
    const server = new Server(true);
    await server.start();
    let release = (): void => {};
    server.hold = new Promise((resolve) => (release = resolve));
    const pending = server.call([frame(checkBytes("export"))]);
    await until(() => server.entered || undefined);
    let stoppedYet = false;
    const stopped = server.server.shutdown(5_000).then(() => (stoppedYet = true));
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(stoppedYet).toBe(false);
    release();
    const answer = await pending;
    expect(statusOf(answer).code).toBe("0");
    await stopped;
    server.session.close();
  });
});
