/**
 * PostgreSQL taken away mid-traffic (a TCP proxy in front of it is cut): what memory can answer
 * keeps answering, beyond that each entitlement's failure mode decides, and fail-open usage is
 * settled once the database is back. Needs PostgreSQL: skipped without DATABASE_URL (CI sets it).
 */
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Decision, Reason } from "../../src/index.js";
import { CheckRequestSchema, CheckResponseSchema } from "../../src/gen/licensing/v1/licensing_pb.js";
import { createTestStore, type TestStore } from "../support/database.js";
import { RawGrpcClient } from "../support/grpc.js";
import { removeDataDir, runCli, startService, type RunningService } from "../support/service.js";
import { startTcpProxy, type TcpProxy } from "../support/tcp-proxy.js";

const ADMIN_TOKEN = "outage-admin-token-0123456789";

const RULES = `
version: 1
accounts:
  - { id: acme, name: Acme }
plans:
  - name: metered
    entitlements:
      - { feature: reports.export, kind: boolean }
      - { feature: closed.calls, kind: quota, limit: 100000, period: lifetime, failure_mode: fail_closed }
      - { feature: open.calls, kind: quota, limit: 100000, period: lifetime, failure_mode: fail_open }
licenses:
  - { id: acme-prod, account: acme, plan: metered }
api_keys:
  - { id: warm-key, license: acme-prod }
  - { id: cold-key, license: acme-prod }
`;

describe.skipIf(process.env.DATABASE_URL === undefined)("PostgreSQL unreachable during Checks", () => {
  let database: TestStore;
  let proxy: TcpProxy;
  let service: RunningService;
  let client: RawGrpcClient;
  const secrets = new Map<string, string>();
  let openUnitsAllowed = 0;
  let closedUnitsAllowed = 0;

  function check(key: string, feature: string, quantity = 1n) {
    return client.call("/licensing.v1.LicensingService/Check", CheckRequestSchema, CheckResponseSchema, {
      credential: { case: "apiKey", value: key },
      feature,
      quantity,
    });
  }

  beforeAll(async () => {
    database = await createTestStore("postgres", { migrate: true });
    const target = new URL(database.databaseUrl ?? "");
    proxy = await startTcpProxy(Number(target.port || 5432), target.hostname);
    target.port = String(proxy.port);
    service = await startService({
      env: { DATABASE_URL: target.toString(), ADMIN_TOKEN, DEMO_SEED: "off", DB_CONNECT_TIMEOUT_MS: "500" },
    });
    client = new RawGrpcClient(`127.0.0.1:${service.grpcPort}`);
    const file = join(service.dataDir, "rules.yaml");
    await writeFile(file, RULES);
    const result = await runCli(["apply", "-f", file, "--output", "json", "--server", service.grpcUrl], {
      env: { LICENSING_ADMIN_TOKEN: ADMIN_TOKEN },
    });
    for (const key of (JSON.parse(result.stdout) as { issued_keys: { id: string; secret: string }[] }).issued_keys) {
      secrets.set(key.id, key.secret);
    }
    const warm = secrets.get("warm-key") ?? "";
    for (const feature of ["reports.export", "closed.calls", "open.calls"]) {
      const answer = await check(warm, feature);
      expect(answer.decision).toBe(Decision.ALLOW);
      if (feature === "closed.calls") closedUnitsAllowed++;
      if (feature === "open.calls") openUnitsAllowed++;
    }
    proxy.cut();
  }, 60_000);

  afterAll(async () => {
    client?.close();
    await service?.stop();
    await proxy?.close();
    if (service) await removeDataDir(service.dataDir);
    await database?.drop();
  });

  it("a cached licence keeps answering boolean features", async () => {
    const answer = await check(secrets.get("warm-key") ?? "", "reports.export");
    expect(answer.decision).toBe(Decision.ALLOW);
  });

  it("a credential never seen before is denied BACKEND_UNAVAILABLE, as an answer", async () => {
    const answer = await check(secrets.get("cold-key") ?? "", "reports.export");
    expect(answer.decision).toBe(Decision.DENY);
    expect(answer.reason).toBe(Reason.BACKEND_UNAVAILABLE);
  });

  it("fail_closed spends the units already leased, then denies BACKEND_UNAVAILABLE", async () => {
    let last = Reason.OK;
    for (let i = 0; i < 5_000 && last === Reason.OK; i++) {
      const answer = await check(secrets.get("warm-key") ?? "", "closed.calls");
      last = answer.reason;
      if (answer.decision === Decision.ALLOW) closedUnitsAllowed++;
    }
    expect(last).toBe(Reason.BACKEND_UNAVAILABLE);
  });

  it("fail_open keeps allowing beyond the lease", async () => {
    for (let i = 0; i < 20; i++) {
      const answer = await check(secrets.get("warm-key") ?? "", "open.calls", 500n);
      expect(answer.decision).toBe(Decision.ALLOW);
      openUnitsAllowed += 500;
    }
  });

  it("once PostgreSQL is back and the service has stopped cleanly, every allowed unit is settled as used", async () => {
    proxy.restore();
    expect(await service.stop()).toBe(0);
    const counters = await database.db
      .selectFrom("quota_counters")
      .select(["feature", "used", "leased"])
      .where("license_id", "=", "acme-prod")
      .orderBy("feature")
      .execute();
    expect(counters).toEqual([
      { feature: "closed.calls", used: closedUnitsAllowed, leased: 0 },
      { feature: "open.calls", used: openUnitsAllowed, leased: 0 },
    ]);
  });
});
