/**
 * Typed, validated configuration, read once from the environment by main.ts and frozen.
 *
 * Every field below is documented with its variable, default and unit; the README's
 * configuration table is this list. `loadConfig` throws a `ConfigError` naming the variable for
 * any bad value, so the service fails at start instead of misbehaving later.
 */
import { isAbsolute, resolve } from "node:path";

export type LogLevel = "fatal" | "error" | "warn" | "info" | "debug" | "trace" | "silent";

export interface Config {
  /** HOST: interface both listeners bind to. Default "0.0.0.0". */
  readonly host: string;
  /** GRPC_PORT: gRPC listener (LicensingService, AdminService, health, reflection). Default 50051. */
  readonly grpcPort: number;
  /** HTTP_PORT: HTTP listener (Connect JSON / gRPC-Web, /healthz, /readyz). Default 8080. */
  readonly httpPort: number;
  /** DATABASE_URL: PostgreSQL connection URL; unset means embedded PGlite in dataDir. */
  readonly databaseUrl: string | undefined;
  /** DATA_DIR: embedded database, admin token and (later) the spool. Default "./.data", made absolute. */
  readonly dataDir: string;
  /** DB_POOL_MAX: PostgreSQL pool size. Default 10. */
  readonly dbPoolMax: number;
  /** DB_CONNECT_TIMEOUT_MS: how long to wait for a PostgreSQL connection. Default 5000. */
  readonly dbConnectTimeoutMs: number;
  /** LOG_LEVEL: pino level. Default "info". */
  readonly logLevel: LogLevel;
  /** LOG_PRETTY: human-readable logs; default only when stdout is a terminal. */
  readonly logPretty: boolean;
  /**
   * ADMIN_TOKEN: bearer token for AdminService, at least 16 characters. Unset: in embedded mode a
   * random token is generated into DATA_DIR/admin-token (mode 0600); with DATABASE_URL the admin
   * API refuses every call until it is set.
   */
  readonly adminToken: string | undefined;
  /** MIGRATE_ON_START: apply pending migrations at start. Default true. */
  readonly migrateOnStart: boolean;
  /** DEMO_SEED: "auto" applies examples/demo.yaml on the first start of an empty embedded database; "off" never. Default "auto". */
  readonly demoSeed: "auto" | "off";
  /** SHUTDOWN_GRACE_MS: how long in-flight calls may run after SIGTERM before connections are cut. Default 10000. */
  readonly shutdownGraceMs: number;
  /** MAX_MESSAGE_BYTES: largest request message accepted on either port. Default 4194304 (4 MiB). */
  readonly maxMessageBytes: number;
  /** CHECK_CACHE_TTL_MS: cache_ttl returned with answers that consumed nothing. Default 5000. */
  readonly checkCacheTtlMs: number;
  /** UNKNOWN_KEY_CACHE_MS: how long an unknown API key is remembered as unknown, so a flood of bad keys does not become a flood of queries. Default 2000. */
  readonly unknownKeyCacheMs: number;
}

export class ConfigError extends Error {
  constructor(
    readonly variable: string,
    message: string,
  ) {
    super(`${variable}: ${message}`);
    this.name = "ConfigError";
  }
}

type Env = Readonly<Record<string, string | undefined>>;

export interface LoadConfigOptions {
  /** Directory relative DATA_DIR values resolve against (the process's cwd). */
  readonly cwd: string;
  /** Whether stdout is a terminal (pretty logs by default). */
  readonly stdoutIsTty: boolean;
}

/** Reads and validates the configuration; throws ConfigError naming the first bad variable. */
export function loadConfig(env: Env, options: LoadConfigOptions): Config {
  const dataDir = stringVar(env, "DATA_DIR", "./.data");
  const config: Config = {
    host: stringVar(env, "HOST", "0.0.0.0"),
    grpcPort: portVar(env, "GRPC_PORT", 50051),
    httpPort: portVar(env, "HTTP_PORT", 8080),
    databaseUrl: databaseUrlVar(env, "DATABASE_URL"),
    dataDir: isAbsolute(dataDir) ? dataDir : resolve(options.cwd, dataDir),
    dbPoolMax: intVar(env, "DB_POOL_MAX", 10, 1, 1000),
    dbConnectTimeoutMs: intVar(env, "DB_CONNECT_TIMEOUT_MS", 5000, 100, 600_000),
    logLevel: enumVar(env, "LOG_LEVEL", "info", ["fatal", "error", "warn", "info", "debug", "trace", "silent"]),
    logPretty: boolVar(env, "LOG_PRETTY", options.stdoutIsTty),
    adminToken: adminTokenVar(env, "ADMIN_TOKEN"),
    migrateOnStart: boolVar(env, "MIGRATE_ON_START", true),
    demoSeed: enumVar(env, "DEMO_SEED", "auto", ["auto", "off"]),
    shutdownGraceMs: intVar(env, "SHUTDOWN_GRACE_MS", 10_000, 0, 600_000),
    maxMessageBytes: intVar(env, "MAX_MESSAGE_BYTES", 4 * 1024 * 1024, 1024, 64 * 1024 * 1024),
    checkCacheTtlMs: intVar(env, "CHECK_CACHE_TTL_MS", 5000, 0, 3_600_000),
    unknownKeyCacheMs: intVar(env, "UNKNOWN_KEY_CACHE_MS", 2000, 0, 3_600_000),
  };
  if (config.grpcPort !== 0 && config.grpcPort === config.httpPort) {
    throw new ConfigError("HTTP_PORT", `must differ from GRPC_PORT (both ${config.grpcPort})`);
  }
  return Object.freeze(config);
}

function raw(env: Env, name: string): string | undefined {
  const value = env[name];
  return value === undefined || value.trim() === "" ? undefined : value.trim();
}

function stringVar(env: Env, name: string, fallback: string): string {
  return raw(env, name) ?? fallback;
}

function intVar(env: Env, name: string, fallback: number, min: number, max: number): number {
  const value = raw(env, name);
  if (value === undefined) return fallback;
  if (!/^\d+$/.test(value)) throw new ConfigError(name, `must be a whole number, got "${value}"`);
  const n = Number(value);
  if (n < min || n > max) throw new ConfigError(name, `must be between ${min} and ${max}, got ${n}`);
  return n;
}

function portVar(env: Env, name: string, fallback: number): number {
  return intVar(env, name, fallback, 0, 65535);
}

function boolVar(env: Env, name: string, fallback: boolean): boolean {
  const value = raw(env, name)?.toLowerCase();
  if (value === undefined) return fallback;
  if (["1", "true", "yes", "on"].includes(value)) return true;
  if (["0", "false", "no", "off"].includes(value)) return false;
  throw new ConfigError(name, `must be true or false, got "${value}"`);
}

function enumVar<T extends string>(env: Env, name: string, fallback: T, allowed: readonly T[]): T {
  const value = raw(env, name);
  if (value === undefined) return fallback;
  if (!(allowed as readonly string[]).includes(value)) {
    throw new ConfigError(name, `must be one of ${allowed.join(", ")}, got "${value}"`);
  }
  return value as T;
}

function databaseUrlVar(env: Env, name: string): string | undefined {
  const value = raw(env, name);
  if (value === undefined) return undefined;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    // The value may hold a password: never echo it.
    throw new ConfigError(name, "is not a valid URL (expected postgres://user:password@host:port/database)");
  }
  if (url.protocol !== "postgres:" && url.protocol !== "postgresql:") {
    throw new ConfigError(name, `must use the postgres:// scheme, got "${url.protocol}"`);
  }
  return value;
}

function adminTokenVar(env: Env, name: string): string | undefined {
  const value = raw(env, name);
  if (value === undefined) return undefined;
  if (value.length < 16) throw new ConfigError(name, "must be at least 16 characters");
  return value;
}
