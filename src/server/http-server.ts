/**
 * The HTTP port: the Connect protocol (JSON or binary over HTTP/1.1, and gRPC-Web) for the same
 * `ServiceBinding`s the gRPC port serves, plus plain routes (/healthz, /readyz, /metrics,
 * forward-auth) that main.ts adds.
 *
 * Plain routes are matched first (exact paths, then prefixes in the order given); everything else
 * goes to Connect, whose unknown paths answer 404 with a JSON body. The server only listens when
 * asked; nothing here reads the environment.
 */
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import type { DescMessage, DescMethod, DescMethodUnary, DescService, MessageShape } from "@bufbuild/protobuf";
import type { ConnectRouter, HandlerContext } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { isUnexpectedError, toConnectError } from "./errors.js";
import type { ServerLogger } from "./grpc-server.js";
import type { RpcContext, ServiceBinding, UnaryHandler } from "./rpc.js";

export interface HttpRoute {
  /** HTTP method to match (`GET`); any method when absent. */
  readonly method?: string;
  /** The path to match, without the query string. */
  readonly path: string;
  /** Match every path that starts with `path` (e.g. `/authz/`). */
  readonly prefix?: boolean;
  /**
   * Answers the request. A throw or rejection is logged and answered 500 (when nothing was
   * sent yet).
   */
  handle(req: http.IncomingMessage, res: http.ServerResponse): void | Promise<void>;
}

export interface HttpServerOptions {
  readonly bindings: readonly ServiceBinding[];
  readonly routes?: readonly HttpRoute[];
  readonly logger: ServerLogger;
  /** Largest Connect request body, in bytes; larger ones fail with RESOURCE_EXHAUSTED. Default 4 MiB. */
  readonly maxBodyBytes?: number;
}

export interface HttpServer {
  /** Binds `host:port` (port 0: a free port) and resolves with the bound port. */
  listen(host: string, port: number): Promise<number>;
  /**
   * Stops accepting, lets in-flight requests finish for up to `graceMs`, then destroys the
   * remaining connections. Idempotent: later calls return the first call's promise.
   */
  close(graceMs: number): Promise<void>;
  /** The underlying node:http server. */
  readonly server: http.Server;
}

const DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024;
/** Longer than the usual 60 s idle timeout of load balancers, so they close first, not us. */
const KEEP_ALIVE_TIMEOUT_MS = 65_000;
/** A request (headers and body) that takes longer than this is abandoned. */
const REQUEST_TIMEOUT_MS = 30_000;
/** How often `close` looks for connections that went idle after their last response. */
const CLOSE_POLL_MS = 25;

export function createHttpServer(options: HttpServerOptions): HttpServer {
  const connect = connectNodeAdapter({
    routes: (router) => {
      for (const binding of options.bindings) mountBinding(router, binding, options.logger);
    },
    readMaxBytes: options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES,
    fallback: notFound,
  });
  const routes = createRouteTable(options.routes ?? []);
  let closing = false;

  const server = http.createServer((req, res) => {
    // While draining, every answer closes its connection so keep-alive clients let go.
    if (closing) res.setHeader("connection", "close");
    const route = routes.match(req);
    if (route === undefined) connect(req, res);
    else if (route === METHOD_NOT_ALLOWED) jsonError(res, 405, "method_not_allowed", `${req.method ?? ""} is not allowed here`);
    else runRoute(route, req, res, options.logger);
  });
  server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;
  server.headersTimeout = KEEP_ALIVE_TIMEOUT_MS + 1_000;
  server.requestTimeout = REQUEST_TIMEOUT_MS;

  let closed: Promise<void> | undefined;
  return {
    server,
    listen: (host, port) => listen(server, host, port),
    close(graceMs) {
      closing = true;
      closed ??= close(server, graceMs);
      return closed;
    },
  };
}

/**
 * Mounts a binding's unary handlers on the Connect router. ConnectErrors pass through; any other
 * error is logged and answered Internal "internal error", never with its own message.
 */
function mountBinding(router: ConnectRouter, binding: ServiceBinding, logger: ServerLogger): void {
  // `UnaryHandlers<DescService>` erases the per-method keys; at runtime it is keyed by localName.
  const handlers = binding.handlers as unknown as Readonly<Record<string, AnyUnaryHandler | undefined>>;
  for (const method of binding.service.methods) {
    const handler = handlers[method.localName];
    if (!isUnary(method) || typeof handler !== "function") continue;
    // Methods left out answer 404, which Connect clients read as Unimplemented.
    router.rpc(method, connectUnary(handler, rpcName(binding.service, method.name), logger));
  }
}

type AnyUnaryHandler = UnaryHandler<DescMessage, DescMessage>;
type ConnectUnaryImpl = (
  request: MessageShape<DescMessage>,
  context: HandlerContext,
) => MessageShape<DescMessage> | Promise<MessageShape<DescMessage>>;

function rpcName(service: DescService, methodName: string): string {
  return `/${service.typeName}/${methodName}`;
}

function connectUnary(handler: AnyUnaryHandler, rpc: string, logger: ServerLogger): ConnectUnaryImpl {
  const fail = (err: unknown): never => {
    if (isUnexpectedError(err)) logger.error({ err, rpc }, "rpc failed");
    throw toConnectError(err);
  };
  return (request, context) => {
    let result: MessageShape<DescMessage> | Promise<MessageShape<DescMessage>>;
    try {
      result = handler(request, new ConnectRpcContext(context));
    } catch (err) {
      return fail(err);
    }
    return isPromise(result) ? result.catch(fail) : result;
  };
}

/** The transport-neutral view of a Connect call. */
class ConnectRpcContext implements RpcContext {
  constructor(private readonly context: HandlerContext) {}

  get transport(): "connect" {
    return "connect";
  }

  get signal(): AbortSignal {
    return this.context.signal;
  }

  header(name: string): string | undefined {
    return this.context.requestHeader.get(name) ?? undefined;
  }
}

const METHOD_NOT_ALLOWED = Symbol("method not allowed");

interface RouteTable {
  /** The route for the request, METHOD_NOT_ALLOWED when only the method differs, or undefined. */
  match(req: http.IncomingMessage): HttpRoute | typeof METHOD_NOT_ALLOWED | undefined;
}

function createRouteTable(routes: readonly HttpRoute[]): RouteTable {
  const exact = new Map<string, HttpRoute[]>();
  const prefixes = routes.filter((route) => route.prefix === true);
  for (const route of routes) {
    if (route.prefix === true) continue;
    const list = exact.get(route.path) ?? [];
    list.push(route);
    exact.set(route.path, list);
  }
  return {
    match(req) {
      const path = pathOf(req.url ?? "/");
      const candidates = exact.get(path) ?? prefixes.filter((route) => path.startsWith(route.path));
      if (candidates.length === 0) return undefined;
      return candidates.find((route) => route.method === undefined || route.method === req.method) ?? METHOD_NOT_ALLOWED;
    },
  };
}

function pathOf(url: string): string {
  const query = url.indexOf("?");
  return query === -1 ? url : url.slice(0, query);
}

function runRoute(route: HttpRoute, req: http.IncomingMessage, res: http.ServerResponse, logger: ServerLogger): void {
  const fail = (err: unknown): void => {
    logger.error({ err, path: route.path }, "http route failed");
    if (res.headersSent) res.destroy();
    else jsonError(res, 500, "internal", "internal error");
  };
  try {
    const result = route.handle(req, res);
    if (result !== undefined) result.catch(fail);
  } catch (err) {
    fail(err);
  }
}

/** The parts of a request and a response (HTTP/1 or HTTP/2 flavoured) that the error answers use. */
interface RequestLine {
  readonly method?: string | undefined;
  readonly url?: string | undefined;
}
interface JsonResponse {
  writeHead(status: number, headers: Record<string, string | number>): unknown;
  end(body: string): unknown;
}

function notFound(req: RequestLine, res: JsonResponse): void {
  jsonError(res, 404, "not_found", `no route for ${req.method ?? ""} ${pathOf(req.url ?? "/")}`);
}

/** Answers `{"error": code, "message": message}` with `status`. */
function jsonError(res: JsonResponse, status: number, code: string, message: string): void {
  const body = JSON.stringify({ error: code, message });
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
  res.end(body);
}

function listen(server: http.Server, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once("error", onError);
    server.listen(port, host, () => {
      server.off("error", onError);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

function close(server: http.Server, graceMs: number): Promise<void> {
  return new Promise((resolve) => {
    // node:http closes connections idle at close() time, but not keep-alive connections that go
    // idle later, when their in-flight request ends; poll for those until the grace runs out.
    const sweep = setInterval(() => server.closeIdleConnections(), CLOSE_POLL_MS);
    const deadline = setTimeout(() => server.closeAllConnections(), graceMs);
    server.close(() => {
      clearInterval(sweep);
      clearTimeout(deadline);
      resolve();
    });
    server.closeIdleConnections();
  });
}

function isUnary(method: DescMethod): method is DescMethodUnary {
  return method.methodKind === "unary";
}

function isPromise<T>(value: T | Promise<T>): value is Promise<T> {
  return typeof (value as { then?: unknown }).then === "function";
}
