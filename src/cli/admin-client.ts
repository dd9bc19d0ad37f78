/**
 * The CLI's connection to a running service's AdminService, over gRPC (Connect's gRPC transport
 * on HTTP/2), with the admin token on every call.
 */
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { AdminService } from "../gen/licensing/admin/v1/admin_pb.js";

export type AdminClient = Client<typeof AdminService>;

export function createAdminClient(serverUrl: string, token: string | undefined): AdminClient {
  const withToken: Interceptor = (next) => (request) => {
    if (token !== undefined) request.header.set("authorization", `Bearer ${token}`);
    return next(request);
  };
  return createClient(AdminService, createGrpcTransport({ baseUrl: serverUrl, interceptors: [withToken] }));
}
