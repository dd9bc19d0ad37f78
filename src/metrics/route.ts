/**
 * GET /metrics on the HTTP port: the registry in the Prometheus text format (version 0.0.4).
 */
import type { Registry } from "prom-client";
import type { HttpRoute } from "../server/http-server.js";

/**
 * The /metrics route. `collect` defaults to `registry.metrics()`; cluster workers pass one that
 * gathers every worker's registry (src/cluster/metrics.ts).
 */
export function metricsRoute(registry: Registry, collect: () => Promise<string> = () => registry.metrics()): HttpRoute {
  return {
    method: "GET",
    path: "/metrics",
    handle: async (_req, res) => {
      const body = await collect();
      res.writeHead(200, {
        "content-type": registry.contentType,
        "cache-control": "no-store",
        "content-length": Buffer.byteLength(body),
      });
      res.end(body);
    },
  };
}
