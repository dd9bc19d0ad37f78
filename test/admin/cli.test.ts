/**
 * The admin CLI commands against a running service (the in-process harness, real gRPC): each
 * round trip a person or a script makes, with table output for people, --output json for
 * scripts, exit code 2 for bad usage, and `licensing check` explaining decisions.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createAdminClient, type AdminClient } from "../../src/cli/admin-client.js";
import { accountsCommand, plansCommand } from "../../src/cli/commands/admin-accounts.js";
import { adminTokensCommand, apiKeysCommand } from "../../src/cli/commands/admin-api-keys.js";
import { checkCommand } from "../../src/cli/commands/admin-check.js";
import type { CommandIo } from "../../src/cli/commands/admin-common.js";
import { decisionsListCommand } from "../../src/cli/commands/admin-decisions.js";
import { licensesCommand } from "../../src/cli/commands/admin-licenses.js";
import { statusCommand } from "../../src/cli/commands/admin-status.js";
import { createLicensingClient, type LicensingClient } from "../../src/client.js";
import { createTestStore, testBackends, type TestStore } from "../support/database.js";
import { OPERATOR_TOKEN, startHarness, type Harness } from "./harness.js";

const RULES = `
version: 1
accounts:
  - { id: acme, name: Acme Corp }
plans:
  - name: pro
    entitlements:
      - { feature: reports.export, kind: boolean }
      - { feature: api.calls, kind: quota, limit: 5, period: month }
licenses:
  - { id: acme-prod, account: acme, plan: pro }
`;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function io(): { io: CommandIo; out: () => Run } {
  let stdout = "";
  let stderr = "";
  return {
    io: { stdout: (t) => (stdout += t), stderr: (t) => (stderr += t), now: () => Date.now() },
    out: () => ({ code: -1, stdout, stderr }),
  };
}

type Command = (args: string[], client: AdminClient, io: CommandIo) => Promise<number>;

describe.each(testBackends())("admin CLI round trips on %s", (backend) => {
  let store: TestStore;
  let harness: Harness;
  let admin: AdminClient;
  let licensing: LicensingClient;

  async function run(command: Command, args: string[], client: AdminClient = admin): Promise<Run> {
    const sink = io();
    const code = await command(args, client, sink.io);
    return { ...sink.out(), code };
  }

  async function check(args: string[], withAdmin: AdminClient | undefined = admin): Promise<Run> {
    const sink = io();
    const code = await checkCommand(args, licensing, withAdmin, sink.io);
    return { ...sink.out(), code };
  }

  beforeAll(async () => {
    store = await createTestStore(backend);
    harness = await startHarness(store);
    await harness.apply(RULES);
    admin = createAdminClient(harness.grpcUrl, OPERATOR_TOKEN);
    licensing = createLicensingClient(harness.grpcUrl, { timeoutMs: 5000 });
  }, 60_000);

  afterAll(async () => {
    await harness?.close();
    await store?.drop();
  });

  it("api-keys create prints the secret once; list shows the prefix only; check allows with it; revoke makes check deny", async () => {
    const created = await run(apiKeysCommand, ["create", "--license", "acme-prod", "--id", "cli-key", "--scope", "reports"]);
    expect(created.code).toBe(0);
    const secret = created.stdout.trim();
    expect(secret).toMatch(/^lk_live_[0-9A-Za-z]{43}$/);
    expect(created.stderr).toContain("shown once");

    const listed = await run(apiKeysCommand, ["list", "--license", "acme-prod"]);
    expect(listed.stdout).toMatch(/^ID\s+LICENCE\s+PREFIX/);
    expect(listed.stdout).toContain(secret.slice(0, 12));
    expect(listed.stdout).not.toContain(secret);
    const json = JSON.parse((await run(apiKeysCommand, ["list", "--output", "json"])).stdout) as { id: string; scopes: string[]; revoked_at: string | null }[];
    expect(json).toEqual([expect.objectContaining({ id: "cli-key", scopes: ["reports"], revoked_at: null })]);

    const allowed = await check(["--key", secret, "--feature", "reports.export"]);
    expect(allowed.code).toBe(0);
    expect(allowed.stdout).toMatch(/decision\s+ALLOW \(OK\)/);
    expect(allowed.stdout).toMatch(/decided by\s+boolean on/);

    expect((await run(apiKeysCommand, ["revoke", "cli-key"])).code).toBe(0);
    const denied = await check(["--key", secret, "--feature", "reports.export"]);
    expect(denied.code).toBe(1);
    expect(denied.stdout).toMatch(/DENY \(CREDENTIAL_REVOKED\)/);
    expect(denied.stdout).toContain("revoked");
  });

  it("licenses suspend makes check deny LICENSE_SUSPENDED; reinstate allows again; get and list show it", async () => {
    const key = (await run(apiKeysCommand, ["create", "--license", "acme-prod", "--output", "json"])).stdout;
    const secret = (JSON.parse(key) as { secret: string }).secret;
    const suspended = await run(licensesCommand, ["suspend", "acme-prod"]);
    expect(suspended.stdout).toMatch(/^acme-prod: suspended \(version \d+\)/);
    const denied = await check(["--key", secret, "--feature", "reports.export", "--output", "json"]);
    expect(denied.code).toBe(1);
    expect(JSON.parse(denied.stdout)).toMatchObject({ decision: "deny", reason: "LICENSE_SUSPENDED", license_id: "acme-prod" });
    const listed = JSON.parse((await run(licensesCommand, ["list", "--output", "json"])).stdout) as { id: string; status: string }[];
    expect(listed).toEqual([expect.objectContaining({ id: "acme-prod", status: "suspended" })]);
    expect((await run(licensesCommand, ["reinstate", "acme-prod"])).stdout).toMatch(/^acme-prod: active/);
    expect((await check(["--key", secret, "--feature", "reports.export"])).code).toBe(0);

    const got = await run(licensesCommand, ["get", "acme-prod"]);
    expect(got.stdout).toMatch(/status\s+active/);
    expect(got.stdout).toMatch(/api\.calls\s+quota\s+5 \/ month/);
    const renewed = await run(licensesCommand, ["renew", "acme-prod", "--until", "2099-01-01"]);
    expect(renewed.stdout).toContain("valid until 2099-01-01T00:00:00.000Z");
  });

  it("check explains a quota: limit, remaining, reset, and on exhaustion which rule denied and when to retry", async () => {
    const secret = (JSON.parse((await run(apiKeysCommand, ["create", "--license", "acme-prod", "--output", "json"])).stdout) as { secret: string }).secret;
    const first = JSON.parse((await check(["--key", secret, "--feature", "api.calls", "--quantity", "4", "--output", "json"])).stdout) as Record<string, unknown>;
    expect(first).toMatchObject({ decision: "allow", reason: "OK", limit: 5, remaining: 1, decided_by: "quota 5 / month" });
    expect(typeof first.resets_at).toBe("string");
    const denied = await check(["--key", secret, "--feature", "api.calls", "--quantity", "2"]);
    expect(denied.code).toBe(1);
    expect(denied.stdout).toMatch(/DENY \(QUOTA_EXHAUSTED\)/);
    expect(denied.stdout).toMatch(/decided by\s+quota 5 \/ month/);
    expect(denied.stdout).toMatch(/remaining\s+1/);
    expect(denied.stdout).toMatch(/resets\s+\d{4}-/);
    expect(denied.stdout).toMatch(/retry after\s+\d+\.\d{3} s/);
    expect(denied.stdout).toContain("rules for this feature:");
    // Without admin rights the decision is still explained, minus the rules.
    const plain = await check(["--key", secret, "--feature", "api.calls", "--dry-run", "--quantity", "0"], createAdminClient(harness.grpcUrl, "wrong"));
    expect(plain.code).toBe(0);
    expect(plain.stderr).toContain("rules are not shown");
  });

  it("status shows quota used and leased and the leases; decisions list shows denies with filters", async () => {
    await harness.engine.flush();
    const status = await run(statusCommand, ["--license", "acme-prod"]);
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(/QUOTA\s+LIMIT\s+PERIOD\s+USED\s+LEASED\s+FREE/);
    expect(status.stdout).toMatch(/api\.calls\s+5\s+month\s+4\s+\d+/);
    const json = JSON.parse((await run(statusCommand, ["--license", "acme-prod", "-o", "json"])).stdout) as { quotas: { used: number }[] };
    expect(json.quotas[0]?.used).toBe(4);

    await harness.decisionLog.flush();
    const decisions = await run(decisionsListCommand, ["--license", "acme-prod", "--decision", "deny"]);
    expect(decisions.stdout).toMatch(/^TIME\s+DECISION\s+REASON/);
    expect(decisions.stdout).toContain("QUOTA_EXHAUSTED");
    expect(decisions.stdout).toContain("LICENSE_SUSPENDED");
    const quota = JSON.parse((await run(decisionsListCommand, ["--reason", "QUOTA_EXHAUSTED", "--since", "1h", "-o", "json"])).stdout) as { reason: string }[];
    expect(quota.length).toBe(1);
    expect((await run(decisionsListCommand, ["--since", "2099-01-01"])).stdout).toBe("no decisions match\n");
  });

  it("accounts, plans and admin-tokens list and get; an account token's CLI sees only its account", async () => {
    expect((await run(accountsCommand, ["list"])).stdout).toMatch(/acme\s+Acme Corp/);
    expect(JSON.parse((await run(accountsCommand, ["get", "acme", "-o", "json"])).stdout)).toMatchObject({ id: "acme", license_ids: ["acme-prod"] });
    expect((await run(plansCommand, ["get", "pro"])).stdout).toMatch(/plan pro\n/);
    const token = (await run(adminTokensCommand, ["create", "--account", "acme", "--id", "acme-cli"])).stdout.trim();
    expect(token).toMatch(/^lk_adm_/);
    expect((await run(adminTokensCommand, ["list"])).stdout).toMatch(/acme-cli\s+acme\s+lk_adm_/);
    const scoped = createAdminClient(harness.grpcUrl, token);
    expect(JSON.parse((await run(licensesCommand, ["list", "-o", "json"], scoped)).stdout)).toHaveLength(1);
    await expect(run(adminTokensCommand, ["list"], scoped)).rejects.toMatchObject({ code: 7 }); // PERMISSION_DENIED → main.ts exit 1
  });

  it.each<[string, Command, string[]]>([
    ["no subcommand", licensesCommand, []],
    ["an unknown subcommand", apiKeysCommand, ["destroy"]],
    ["a missing required option", apiKeysCommand, ["create"]],
    ["an unknown option", licensesCommand, ["list", "--bogus"]],
    ["a bad --output", accountsCommand, ["list", "--output", "xml"]],
    ["a bad --until", licensesCommand, ["renew", "acme-prod", "--until", "next tuesday"]],
    ["a bad --decision", decisionsListCommand, ["--decision", "maybe"]],
    ["status without --license", statusCommand, []],
  ])("%s is a usage error: exit 2 with a pointer to --help", async (_name, command, args) => {
    const result = await run(command, args);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/^licensing: .+\nRun "licensing [a-z-]+ --help" for usage\.\n$/);
  });

  it("check without a credential or with two is a usage error", async () => {
    expect((await check(["--feature", "x"])).code).toBe(2);
    expect((await check(["--key", "a", "--jwt", "b", "--feature", "x"])).code).toBe(2);
  });
});
