/** WORKERS=N: see run-cluster.ts and cluster-metrics.ts. */
export { runCluster, workerReplicaId, WORKER_INDEX_ENV, type ClusterLogger, type ClusterOptions } from "./run-cluster.js";
export { createWorkerMetrics, serveClusterMetrics, type WorkerMetrics } from "./cluster-metrics.js";
