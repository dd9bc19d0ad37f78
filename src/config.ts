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
  /**
   * AUTHZ_REMOVE_CREDENTIAL: on an allowed proxied request (ext_authz, forward-auth), tell the
   * proxy to strip the credential header before the upstream sees it. Default true.
   */
  readonly authzRemoveCredential: boolean;
  /** USAGE_SPOOL_DIR: where Report spools events while PostgreSQL is unreachable. Default DATA_DIR/spool. */
  readonly usageSpoolDir: string;
  /** USAGE_SPOOL_MAX_BYTES: spool size beyond which Report answers UNAVAILABLE. Default 1073741824 (1 GiB). */
  readonly usageSpoolMaxBytes: number;
  /** USAGE_MAX_EVENT_AGE_MS: oldest occurred_at Report accepts. Default 3024000000 (35 days). */
  readonly usageMaxEventAgeMs: number;
  /** USAGE_MAX_FUTURE_SKEW_MS: furthest occurred_at in the future Report accepts. Default 300000. */
  readonly usageMaxFutureSkewMs: number;
  /** USAGE_WRITE_TIMEOUT_MS: a Report write not answered within this is spooled instead. Default 10000. */
  readonly usageWriteTimeoutMs: number;
  /** USAGE_REPLAY_INTERVAL_MS: how often the spool is replayed (or PostgreSQL probed). Default 1000. */
  readonly usageReplayIntervalMs: number;
  /** USAGE_PARTITIONS_AHEAD: monthly usage_events partitions created ahead of the current month. Default 3. */
  readonly usagePartitionsAhead: number;
  /** RESERVATION_TTL_MS: a Check's reservation not settled by a Report is released after this. Default 900000. */
  readonly reservationTtlMs: number;
  /** RESERVATION_FLUSH_MS: how often reservations are written. Default 200. */
  readonly reservationFlushMs: number;
  /** STATEMENT_GRACE_MS: after a period ends, how long before its statement is closed for good. Default 86400000. */
  readonly statementGraceMs: number;
  /** CURRENCY: ISO 4217 currency of every price (statements, Scale's costs). Default "EUR". */
  readonly currency: string;
  /** SCALING_AUTO_INTERVAL_MS: how often capacities in auto mode are re-evaluated. Default 10000. */
  readonly scalingAutoIntervalMs: number;
  /** SCALING_FORECAST_HALF_LIFE_MS: half-life of the consumption rate behind depletes_at. Default 60000. */
  readonly scalingForecastHalfLifeMs: number;
  /** KEDA_STREAM_INTERVAL_MS: how often KEDA's StreamIsActive streams are re-evaluated. Default 5000. */
  readonly kedaStreamIntervalMs: number;
  /**
   * WORKERS: worker processes (node:cluster) sharing the ports, each a full replica with its own
   * leases (REPLICA_ID-w<i>). Default 1 (no cluster).
   */
  readonly workers: number;
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
    authzRemoveCredential: boolVar(env, "AUTHZ_REMOVE_CREDENTIAL", true),
    usageSpoolDir: pathVar(env, "USAGE_SPOOL_DIR", options.cwd) ?? resolve(isAbsolute(dataDir) ? dataDir : resolve(options.cwd, dataDir), "spool"),
    usageSpoolMaxBytes: intVar(env, "USAGE_SPOOL_MAX_BYTES", 1024 * 1024 * 1024, 1024 * 1024, Number.MAX_SAFE_INTEGER),
    usageMaxEventAgeMs: intVar(env, "USAGE_MAX_EVENT_AGE_MS", 35 * 86_400_000, 60_000, 3650 * 86_400_000),
    usageMaxFutureSkewMs: intVar(env, "USAGE_MAX_FUTURE_SKEW_MS", 300_000, 0, 86_400_000),
    usageWriteTimeoutMs: intVar(env, "USAGE_WRITE_TIMEOUT_MS", 10_000, 100, 600_000),
    usageReplayIntervalMs: intVar(env, "USAGE_REPLAY_INTERVAL_MS", 1000, 10, 600_000),
    usagePartitionsAhead: intVar(env, "USAGE_PARTITIONS_AHEAD", 3, 1, 120),
    reservationTtlMs: intVar(env, "RESERVATION_TTL_MS", 900_000, 1000, 30 * 86_400_000),
    reservationFlushMs: intVar(env, "RESERVATION_FLUSH_MS", 200, 10, 60_000),
    statementGraceMs: intVar(env, "STATEMENT_GRACE_MS", 86_400_000, 0, 90 * 86_400_000),
    currency: currencyVar(env, "CURRENCY", "EUR"),
    scalingAutoIntervalMs: intVar(env, "SCALING_AUTO_INTERVAL_MS", 10_000, 1000, 3_600_000),
    scalingForecastHalfLifeMs: intVar(env, "SCALING_FORECAST_HALF_LIFE_MS", 60_000, 1000, 86_400_000),
    kedaStreamIntervalMs: intVar(env, "KEDA_STREAM_INTERVAL_MS", 5000, 100, 600_000),
    workers: intVar(env, "WORKERS", 1, 1, 64),
  };
  if (config.workers > 1 && config.databaseUrl === undefined) {
    throw new ConfigError("WORKERS", "more than 1 needs DATABASE_URL: the embedded database belongs to one process");
  }
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

function pathVar(env: Env, name: string, cwd: string): string | undefined {
  const value = raw(env, name);
  return value === undefined ? undefined : isAbsolute(value) ? value : resolve(cwd, value);
}

function currencyVar(env: Env, name: string, fallback: string): string {
  const value = raw(env, name) ?? fallback;
  if (!/^[A-Z]{3}$/.test(value)) throw new ConfigError(name, `must be an ISO 4217 code such as EUR or USD, got "${value}"`);
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
