/**
 * What the admin RPCs do, end to end through gRPC and Check: suspend/reinstate/renew reach the
 * next Check (the licence version grows, caches drop), API keys work from creation and stop on
 * revocation, decisions page without repeats, the status shows live quota usage, and the rules
 * file's Apply reverts imperative changes it does not contain (the documented contract).
 */
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Decision, Reason } from "../../src/gen/licensing/v1/licensing_pb.js";
import { RULES_WRITE_LOCK_KEY } from "../../src/admin/writes.js";
import { createTestStore, testBackends, type TestStore } from "../support/database.js";
import { OPERATOR_TOKEN, startHarness, type Harness } from "./harness.js";

const RULES = `
version: 1
accounts:
  - { id: acme, name: Acme }
plans:
  - name: pro
    entitlements:
      - { feature: reports.export, kind: boolean }
      - { feature: api.calls, kind: quota, limit: 1000, period: month }
      - { feature: workers, kind: seats, limit: 3 }
licenses:
  - { id: acme-prod, account: acme, plan: pro }
api_keys:
  - { id: acme-key, license: acme-prod }
`;

async function codeOf(promise: Promise<unknown>): Promise<Code | "OK"> {
  try {
    await promise;
    return "OK";
  } catch (error) {
    if (error instanceof ConnectError) return error.code;
    throw error;
  }
}

describe.each(testBackends())("admin operations on %s", (backend) => {
  let store: TestStore;
  let harness: Harness;
  let key: string;
  const admin = () => harness.admin(OPERATOR_TOKEN);
  const check = (apiKey: string, feature = "reports.export", quantity?: bigint) =>
    harness.licensing.check({ credential: { case: "apiKey", value: apiKey }, feature, ...(quantity === undefined ? {} : { quantity }) });

  beforeAll(async () => {
    store = await createTestStore(backend);
    harness = await startHarness(store);
    key = (await harness.apply(RULES)).get("acme-key")?.secret ?? "";
  }, 60_000);

  afterAll(async () => {
    await harness?.close();
    await store?.drop();
  });

  it("a suspended licence is denied LICENSE_SUSPENDED by the next Check, and allowed again once reinstated", async () => {
    expect((await check(key)).decision).toBe(Decision.ALLOW);
    const suspended = await admin().suspendLicense({ licenseId: "acme-prod" });
    expect(suspended.license?.status).toBe("suspended");
    expect(suspended.license?.version).toBe(2n);
    const denied = await check(key);
    expect([denied.decision, denied.reason, denied.policyVersion]).toEqual([Decision.DENY, Reason.LICENSE_SUSPENDED, 2n]);
    // Idempotent: a second suspension changes nothing, the version stays.
    expect((await admin().suspendLicense({ licenseId: "acme-prod" })).license?.version).toBe(2n);
    const reinstated = await admin().reinstateLicense({ licenseId: "acme-prod" });
    expect([reinstated.license?.status, reinstated.license?.version]).toEqual(["active", 3n]);
    expect((await check(key)).decision).toBe(Decision.ALLOW);
  });

  it("RenewLicense moves valid_until: a past date expires the licence, a future one restores it", async () => {
    const past = new Date(Date.now() - 60_000);
    await admin().renewLicense({ licenseId: "acme-prod", validUntil: timestampFromDate(past) });
    expect((await check(key)).reason).toBe(Reason.LICENSE_EXPIRED);
    const future = new Date(Date.UTC(2099, 0, 1));
    const renewed = await admin().renewLicense({ licenseId: "acme-prod", validUntil: timestampFromDate(future) });
    expect(renewed.license?.validUntil?.seconds).toBe(BigInt(future.getTime() / 1000));
    expect((await check(key)).decision).toBe(Decision.ALLOW);
    expect(await codeOf(admin().renewLicense({ licenseId: "acme-prod" }))).toBe(Code.InvalidArgument);
    expect(await codeOf(admin().renewLicense({ licenseId: "nope", validUntil: timestampFromDate(future) }))).toBe(Code.NotFound);
  });

  it("CreateApiKey returns a secret once that Check accepts; RevokeApiKey makes Check answer CREDENTIAL_REVOKED", async () => {
    const created = await admin().createApiKey({ licenseId: "acme-prod", id: "ci-key", scopes: ["reports"] });
    expect(created.secret).toMatch(/^lk_live_[0-9A-Za-z]{43}$/);
    expect(created.key?.prefix).toBe(created.secret.slice(0, 12));
    expect((await check(created.secret)).decision).toBe(Decision.ALLOW);
    const listed = await admin().listApiKeys({ licenseId: "acme-prod" });
    expect(listed.keys.map((k) => k.id)).toEqual(["acme-key", "ci-key"]);
    expect(JSON.stringify(listed.keys, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v))).not.toContain(created.secret);
    expect(await codeOf(admin().createApiKey({ licenseId: "acme-prod", id: "ci-key" }))).toBe(Code.AlreadyExists);
    expect(await codeOf(admin().createApiKey({ licenseId: "acme-prod", id: "Not A Slug" }))).toBe(Code.InvalidArgument);

    const revoked = await admin().revokeApiKey({ keyId: "ci-key" });
    expect(revoked.key?.revokedAt).toBeDefined();
    const denied = await check(created.secret);
    expect([denied.decision, denied.reason]).toEqual([Decision.DENY, Reason.CREDENTIAL_REVOKED]);
    // A second revocation keeps the first time.
    expect((await admin().revokeApiKey({ keyId: "ci-key" })).key?.revokedAt).toEqual(revoked.key?.revokedAt);
  });

  it("GetLicense shows the effective entitlements; GetLicenseStatus shows quota used and leased, seats held and leases", async () => {
    const { entitlements } = await admin().getLicense({ licenseId: "acme-prod" });
    expect(entitlements.map((e) => [e.feature, e.kind, e.limit])).toEqual([
      ["api.calls", "quota", 1000n],
      ["reports.export", "boolean", undefined],
      ["workers", "seats", 3n],
    ]);
    for (let i = 0; i < 5; i++) expect((await check(key, "api.calls", 2n)).decision).toBe(Decision.ALLOW);
    await harness.licensing.check({ credential: { case: "apiKey", value: key }, feature: "workers", instanceId: "host-1" });
    await harness.engine.flush();
    const status = await admin().getLicenseStatus({ licenseId: "acme-prod" });
    const quota = status.quotas[0];
    expect(status.quotas).toHaveLength(1);
    expect([quota?.feature, quota?.limit, quota?.period, quota?.used]).toEqual(["api.calls", 1000n, "month", 10n]);
    // What is leased and not settled plus what is used never exceeds the limit.
    expect((quota?.used ?? 0n) + (quota?.leased ?? 0n) + (quota?.unallocated ?? 0n)).toBe(1000n);
    expect(quota?.resetsAt).toBeDefined();
    expect(status.seats.map((s) => [s.feature, s.limit, s.held])).toEqual([["workers", 3n, 1n]]);
    expect(status.leases.every((l) => l.replicaId === "admin-test" && l.feature === "api.calls")).toBe(true);
    expect(status.leases.reduce((sum, l) => sum + l.amount, 0n)).toBe(quota?.leased);
  });

  it("ListDecisions filters by licence, reason, decision and time, and pages without repeats or gaps", async () => {
    for (let i = 0; i < 7; i++) await check(`lk_live_${"0".repeat(43)}`);
    await harness.decisionLog.flush();
    await harness.decisionLog.stop(); // writes the current second's aggregated allows too
    const denies = await admin().listDecisions({ reason: "UNKNOWN_CREDENTIAL" });
    expect(denies.decisions).toHaveLength(7);
    expect(denies.decisions.every((d) => d.decision === "deny" && d.licenseId === "")).toBe(true);

    const all: string[] = [];
    let pageToken = "";
    let pages = 0;
    do {
      const page = await admin().listDecisions({ decision: "deny", pageSize: 3, pageToken });
      all.push(...page.decisions.map((d) => `${d.replicaId}/${d.seq}`));
      pageToken = page.nextPageToken;
      pages++;
    } while (pageToken !== "" && pages < 50);
    const expected = (await admin().listDecisions({ decision: "deny", pageSize: 1000 })).decisions.map((d) => `${d.replicaId}/${d.seq}`);
    expect(all).toEqual(expected);
    expect(new Set(all).size).toBe(all.length);
    expect(pages).toBe(Math.ceil(expected.length / 3));

    const mine = await admin().listDecisions({ licenseId: "acme-prod", decision: "deny" });
    // A revoked key resolves to no licence, so its deny is not the licence's.
    expect(new Set(mine.decisions.map((d) => d.reason))).toEqual(new Set(["LICENSE_SUSPENDED", "LICENSE_EXPIRED"]));
    const future = await admin().listDecisions({ since: timestampFromDate(new Date(Date.now() + 3_600_000)) });
    expect(future.decisions).toEqual([]);
    expect(await codeOf(admin().listDecisions({ reason: "NOT_A_REASON" }))).toBe(Code.InvalidArgument);
    expect(await codeOf(admin().listDecisions({ decision: "deny", pageSize: 3, pageToken: "garbage!" }))).toBe(Code.InvalidArgument);
    // A token is bound to its filters.
    const first = await admin().listDecisions({ decision: "deny", pageSize: 1 });
    expect(await codeOf(admin().listDecisions({ decision: "allow", pageSize: 1, pageToken: first.nextPageToken }))).toBe(Code.InvalidArgument);
  });

  it("imperative changes show in Export, and re-applying a document without them reverts them", async () => {
    await admin().suspendLicense({ licenseId: "acme-prod" });
    const exported = (await admin().export({})).document;
    expect(exported).toMatch(/status: suspended/);
    expect(exported).toMatch(/id: ci-key/);
    const applied = await admin().apply({ document: RULES, dryRun: false, prune: true });
    const changes = applied.changes.map((c) => `${c.kind} ${c.id} ${c.action}`);
    expect(changes).toContain("license acme-prod 2"); // UPDATE: status back to active
    expect(changes).toContain("api_key ci-key 3"); // DELETE: pruned
    expect((await admin().getLicense({ licenseId: "acme-prod" })).license?.status).toBe("active");
  });

  // Only PostgreSQL has concurrent sessions to contend for the lock; PGlite is one connection.
  (backend === "postgres" ? it : () => undefined)("an admin write waits for a rules apply in progress (shared advisory lock)", async () => {
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let locked!: () => void;
    const isLocked = new Promise<void>((resolve) => (locked = resolve));
    const holder = store.db.transaction().execute(async (trx) => {
      await sql`select pg_advisory_xact_lock(${RULES_WRITE_LOCK_KEY})`.execute(trx);
      locked();
      await held;
    });
    await isLocked;
    let done = false;
    const write = admin().suspendLicense({ licenseId: "acme-prod" }).then(() => (done = true));
    // The write's transaction is blocked on the lock: give it a bounded chance to (wrongly) finish.
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(done).toBe(false);
    release();
    await holder;
    await write;
    expect(done).toBe(true);
    await admin().reinstateLicense({ licenseId: "acme-prod" });
  });
});
