/**
 * The root logger, made once in main.ts and passed down; handlers log through children
 * (`logger.child({ rpc })`). NDJSON to stdout, pretty only for a person at a terminal.
 *
 * Secrets are redacted by path, so a careless `logger.info({ request })` cannot leak an API key,
 * a token or a password into the logs.
 */
import { createRequire } from "node:module";
import { pino, type Logger } from "pino";

export type { Logger } from "pino";

/** Paths pino replaces with "[redacted]" wherever they appear in a logged object. */
export const REDACTED_PATHS: readonly string[] = [
  "secret",
  "*.secret",
  "apiKey",
  "*.apiKey",
  "api_key",
  "*.api_key",
  "token",
  "*.token",
  "bearerToken",
  "*.bearerToken",
  "licenseToken",
  "*.licenseToken",
  "adminToken",
  "*.adminToken",
  "signingKeySecret",
  "*.signingKeySecret",
  "signingSecret",
  "*.signingSecret",
  "password",
  "*.password",
  "databaseUrl",
  "*.databaseUrl",
  "authorization",
  "*.authorization",
  "headers.authorization",
  '*.headers["x-api-key"]',
  '*.headers["authorization"]',
];

export interface LoggerOptions {
  readonly level: string;
  readonly pretty: boolean;
  readonly name?: string;
}

export function createLogger(options: LoggerOptions): Logger {
  const base = {
    name: options.name ?? "licensing",
    level: options.level,
    redact: { paths: [...REDACTED_PATHS], censor: "[redacted]" },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  if (options.pretty && prettyAvailable()) {
    return pino({ ...base, transport: { target: "pino-pretty", options: { translateTime: "SYS:HH:MM:ss.l" } } });
  }
  return pino(base);
}

/** pino-pretty is a development dependency; the production image logs NDJSON without it. */
function prettyAvailable(): boolean {
  try {
    createRequire(import.meta.url).resolve("pino-pretty");
    return true;
  } catch {
    return false;
  }
}
