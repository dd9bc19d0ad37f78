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
  /** REPLICA_ID: this replica's name in leases, heartbeats and the decision log. Default "<hostname>-<pid>". */
  readonly replicaId: string;
  /** OPERATION_WINDOW_MS: how long a Check's operation_id is remembered for retries. Default 600000 (10 min). */
  readonly operationWindowMs: number;
  /** OPERATION_CACHE_MAX: most operation ids remembered per replica. Default 100000. */
  readonly operationCacheMax: number;
  /** LEASE_TTL_MS: a quota lease not renewed for this long is reclaimed from a vanished replica. Default 30000. */
  readonly leaseTtlMs: number;
  /** SEAT_TTL_MS: a seat is released when its instance has not checked for this long. Default 60000. */
  readonly seatTtlMs: number;
  /** SETTLE_INTERVAL_MS: how often consumed quota units and seat renewals are written back. Default 1000. */
  readonly settleIntervalMs: number;
  /** HEARTBEAT_INTERVAL_MS: how often this replica heartbeats (live replicas share rate limits). Default 5000. */
  readonly heartbeatIntervalMs: number;
  /**
   * DECISION_LOG: "denies" (every deny a row of its own; allows counted in one row per second,
   * licence, feature and reason) or "all" (every decision a row). Default "denies".
   */
  readonly decisionLog: "all" | "denies";
  /** DECISION_LOG_MAX_QUEUE: decisions held for writing before new ones are dropped (counted and logged). Default 100000. */
  readonly decisionLogMaxQueue: number;
  /** DECISION_LOG_FLUSH_MS: how often the decision log is written. Default 1000. */
  readonly decisionLogFlushMs: number;
  /**
   * SIGNING_SECRET: base64 of 32 bytes; encrypts licence-token signing keys at rest. Unset:
   * in embedded mode generated into DATA_DIR/signing-secret (mode 0600); with DATABASE_URL,
   * licence tokens cannot be issued (verification still works).
   */
  readonly signingKeySecret: Buffer | undefined;
  /**
   * JWKS_COOLDOWN_MS: least time between two fetches of an identity provider's JWKS (a flood of
   * unknown kids costs at most one fetch per cooldown; a newly published key is picked up
   * within it). Default 10000.
   */
  readonly jwksCooldownMs: number;
  /** JWKS_CACHE_MAX_AGE_MS: how long a fetched JWKS is used before it is fetched again. Default 600000. */
  readonly jwksCacheMaxAgeMs: number;
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
  /** Default REPLICA_ID, e.g. "<hostname>-<pid>". */
  readonly defaultReplicaId?: string;
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
    replicaId: replicaIdVar(env, "REPLICA_ID", options.defaultReplicaId ?? "replica"),
    operationWindowMs: intVar(env, "OPERATION_WINDOW_MS", 600_000, 0, 86_400_000),
    operationCacheMax: intVar(env, "OPERATION_CACHE_MAX", 100_000, 0, 10_000_000),
    leaseTtlMs: intVar(env, "LEASE_TTL_MS", 30_000, 1000, 3_600_000),
    seatTtlMs: intVar(env, "SEAT_TTL_MS", 60_000, 1000, 86_400_000),
    settleIntervalMs: intVar(env, "SETTLE_INTERVAL_MS", 1000, 10, 60_000),
    heartbeatIntervalMs: intVar(env, "HEARTBEAT_INTERVAL_MS", 5000, 100, 60_000),
    decisionLog: enumVar(env, "DECISION_LOG", "denies", ["all", "denies"]),
    decisionLogMaxQueue: intVar(env, "DECISION_LOG_MAX_QUEUE", 100_000, 1, 10_000_000),
    decisionLogFlushMs: intVar(env, "DECISION_LOG_FLUSH_MS", 1000, 10, 60_000),
    signingKeySecret: secretKeyVar(env, "SIGNING_SECRET"),
    jwksCooldownMs: intVar(env, "JWKS_COOLDOWN_MS", 10_000, 0, 3_600_000),
    jwksCacheMaxAgeMs: intVar(env, "JWKS_CACHE_MAX_AGE_MS", 600_000, 1000, 86_400_000),
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

function replicaIdVar(env: Env, name: string, fallback: string): string {
  const value = raw(env, name) ?? fallback;
  if (!/^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/.test(value)) {
    throw new ConfigError(name, `must be 1-128 letters, digits, ".", "_", ":" or "-", got "${value}"`);
  }
  return value;
}

function secretKeyVar(env: Env, name: string): Buffer | undefined {
  const value = raw(env, name);
  if (value === undefined) return undefined;
  const key = Buffer.from(value, "base64");
  // Never echo the value: it is a secret.
  if (key.length !== 32) throw new ConfigError(name, `must be base64 of exactly 32 bytes (got ${key.length} bytes)`);
  return key;
}

function adminTokenVar(env: Env, name: string): string | undefined {
  const value = raw(env, name);
  if (value === undefined) return undefined;
  if (value.length < 16) throw new ConfigError(name, "must be at least 16 characters");
  return value;
}
