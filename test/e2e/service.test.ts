/**
 * End to end: the built service, started as an operator would (`licensing serve`), configured by
 * `licensing apply`, and called with a @grpc/grpc-js client, the package's Connect client and
 * plain HTTP JSON. Runs on the embedded database, and on PostgreSQL when DATABASE_URL is set.
 */
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { createLicensingClient, Decision, Reason } from "../../src/index.js";
import {
  CheckRequestSchema,
  CheckResponseSchema,
  ReportRequestSchema,
  ReportResponseSchema,
} from "../../src/gen/licensing/v1/licensing_pb.js";
import { HealthCheckRequestSchema, HealthCheckResponseSchema, HealthCheckResponse_ServingStatus } from "../../src/gen/grpc/health/v1/health_pb.js";
import { createTestStore, testBackends, type TestStore } from "../support/database.js";
import { grpcError, RawGrpcClient } from "../support/grpc.js";
import { removeDataDir, runCli, startService, type RunningService } from "../support/service.js";

const CHECK = "/licensing.v1.LicensingService/Check";

const RULES = `
version: 1
accounts:
  - id: acme
    name: Acme Corp
  - id: globex
    name: Globex
plans:
  - name: pro
    entitlements:
      - feature: reports.export
        kind: boolean
      - feature: dashboards.view
        kind: boolean
      - feature: exports.run
        kind: quota
        limit: 10
        period: month
  - name: free
    entitlements:
      - feature: dashboards.view
        kind: boolean
licenses:
  - id: acme-prod
    account: acme
    plan: pro
    environments: [production]
  - id: globex-free
    account: globex
    plan: free
api_keys:
  - id: acme-backend
    license: acme-prod
  - id: globex-app
    license: globex-free
`;

describe.each(testBackends())("the service end to end on %s", (backend) => {
  let database: TestStore | undefined;
  let service: RunningService;
  let client: RawGrpcClient;
  let rulesFile: string;
  /** With PostgreSQL there is no admin-token file: the CLI gets the token from its environment. */
  let adminToken: string | undefined;
  const secrets = new Map<string, string>();

  function check(apiKey: string, feature: string, environment = "production") {
    return client.call(CHECK, CheckRequestSchema, CheckResponseSchema, {
      credential: { case: "apiKey", value: apiKey },
      feature,
      environment,
    });
  }

  beforeAll(async () => {
    const env: Record<string, string> = { DEMO_SEED: "off" };
    if (backend === "postgres") {
      database = await createTestStore(backend, { migrate: false });
      env.DATABASE_URL = database.databaseUrl ?? "";
      adminToken = "e2e-admin-token-0123456789";
      env.ADMIN_TOKEN = adminToken;
    }
    service = await startService({ env });
    client = new RawGrpcClient(`127.0.0.1:${service.grpcPort}`);
    rulesFile = join(service.dataDir, "rules.yaml");
    await writeFile(rulesFile, RULES);
  });

  afterAll(async () => {
    client?.close();
    await service?.stop();
    await database?.drop();
    if (service) await removeDataDir(service.dataDir);
  });

  function cliEnv(): Record<string, string> {
    const env: Record<string, string> = { DATA_DIR: service.dataDir };
    if (adminToken !== undefined) env.LICENSING_ADMIN_TOKEN = adminToken;
    return env;
  }

  function admin(args: string[], input?: string) {
    return runCli([...args, "--server", service.grpcUrl], { env: cliEnv(), ...(input === undefined ? {} : { input }) });
  }

  it("reports SERVING on grpc.health.v1 once migrated", async () => {
    const answer = await client.call(
      "/grpc.health.v1.Health/Check",
      HealthCheckRequestSchema,
      HealthCheckResponseSchema,
      { service: "licensing.v1.LicensingService" },
    );
    expect(answer.status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    const ready = await fetch(`${service.httpUrl}/readyz`);
    expect(ready.status).toBe(200);
  });

  it("answers Check on the gRPC fast lane", async () => {
    const metrics = await (await fetch(`${service.httpUrl}/metrics`)).text();
    expect(metrics).toMatch(/^licensing_grpc_fast_lane 1$/m);
  });

  it("licensing apply creates the declared objects and prints each new key's secret once", async () => {
    const result = await admin(["apply", "-f", rulesFile, "--output", "json"]);
    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
    const output = JSON.parse(result.stdout) as {
      changes: { kind: string; id: string; action: string }[];
      issued_keys: { id: string; secret: string }[];
    };
    expect(output.changes.filter((c) => c.action === "create").map((c) => `${c.kind}/${c.id}`).sort()).toEqual([
      "account/acme",
      "account/globex",
      "api_key/acme-backend",
      "api_key/globex-app",
      "license/acme-prod",
      "license/globex-free",
      "plan/free",
      "plan/pro",
    ]);
    for (const key of output.issued_keys) {
      expect(key.secret).toMatch(/^lk_live_[0-9A-Za-z]{43}$/);
      secrets.set(key.id, key.secret);
    }
    expect(secrets.size).toBe(2);
  });

  it("applying the same file twice changes nothing and issues no secret", async () => {
    const result = await admin(["apply", "-f", rulesFile]);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain("no changes");
    expect(result.stdout).not.toContain("lk_live_");
  });

  it("Check allows an entitled boolean feature, with the licence and policy version", async () => {
    const answer = await check(secrets.get("acme-backend") ?? "", "reports.export");
    expect(answer.decision).toBe(Decision.ALLOW);
    expect(answer.reason).toBe(Reason.OK);
    expect(answer.licenseId).toBe("acme-prod");
    expect(answer.plan).toBe("pro");
    expect(answer.accountId).toBe("acme");
    expect(answer.policyVersion).toBeGreaterThan(0n);
    expect(answer.decisionId).toMatch(/^[0-9a-f-]{36}$/);
    expect(answer.cacheTtl?.seconds).toBe(5n);
  });

  it("Check denies an unknown key with UNKNOWN_CREDENTIAL, as an answer and not an error", async () => {
    const answer = await check("lk_live_thisKeyWasNeverIssued000000000000000000000", "reports.export");
    expect(answer.decision).toBe(Decision.DENY);
    expect(answer.reason).toBe(Reason.UNKNOWN_CREDENTIAL);
    expect(answer.licenseId).toBe("");
  });

  it("Check denies a feature the licence's plan lacks with FEATURE_NOT_ENTITLED", async () => {
    const answer = await check(secrets.get("globex-app") ?? "", "reports.export", "");
    expect(answer.decision).toBe(Decision.DENY);
    expect(answer.reason).toBe(Reason.FEATURE_NOT_ENTITLED);
    expect(answer.licenseId).toBe("globex-free");
  });

  it("Check denies an environment the licence does not allow", async () => {
    const answer = await check(secrets.get("acme-backend") ?? "", "reports.export", "staging");
    expect(answer.reason).toBe(Reason.ENVIRONMENT_NOT_ALLOWED);
  });

  it("the package's Connect client gets the same answers over gRPC", async () => {
    const licensing = createLicensingClient(service.grpcUrl);
    const allowed = await licensing.check({
      credential: { case: "apiKey", value: secrets.get("acme-backend") ?? "" },
      feature: "dashboards.view",
      environment: "production",
    });
    expect(allowed.decision).toBe(Decision.ALLOW);
    const denied = await licensing.check({ credential: { case: "apiKey", value: "lk_live_nope" }, feature: "x" });
    expect(denied.reason).toBe(Reason.UNKNOWN_CREDENTIAL);
  });

  it("curl-style Connect JSON on the HTTP port answers Check", async () => {
    const response = await fetch(`${service.httpUrl}/licensing.v1.LicensingService/Check`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ apiKey: secrets.get("acme-backend"), feature: "reports.export", environment: "production" }),
    });
    expect(response.status).toBe(200);
    const body = (await response.json()) as Record<string, unknown>;
    expect(body.decision).toBe("DECISION_ALLOW");
    expect(body.reason).toBe("REASON_OK");
    expect(body.licenseId).toBe("acme-prod");
  });

  it("a quota Check retried with its operation_id, over gRPC and then HTTP, gets one answer and consumes once", async () => {
    const key = secrets.get("acme-backend") ?? "";
    const ask = (operationId: string) =>
      client.call(CHECK, CheckRequestSchema, CheckResponseSchema, {
        credential: { case: "apiKey", value: key },
        feature: "exports.run",
        environment: "production",
        operationId,
      });
    const first = await ask("export-1");
    expect(first).toMatchObject({ decision: Decision.ALLOW, limit: 10n, remaining: 9n, plan: "pro", accountId: "acme" });
    expect(first.resetsAt?.seconds).toBeGreaterThan(0n);
    expect(first.cacheTtl).toMatchObject({ seconds: 0n, nanos: 0 });
    const retried = await ask("export-1");
    expect(retried).toEqual(first);
    const overHttp = await fetch(`${service.httpUrl}/licensing.v1.LicensingService/Check`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ apiKey: key, feature: "exports.run", environment: "production", operationId: "export-1" }),
    });
    expect(((await overHttp.json()) as { decisionId?: string }).decisionId).toBe(first.decisionId);
    const next = await ask("export-2");
    expect(next.remaining).toBe(8n);
    expect(next.decisionId).not.toBe(first.decisionId);
  });

  it("bad input gets INVALID_ARGUMENT naming the field, and the service keeps serving", async () => {
    const garbage = await grpcError(client.callRaw(CHECK, Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f])));
    expect(garbage.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(garbage.details).toContain("licensing.v1.CheckRequest");

    const noFeature = await grpcError(check(secrets.get("acme-backend") ?? "", ""));
    expect(noFeature.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(noFeature.details).toMatch(/^feature: /);

    const longFeature = await grpcError(check(secrets.get("acme-backend") ?? "", "f".repeat(129)));
    expect(longFeature.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(longFeature.details).toContain("feature");

    const noCredential = await grpcError(client.call(CHECK, CheckRequestSchema, CheckResponseSchema, { feature: "reports.export" }));
    expect(noCredential.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(noCredential.details).toMatch(/^credential: /);

    const negative = await grpcError(
      client.call(CHECK, CheckRequestSchema, CheckResponseSchema, {
        credential: { case: "apiKey", value: "lk_live_x" },
        feature: "reports.export",
        quantity: -1n,
      }),
    );
    expect(negative.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(negative.details).toMatch(/^quantity: /);

    const badJson = await fetch(`${service.httpUrl}/licensing.v1.LicensingService/Check`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{not json",
    });
    expect(badJson.status).toBe(400);
    expect(((await badJson.json()) as { code: string }).code).toBe("invalid_argument");

    const stillServing = await check(secrets.get("acme-backend") ?? "", "reports.export");
    expect(stillServing.decision).toBe(Decision.ALLOW);
  });

  it("Report records usage once: a retried batch counts as duplicates, a bad event is rejected by index", async () => {
    const report = () =>
      client.call("/licensing.v1.LicensingService/Report", ReportRequestSchema, ReportResponseSchema, {
        events: [
          { id: "evt-1", credential: { case: "apiKey", value: secrets.get("acme-backend") ?? "" }, feature: "reports.export", quantity: 3n },
          { id: "", credential: { case: "apiKey", value: secrets.get("acme-backend") ?? "" }, feature: "reports.export", quantity: 1n },
        ],
      });
    const first = await report();
    expect(first.accepted).toBe(1);
    expect(first.rejected).toEqual([expect.objectContaining({ index: 1, reason: expect.stringMatching(/^events\[1\]\.id: /) })]);
    const retried = await report();
    expect(retried.accepted).toBe(0);
    expect(retried.duplicates).toBe(1);
  });

  it("an invalid rules document is rejected whole, naming each path, and changes nothing", async () => {
    const before = await admin(["export"]);
    const invalid = RULES.replace("plan: free\n", 'plan: gold\n').replace("id: globex-app", "id: Not A Slug");
    const result = await admin(["apply", "-f", "-"], invalid);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("INVALID_ARGUMENT");
    expect(result.stderr).toContain('licenses[1].plan: unknown plan "gold"');
    expect(result.stderr).toContain("api_keys[1].id");
    const after = await admin(["export"]);
    expect(after.stdout).toBe(before.stdout);
  });

  it("export round-trips: applying the exported document changes nothing", async () => {
    const exported = await admin(["export", "--format", "json"]);
    expect(exported.code).toBe(0);
    expect(exported.stdout).not.toContain("lk_live_");
    const reapplied = await admin(["apply", "-f", "-", "--output", "json"], exported.stdout);
    expect(reapplied.code).toBe(0);
    expect(JSON.parse(reapplied.stdout)).toMatchObject({ changes: [], issued_keys: [] });
  });

  it("a key revoked through apply is denied on the next Check", async () => {
    const revoked = RULES.replace("license: globex-free", "license: globex-free\n    revoked: true");
    const result = await admin(["apply", "-f", "-"], revoked);
    expect(result.code).toBe(0);
    const answer = await check(secrets.get("globex-app") ?? "", "dashboards.view", "");
    expect(answer.decision).toBe(Decision.DENY);
    expect(answer.reason).toBe(Reason.CREDENTIAL_REVOKED);
  });

  it("admin calls without the admin token are UNAUTHENTICATED", async () => {
    const result = await runCli(["export", "--server", service.grpcUrl, "--token", "not-the-admin-token"], {
      env: { DATA_DIR: "/nonexistent" },
    });
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("UNAUTHENTICATED");
  });

  it("SIGTERM drains and exits 0", async () => {
    const code = await service.stop("SIGTERM");
    expect(code).toBe(0);
    expect(service.stdout.some((line) => line.includes('"msg":"stopped"'))).toBe(true);
  });

  it("every decision was logged, and licensing decisions verify finds the chain intact", async () => {
    const env: Record<string, string> = { DATA_DIR: service.dataDir };
    if (database?.databaseUrl !== undefined) env.DATABASE_URL = database.databaseUrl;
    const result = await runCli(["decisions", "verify", "--output", "json"], { env });
    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
    const report = JSON.parse(result.stdout) as { replicas: { rows: number; firstBadSeq?: number }[] };
    expect(report.replicas).toHaveLength(1);
    expect(report.replicas[0]?.rows).toBeGreaterThan(5);
    expect(report.replicas[0]?.firstBadSeq).toBeUndefined();
  });
});

describe("first start on an empty embedded database", () => {
  let service: RunningService | undefined;

  afterAll(async () => {
    await service?.stop();
    if (service) await removeDataDir(service.dataDir);
  });

  it("seeds the demo and prints a grpcurl and a curl line whose key works", async () => {
    service = await startService();
    // "serving" arrives on stdout; the banner on stderr, a separate pipe, may land a moment later.
    const started = service;
    await vi.waitFor(() => expect(started.stderr()).toContain("curl -s"), { timeout: 5_000 });
    const banner = service.stderr();
    const grpcurl = banner.split("\n").find((line) => line.includes("grpcurl -plaintext"));
    const curl = banner.split("\n").find((line) => line.includes("curl -s"));
    expect(grpcurl).toContain(`127.0.0.1:${service.grpcPort} licensing.v1.LicensingService/Check`);
    expect(curl).toContain(`http://127.0.0.1:${service.httpPort}/licensing.v1.LicensingService/Check`);
    const key = /lk_live_[0-9A-Za-z]{43}/.exec(grpcurl ?? "")?.[0];
    expect(key).toBeDefined();

    const client = new RawGrpcClient(`127.0.0.1:${service.grpcPort}`);
    const answer = fromBinary(
      CheckResponseSchema,
      await client.callRaw(
        CHECK,
        Buffer.from(toBinary(CheckRequestSchema, create(CheckRequestSchema, { credential: { case: "apiKey", value: key ?? "" }, feature: "reports.export" }))),
      ),
    );
    client.close();
    expect(answer.decision).toBe(Decision.ALLOW);
    // The secret is shown to the person once, on stderr, and never written to the log stream.
    expect(service.stdout.join("\n")).not.toContain(key);
  });

  it("a second start of the same data directory does not seed again", async () => {
    const dataDir = service?.dataDir ?? "";
    expect(await service?.stop()).toBe(0);
    service = await startService({ dataDir });
    expect(service.stderr()).not.toContain("grpcurl");
  });
});

describe("configuration errors", () => {
  it("a bad variable exits 1 naming it", async () => {
    const result = await runCli(["serve"], { env: { GRPC_PORT: "not-a-port" } });
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("GRPC_PORT");
  });

  it("--help describes every command, and an unknown command exits 2", async () => {
    const help = await runCli(["--help"]);
    expect(help.code).toBe(0);
    for (const command of ["serve", "migrate", "apply", "export"]) expect(help.stdout).toContain(command);
    const apply = await runCli(["apply", "--help"]);
    expect(apply.stdout).toContain("--dry-run");
    const unknown = await runCli(["frobnicate"]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain("frobnicate");
  });
});
