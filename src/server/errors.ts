/**
 * The one place where failures become RPC status codes.
 *
 * Handlers throw `ConnectError`s made by the helpers below; both transports turn them into the
 * same numeric status (Connect's `Code` values are the gRPC status codes). Anything else that
 * escapes a handler is a bug: the client sees INTERNAL "internal error" and only the log sees
 * the real error, so internals (SQL, stack traces, secrets in messages) never reach the wire.
 */
import { fromBinary } from "@bufbuild/protobuf";
import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";

/** The message every unexpected error is answered with. */
export const INTERNAL_ERROR_MESSAGE = "internal error";

/** A status as grpc-js sends it: the numeric gRPC code and the `grpc-message` text. */
export interface GrpcStatus {
  readonly code: number;
  readonly details: string;
}

/** The request is malformed; `field` names the offending field (e.g. `"events[3].id"`). */
export function invalidArgument(field: string, message: string): ConnectError {
  return new ConnectError(`${field}: ${message}`, Code.InvalidArgument);
}

/** The caller of the API itself is not allowed (not: the credential being checked was denied). */
export function unauthenticated(message: string): ConnectError {
  return new ConnectError(message, Code.Unauthenticated);
}

/** No safe answer is possible right now; the client should retry with backoff. */
export function unavailable(message: string, cause?: unknown): ConnectError {
  return new ConnectError(message, Code.Unavailable, undefined, undefined, cause);
}

/** The method or feature of the API is not implemented by this server. */
export function unimplemented(message: string): ConnectError {
  return new ConnectError(message, Code.Unimplemented);
}

/** The named thing does not exist (admin lookups). */
export function notFound(message: string): ConnectError {
  return new ConnectError(message, Code.NotFound);
}

/** The request bytes are not a valid encoding of `typeName`. */
export function undecodableRequest(typeName: string, cause: unknown): ConnectError {
  return invalidArgument("request", `cannot decode ${typeName}: ${reasonOf(cause)}`);
}

/**
 * Decodes a request message from its binary encoding.
 *
 * @throws ConnectError INVALID_ARGUMENT naming the message type when the bytes do not decode,
 *   so malformed input never surfaces as INTERNAL.
 */
export function decodeRequest<Desc extends DescMessage>(
  schema: Desc,
  bytes: Uint8Array,
): MessageShape<Desc> {
  return decodeRequestWith(schema.typeName, (b) => fromBinary(schema, b), bytes);
}

/**
 * The same for a specialized decoder of `typeName` (the hot paths' own codecs): whatever it
 * throws becomes INVALID_ARGUMENT naming the type.
 */
export function decodeRequestWith<B, T>(typeName: string, decode: (bytes: B) => T, bytes: B): T {
  try {
    return decode(bytes);
  } catch (err) {
    throw undecodableRequest(typeName, err);
  }
}

/**
 * True when `err` is a bug rather than an answer: anything that is not a `ConnectError`, and
 * ConnectErrors whose code itself means "the server is broken". These are the errors to log.
 */
export function isUnexpectedError(err: unknown): boolean {
  if (!(err instanceof ConnectError)) return true;
  return err.code === Code.Internal || err.code === Code.Unknown || err.code === Code.DataLoss;
}

/** Maps a thrown value to the gRPC status to send; never exposes a non-ConnectError message. */
export function toGrpcStatus(err: unknown): GrpcStatus {
  if (err instanceof ConnectError) return { code: err.code, details: err.rawMessage };
  return { code: Code.Internal, details: INTERNAL_ERROR_MESSAGE };
}

/** Maps a thrown value to the ConnectError to send; ConnectErrors pass through unchanged. */
export function toConnectError(err: unknown): ConnectError {
  if (err instanceof ConnectError) return err;
  return new ConnectError(INTERNAL_ERROR_MESSAGE, Code.Internal, undefined, undefined, err);
}

function reasonOf(cause: unknown): string {
  return cause instanceof Error ? cause.message : String(cause);
}
