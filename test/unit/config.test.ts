import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig } from "../../src/config.js";

const options = { cwd: "/srv/app", stdoutIsTty: false };

function errorOf(env: Record<string, string>): ConfigError {
  try {
    loadConfig(env, options);
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
  throw new Error("expected a ConfigError");
}

describe("configuration", () => {
  it("defaults give the documented ports, embedded database and a frozen object", () => {
    const config = loadConfig({}, options);
    expect(config.grpcPort).toBe(50051);
    expect(config.httpPort).toBe(8080);
    expect(config.host).toBe("0.0.0.0");
    expect(config.databaseUrl).toBeUndefined();
    expect(config.dataDir).toBe("/srv/app/.data");
    expect(config.logLevel).toBe("info");
    expect(config.migrateOnStart).toBe(true);
    expect(config.shutdownGraceMs).toBe(10_000);
    expect(Object.isFrozen(config)).toBe(true);
  });

  it("reads every variable it documents", () => {
    const config = loadConfig(
      {
        GRPC_PORT: "6000",
        HTTP_PORT: "6001",
        HOST: "127.0.0.1",
        DATABASE_URL: "postgres://u:p@db:5432/lic",
        DATA_DIR: "/var/lib/licensing",
        LOG_LEVEL: "debug",
        ADMIN_TOKEN: "0123456789abcdef",
        MIGRATE_ON_START: "false",
        DEMO_SEED: "off",
        SHUTDOWN_GRACE_MS: "2500",
        DB_POOL_MAX: "20",
      },
      options,
    );
    expect(config).toMatchObject({
      grpcPort: 6000,
      httpPort: 6001,
      host: "127.0.0.1",
      databaseUrl: "postgres://u:p@db:5432/lic",
      dataDir: "/var/lib/licensing",
      logLevel: "debug",
      adminToken: "0123456789abcdef",
      migrateOnStart: false,
      demoSeed: "off",
      shutdownGraceMs: 2500,
      dbPoolMax: 20,
    });
  });

  it.each([
    [{ GRPC_PORT: "abc" }, "GRPC_PORT", "whole number"],
    [{ HTTP_PORT: "70000" }, "HTTP_PORT", "between 0 and 65535"],
    [{ LOG_LEVEL: "loud" }, "LOG_LEVEL", "must be one of"],
    [{ MIGRATE_ON_START: "maybe" }, "MIGRATE_ON_START", "true or false"],
    [{ ADMIN_TOKEN: "short" }, "ADMIN_TOKEN", "at least 16"],
    [{ DATABASE_URL: "mysql://x@y/z" }, "DATABASE_URL", "postgres://"],
    [{ GRPC_PORT: "7000", HTTP_PORT: "7000" }, "HTTP_PORT", "must differ"],
  ])("a bad value (%j) fails naming %s", (env, variable, text) => {
    const error = errorOf(env);
    expect(error.variable).toBe(variable);
    expect(error.message).toContain(variable);
    expect(error.message).toContain(text);
  });

  it("an unparseable DATABASE_URL is named without echoing its password", () => {
    const error = errorOf({ DATABASE_URL: "postgres://user:s3cret-pw@[bad" });
    expect(error.variable).toBe("DATABASE_URL");
    expect(error.message).not.toContain("s3cret-pw");
  });
});

describe("configuration of the Check engine", () => {
  it("defaults the replica id to the one main.ts derives, and validates it", () => {
    expect(loadConfig({}, { ...options, defaultReplicaId: "host-42" }).replicaId).toBe("host-42");
    expect(errorOf({ REPLICA_ID: "has space" }).variable).toBe("REPLICA_ID");
  });

  it("SIGNING_SECRET must be 32 bytes of base64 and is never echoed", () => {
    const key = Buffer.alloc(32, 7).toString("base64");
    expect(loadConfig({ SIGNING_SECRET: key }, options).signingKeySecret?.length).toBe(32);
    const error = errorOf({ SIGNING_SECRET: "dG9vLXNob3J0" });
    expect(error.variable).toBe("SIGNING_SECRET");
    expect(error.message).not.toContain("dG9vLXNob3J0");
  });

  it("DECISION_LOG accepts all or denies", () => {
    expect(loadConfig({ DECISION_LOG: "denies" }, options).decisionLog).toBe("denies");
    expect(errorOf({ DECISION_LOG: "none" }).variable).toBe("DECISION_LOG");
  });
});

describe("configuration of workers", () => {
  it("WORKERS > 1 needs PostgreSQL: the embedded database belongs to one process", () => {
    expect(errorOf({ WORKERS: "2" }).variable).toBe("WORKERS");
    expect(loadConfig({ WORKERS: "2", DATABASE_URL: "postgres://u@h/d" }, options).workers).toBe(2);
  });
});
