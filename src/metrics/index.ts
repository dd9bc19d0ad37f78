/** Prometheus metrics: see metrics.ts. */
export { createMetrics, RPC_BUCKETS_SECONDS, type Metrics, type MetricsOptions, type PoolStats, type SourceField } from "./metrics.js";
export { metricsRoute } from "./route.js";
export { createReadiness, readinessRoute, type Readiness, type ReadinessOptions, type ReadinessReport } from "./readiness.js";
