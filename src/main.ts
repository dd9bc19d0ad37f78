/**
 * The service's entry point, and the only place that reads the environment and handles signals.
 *
 * Exit codes: 0 after a clean shutdown on SIGTERM/SIGINT; 1 for bad configuration (the message
 * names the variable) or a failed start; a second signal during shutdown exits 1 at once.
 */
import { hostname } from "node:os";
import { createApp } from "./app.js";
import { ConfigError, loadConfig } from "./config.js";
import { createLogger } from "./logger.js";

export async function runService(): Promise<void> {
  let config;
  try {
    config = loadConfig(process.env, {
      cwd: process.cwd(),
      stdoutIsTty: process.stdout.isTTY === true,
      defaultReplicaId: `${hostname()}-${process.pid}`.replace(/[^A-Za-z0-9._:-]/g, "-"),
    });
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    process.stderr.write(`licensing: invalid configuration: ${error.message}\n`);
    process.exit(1);
  }
  const logger = createLogger({ level: config.logLevel, pretty: config.logPretty });
  const app = createApp({ config, logger, announce: (text) => process.stderr.write(`${text}\n`) });

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
