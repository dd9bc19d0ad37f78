/**
 * A typed client for other Node services:
 *
 *   const licensing = createLicensingClient("http://licensing:50051");
 *   const answer = await licensing.check({ credential: { case: "apiKey", value: key }, feature: "reports.export" });
 *   if (answer.decision === Decision.ALLOW) ...
 *
 * It speaks gRPC over HTTP/2 (Connect's gRPC transport) to the gRPC port. A deny is a normal
 * answer; a thrown ConnectError means no decision could be made (INVALID_ARGUMENT,
 * UNAUTHENTICATED, UNAVAILABLE), and callers should treat it according to their failure policy.
 */
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { LicensingService } from "./gen/licensing/v1/licensing_pb.js";

export type LicensingClient = Client<typeof LicensingService>;

export interface LicensingClientOptions {
  /** A service token sent as `authorization: Bearer <token>` (needed to name licences directly). */
  readonly serviceToken?: string;
  /** Per-call deadline in ms unless a call sets its own. Default 1000. */
  readonly timeoutMs?: number;
}

/** A client for the LicensingService at `url` (e.g. "http://127.0.0.1:50051"). */
export function createLicensingClient(url: string, options: LicensingClientOptions = {}): LicensingClient {
  const interceptors: Interceptor[] = [];
  const token = options.serviceToken;
  if (token !== undefined) {
    interceptors.push((next) => (request) => {
      request.header.set("authorization", `Bearer ${token}`);
      return next(request);
    });
  }
  return createClient(
    LicensingService,
    createGrpcTransport({ baseUrl: url, interceptors, defaultTimeoutMs: options.timeoutMs ?? 1000 }),
  );
}
