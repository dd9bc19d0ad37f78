/**
 * Shared pieces of the transport tests: a fake LicensingService binding, a recording logger,
 * and a raw-bytes grpc-js client (so tests can send bytes no real client would).
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  CheckRequestSchema,
  CheckResponseSchema,
  Decision,
  LicensingService,
  Reason,
} from "../../src/gen/licensing/v1/licensing_pb.js";
import type { CheckRequest, CheckResponse } from "../../src/gen/licensing/v1/licensing_pb.js";
import { decodeRequest, invalidArgument } from "../../src/server/errors.js";
import type { RawUnaryHandler, ServerLogger } from "../../src/server/grpc-server.js";
import { bindService } from "../../src/server/rpc.js";
import type { RpcContext } from "../../src/server/rpc.js";

/** A secret that must never appear on the wire. */
export const LEAKED_SECRET = "password=hunter2";

/** The fixed answer of the fake Check; `decisionId` echoes the `x-decision-id` header. */
export function fakeCheckResponse(request: CheckRequest, context: RpcContext): CheckResponse {
  return create(CheckResponseSchema, {
    decision: Decision.ALLOW,
    reason: Reason.OK,
    message: `feature ${request.feature} allowed`,
    licenseId: "lic_123",
    limit: 1000n,
    remaining: 999n,
    resetsAt: { seconds: 1_767_225_600n },
    retryAfter: { seconds: 3n, nanos: 500_000_000 },
    decisionId: context.header("x-decision-id") ?? "no-header",
    policyVersion: 42n,
    plan: "pro",
    accountId: "acc_1",
  });
}

/**
 * check: answers `fakeCheckResponse`; by feature: "async" answers through a Promise,
 * "async-error" rejects with a plain Error, "signal" records the signal it saw, "hang" waits for
 * the signal to abort, "unavailable" throws UNAVAILABLE, "header:NAME" answers with
 * `context.header(NAME)` as its message;
 * report: throws INVALID_ARGUMENT naming a field; scale: throws a plain Error with a secret.
 */
export function fakeLicensingBinding(seen: { signal?: AbortSignal } = {}) {
  return bindService(LicensingService, {
    check(request, context) {
      if (request.feature === "signal") seen.signal = context.signal;
      if (request.feature === "async") return Promise.resolve(fakeCheckResponse(request, context));
      if (request.feature === "async-error") return Promise.reject(new Error(LEAKED_SECRET));
      if (request.feature === "hang") {
        // Answers only when the call is cancelled: proves the signal fires.
        seen.signal = context.signal;
        return new Promise((_, reject) => {
          context.signal.addEventListener("abort", () => reject(new ConnectError("cancelled", Code.Canceled)));
        });
      }
      if (request.feature === "unavailable") throw new ConnectError("store is away", Code.Unavailable);
      if (request.feature.startsWith("header:")) {
        return create(CheckResponseSchema, { message: String(context.header(request.feature.slice("header:".length))) });
      }
      return fakeCheckResponse(request, context);
    },
    report() {
      throw invalidArgument("events[0].id", "must not be empty");
    },
    scale() {
      throw new Error(`connect ECONNREFUSED ${LEAKED_SECRET}`);
    },
  });
}

/** The binding's Check as a raw-bytes handler (what `rawUnary` and the fast lane take). */
export function rawCheckHandler(binding: ReturnType<typeof fakeLicensingBinding>): RawUnaryHandler {
  return (bytes, context) => {
    const answer = binding.handlers.check(decodeRequest(CheckRequestSchema, bytes), context);
    const encode = (response: CheckResponse) => toBinary(CheckResponseSchema, response);
    return answer instanceof Promise ? answer.then(encode) : encode(answer);
  };
}

export interface RecordingLogger extends ServerLogger {
  readonly errors: { obj: object; msg: string }[];
  readonly warnings: { obj: object; msg: string }[];
}

export function recordingLogger(): RecordingLogger {
  const errors: { obj: object; msg: string }[] = [];
  const warnings: { obj: object; msg: string }[] = [];
  return {
    errors,
    warnings,
    error: (obj, msg) => void errors.push({ obj, msg }),
    warn: (obj, msg) => void warnings.push({ obj, msg }),
  };
}

const identity = (bytes: Buffer): Buffer => bytes;

export function rawClient(port: number): grpc.Client {
  return new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
}

/** The outcome of a unary call: the response bytes, or the status error. */
export type RawResult = { ok: true; bytes: Buffer } | { ok: false; error: grpc.ServiceError };

export function rawUnary(
  client: grpc.Client,
  path: string,
  request: Uint8Array,
  metadata: grpc.Metadata = new grpc.Metadata(),
): Promise<RawResult> {
  return new Promise((resolve) => {
    client.makeUnaryRequest(path, identity, identity, Buffer.from(request), metadata, (error, bytes) => {
      if (error !== null) resolve({ ok: false, error });
      else if (bytes === undefined) throw new Error("no response and no error");
      else resolve({ ok: true, bytes });
    });
  });
}

/** Calls a unary method with a typed request, and decodes a typed response. */
export async function typedUnary<I extends DescMessage, O extends DescMessage>(
  client: grpc.Client,
  path: string,
  input: I,
  output: O,
  request: MessageShape<I>,
  metadata?: grpc.Metadata,
): Promise<{ ok: true; response: MessageShape<O> } | { ok: false; error: grpc.ServiceError }> {
  const result = await rawUnary(client, path, toBinary(input, request), metadata);
  return result.ok ? { ok: true, response: fromBinary(output, result.bytes) } : result;
}

/** The error of a failed result, failing the test when the call succeeded. */
export function errorOf(result: RawResult | { ok: boolean; error?: grpc.ServiceError }): grpc.ServiceError {
  if (result.ok || result.error === undefined) throw new Error("expected the call to fail");
  return result.error;
}

/** Resolves with the next item an async queue receives. */
export class Inbox<T> {
  readonly #items: T[] = [];
  readonly #waiters: ((item: T) => void)[] = [];

  push = (item: T): void => {
    const waiter = this.#waiters.shift();
    if (waiter === undefined) this.#items.push(item);
    else waiter(item);
  };

  next(): Promise<T> {
    const item = this.#items.shift();
    if (item !== undefined) return Promise.resolve(item);
    return new Promise((resolve) => this.#waiters.push(resolve));
  }
}
