/**
 * The service's entry point, and the only place that reads the environment and handles signals.
 *
 * Exit codes: 0 after a clean shutdown on SIGTERM/SIGINT; 1 for bad configuration (the message
 * names the variable) or a failed start; a second signal during shutdown exits 1 at once.
 * WORKERS=N > 1 runs a node:cluster primary that supervises N workers, each a full replica.
 */
import cluster from "node:cluster";
import { hostname } from "node:os";
import { createApp } from "./app.js";
import { runCluster, serveClusterMetrics, workerReplicaId, createWorkerMetrics } from "./cluster/index.js";
import { ConfigError, loadConfig, type Config } from "./config.js";
import { createLogger, type Logger } from "./logger.js";
import type { Metrics } from "./metrics/index.js";

export async function runService(): Promise<void> {
  const config = readConfig();
  const logger = createLogger({ level: config.logLevel, pretty: config.logPretty });
  if (config.workers === 1) {
    await startReplica(config, logger);
    return;
  }
  // The primary answers the workers' requests for the cluster-wide /metrics.
  const stopMetrics = cluster.isPrimary ? serveClusterMetrics() : undefined;
  const code = await runCluster({ workers: config.workers, env: process.env, logger }, (index) =>
    startReplica(
      { ...config, replicaId: workerReplicaId(config.replicaId, index) },
      logger.child({ worker: index }),
      (metrics) => createWorkerMetrics(metrics.registry).collect,
    ),
  );
  if (code !== undefined) {
    stopMetrics?.();
    process.exit(code);
  }
}

function readConfig(): Config {
  try {
    return loadConfig(process.env, {
      cwd: process.cwd(),
      stdoutIsTty: process.stdout.isTTY === true,
      defaultReplicaId: `${hostname()}-${process.pid}`.replace(/[^A-Za-z0-9._:-]/g, "-"),
    });
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    process.stderr.write(`licensing: invalid configuration: ${error.message}\n`);
    process.exit(1);
  }
}

/** Runs one replica in this process until a signal stops it. */
async function startReplica(
  config: Config,
  logger: Logger,
  collectMetrics?: (metrics: Metrics) => () => Promise<string>,
): Promise<void> {
  const app = createApp({
    config,
    logger,
    announce: (text) => process.stderr.write(`${text}\n`),
    ...(collectMetrics === undefined ? {} : { collectMetrics }),
  });

  let stopping = false;
  const shutdown = (signal: NodeJS.Signals) => {
    if (stopping) {
      logger.warn({ signal }, "second signal during shutdown: exiting now");
      process.exit(1);
    }
    stopping = true;
    logger.info({ signal }, "signal received");
    app.stop().then(
      () => process.exit(0),
      (error: unknown) => {
        logger.error({ err: error }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", shutdown);
  process.on("SIGINT", shutdown);
  process.on("uncaughtException", (error) => {
    logger.fatal({ err: error }, "uncaught exception: exiting");
    process.exit(1);
  });
  process.on("unhandledRejection", (reason) => {
    logger.fatal({ err: reason }, "unhandled promise rejection: exiting");
    process.exit(1);
  });

  try {
    await app.start();
  } catch (error) {
    logger.fatal({ err: error }, "start failed");
    await app.stop().catch(() => undefined); // already failing; the start error is what matters
    process.exit(1);
  }
}
