/**
 * /metrics under WORKERS=N: the workers share the HTTP port, so a scrape lands on any one of
 * them; that worker asks the primary, which gathers every worker's registry over IPC and sums
 * them with prom-client's aggregator (counters and histograms add up; gauges use each metric's
 * `aggregator`, e.g. max for live_replicas). The scrape thus sees the whole process group.
 *
 * A worker that does not answer within `timeoutMs` is left out of that scrape (counted in
 * licensing_cluster_metrics_missing_workers), so one wedged worker cannot stall monitoring.
 */
import cluster, { type Worker } from "node:cluster";
import { AggregatorRegistry, type Registry } from "prom-client";

const ASK = "licensing:metrics:ask"; // worker → primary: collect everyone's
const GET = "licensing:metrics:get"; // primary → worker: send yours
const MINE = "licensing:metrics:mine"; // worker → primary: here is mine
const ALL = "licensing:metrics:all"; // primary → worker: the aggregate

interface MetricsMessage {
  readonly type: string;
  readonly id: number;
  readonly metrics?: unknown[];
  readonly text?: string;
}

function isMetricsMessage(value: unknown): value is MetricsMessage {
  return typeof value === "object" && value !== null && typeof (value as { type?: unknown }).type === "string" && typeof (value as { id?: unknown }).id === "number";
}

/** In the primary: answers workers' aggregate requests. Returns a function that stops it. */
export function serveClusterMetrics(timeoutMs = 2000): () => void {
  let nextId = 1;
  const waiting = new Map<number, (metrics: unknown[] | undefined) => void>();

  const onMessage = (worker: Worker, message: unknown): void => {
    if (!isMetricsMessage(message)) return;
    if (message.type === MINE) waiting.get(message.id)?.(message.metrics);
    if (message.type !== ASK) return;
    const workers = Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined && w.isConnected());
    void Promise.all(workers.map((w) => askOne(w))).then((answers) => {
      const present = answers.filter((a): a is unknown[] => a !== undefined);
      const missing = answers.length - present.length;
      const text = AggregatorRegistry.aggregate(present as never).metrics();
      void Promise.resolve(text).then((body: string) => {
        const note = `# HELP licensing_cluster_metrics_missing_workers Workers that did not answer this scrape in time.\n# TYPE licensing_cluster_metrics_missing_workers gauge\nlicensing_cluster_metrics_missing_workers ${missing}\n`;
        if (worker.isConnected()) worker.send({ type: ALL, id: message.id, text: `${body}${note}` });
      });
    });
  };

  function askOne(worker: Worker): Promise<unknown[] | undefined> {
    const id = nextId++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => done(undefined), timeoutMs);
      function done(metrics: unknown[] | undefined): void {
        clearTimeout(timer);
        waiting.delete(id);
        resolve(metrics);
      }
      waiting.set(id, done);
      worker.send({ type: GET, id });
    });
  }

  cluster.on("message", onMessage);
  return () => cluster.off("message", onMessage);
}

export interface WorkerMetrics {
  /** The whole cluster's metrics text (falls back to this worker's own if the primary does not answer). */
  collect(): Promise<string>;
  close(): void;
}

/** In a worker: answers the primary's requests for this registry, and asks it for the aggregate. */
export function createWorkerMetrics(registry: Registry, timeoutMs = 3000): WorkerMetrics {
  let nextId = 1;
  const waiting = new Map<number, (text: string) => void>();
  const onMessage = (message: unknown): void => {
    if (!isMetricsMessage(message)) return;
    if (message.type === GET) {
      void registry.getMetricsAsJSON().then((metrics) => process.send?.({ type: MINE, id: message.id, metrics }));
    } else if (message.type === ALL && typeof message.text === "string") {
      waiting.get(message.id)?.(message.text);
    }
  };
  process.on("message", onMessage);
  return {
    collect() {
      if (process.send === undefined) return registry.metrics();
      const id = nextId++;
      return new Promise((resolve) => {
        const timer = setTimeout(() => {
          waiting.delete(id);
          // The primary is busy or gone: this worker's own numbers beat no numbers.
          void registry.metrics().then(resolve);
        }, timeoutMs);
        waiting.set(id, (text) => {
          clearTimeout(timer);
          waiting.delete(id);
          resolve(text);
        });
        process.send?.({ type: ASK, id });
      });
    },
    close: () => {
      process.off("message", onMessage);
    },
  };
}
