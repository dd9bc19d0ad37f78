/**
 * Handlers written once, mounted on both transports.
 *
 * A handler is a plain function of the decoded request message and an `RpcContext`; it returns
 * the response message (synchronously when it can: the hot path avoids needless promises) or
 * throws a `ConnectError` whose code says why it could not answer. The gRPC mount
 * (grpc-server.ts) and the Connect mount (http-server.ts) translate to and from their wire.
 * Connect's `Code` values are the gRPC status codes, so one error type serves both.
 */
import type { DescMessage, DescMethodUnary, DescService, MessageShape } from "@bufbuild/protobuf";

/** What a handler may know about the call, independent of the transport. */
export interface RpcContext {
  /** A request header / metadata value (names are lower-case), or undefined. */
  header(name: string): string | undefined;
  /** Aborted when the client cancels or the deadline passes. */
  readonly signal: AbortSignal;
  /** Which listener the call came through. */
  readonly transport: "grpc" | "connect";
}

export type UnaryHandler<I extends DescMessage, O extends DescMessage> = (
  request: MessageShape<I>,
  context: RpcContext,
) => MessageShape<O> | Promise<MessageShape<O>>;

type UnaryMethodsOf<S extends DescService> = {
  [K in keyof S["method"] as S["method"][K] extends DescMethodUnary ? K : never]: S["method"][K];
};

/** One handler per unary method of service `S`, keyed by the method's local name. */
export type UnaryHandlers<S extends DescService> = {
  [K in keyof UnaryMethodsOf<S>]: UnaryMethodsOf<S>[K] extends DescMethodUnary<infer I, infer O>
    ? UnaryHandler<I, O>
    : never;
};

/** A service and its handlers, ready to be mounted on a transport. */
export interface ServiceBinding<S extends DescService = DescService> {
  readonly service: S;
  readonly handlers: UnaryHandlers<S>;
}

/** Pairs a service with its handlers, checking the handler types against the service. */
export function bindService<S extends DescService>(
  service: S,
  handlers: UnaryHandlers<S>,
): ServiceBinding<S> {
  return { service, handlers };
}
