/**
 * Apply and export against a real database (PGlite always; PostgreSQL when DATABASE_URL is set).
 * Each backend gets a fresh database per test, so tests never see each other's rows.
 */
import { readFileSync } from "node:fs";
import { sql, type Kysely } from "kysely";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { hashApiKey } from "../../src/licensing/api-keys.js";
import { applyRules, type ApplyOptions } from "../../src/rules/apply.js";
import { RulesError } from "../../src/rules/errors.js";
import { exportRules, formatRules } from "../../src/rules/export.js";
import { parseRules } from "../../src/rules/parse.js";
import type { Database } from "../../src/store/schema.js";
import { createTestStore, testBackends, type TestStore } from "../support/database.js";

const demo = readFileSync("examples/demo.yaml", "utf8");
const full = readFileSync("examples/full.yaml", "utf8");
const T0 = new Date("2026-03-01T12:00:00.000Z");
const T1 = new Date("2026-03-02T12:00:00.000Z");

function opts(overrides: Partial<ApplyOptions> = {}): ApplyOptions {
  return { prune: false, dryRun: false, now: T0, ...overrides };
}

/** Every row of every rules table, for "nothing changed" assertions. */
async function snapshot(db: Kysely<Database>): Promise<unknown> {
  return {
    accounts: await db.selectFrom("accounts").selectAll().orderBy("id").execute(),
    plans: await db.selectFrom("plans").selectAll().orderBy("name").execute(),
    licenses: await db.selectFrom("licenses").selectAll().orderBy("id").execute(),
    entitlements: await db.selectFrom("entitlements").selectAll().orderBy("id").execute(),
    api_keys: await db.selectFrom("api_keys").selectAll().orderBy("id").execute(),
  };
}

async function versions(db: Kysely<Database>): Promise<Record<string, number>> {
  const rows = await db.selectFrom("licenses").select(["id", "version"]).execute();
  return Object.fromEntries(rows.map((r) => [r.id, Number(r.version)]));
}

describe.each(testBackends())("rules apply and export on %s", (backend) => {
  let store: TestStore;
  let db: Kysely<Database>;

  beforeEach(async () => {
    store = await createTestStore(backend);
    db = store.db;
  });
  afterEach(() => store.drop());

  test("apply creates everything and issues one secret per new key", async () => {
    const result = await applyRules(db, parseRules(demo), opts());
    expect(result.changes.map((c) => `${c.action} ${c.kind} ${c.id}`)).toEqual([
      "create account demo",
      "create plan free",
      "create plan pro",
      "create license demo-free",
      "create license demo-pro",
      "create api_key demo-free-key",
      "create api_key demo-key",
    ]);
    expect(result.issuedKeys.map((k) => [k.id, k.licenseId])).toEqual([
      ["demo-free-key", "demo-free"],
      ["demo-key", "demo-pro"],
    ]);
    const entitlements = await db.selectFrom("entitlements").select(["plan", "feature"]).where("plan", "=", "pro").execute();
    expect(entitlements.map((e) => e.feature).sort()).toEqual(["api.calls", "api.rate", "dashboards.view", "reports.export"]);
    expect(await versions(db)).toEqual({ "demo-free": 1, "demo-pro": 1 });
  });

  test("the stored hash is sha256(secret) and the secret appears nowhere in the database", async () => {
    const { issuedKeys } = await applyRules(db, parseRules(demo), opts());
    for (const key of issuedKeys) {
      const row = await db.selectFrom("api_keys").selectAll().where("id", "=", key.id).executeTakeFirstOrThrow();
      expect(row.secret_hash).toBe(hashApiKey(key.secret));
      expect(row.prefix).toBe(key.secret.slice(0, 12));
      expect(key.prefix).toBe(row.prefix);
      expect(JSON.stringify(await snapshot(db))).not.toContain(key.secret);
      expect(JSON.stringify(await exportRules(db))).not.toContain(key.secret.slice(12));
    }
  });

  test("applying the same document twice changes nothing the second time", async () => {
    await applyRules(db, parseRules(full), opts());
    const before = await snapshot(db);
    const second = await applyRules(db, parseRules(full), opts({ now: T1, prune: true }));
    expect(second).toEqual({ changes: [], issuedKeys: [] });
    expect(await snapshot(db)).toEqual(before);
  });

  test("a dry run reports the changes, writes nothing and issues no secret", async () => {
    const result = await applyRules(db, parseRules(demo), opts({ dryRun: true }));
    expect(result.changes).toHaveLength(7);
    expect(result.issuedKeys).toEqual([]);
    expect(await snapshot(db)).toEqual({ accounts: [], plans: [], licenses: [], entitlements: [], api_keys: [] });
  });

  test("prune deletes what the document no longer declares; without prune it stays", async () => {
    await applyRules(db, parseRules(demo), opts());
    const smaller = demo.replace(/  - id: demo-free\n    account: demo\n    plan: free\n/, "").replace(/  - id: demo-free-key\n    license: demo-free\n/, "");
    expect((await applyRules(db, parseRules(smaller), opts())).changes).toEqual([]);
    const pruned = await applyRules(db, parseRules(smaller), opts({ prune: true }));
    expect(pruned.changes).toEqual([
      { kind: "api_key", id: "demo-free-key", action: "delete", fields: [] },
      { kind: "license", id: "demo-free", action: "delete", fields: [] },
    ]);
    expect(await db.selectFrom("licenses").select("id").execute()).toEqual([{ id: "demo-pro" }]);
    expect(await db.selectFrom("api_keys").select("id").execute()).toEqual([{ id: "demo-key" }]);

    const nothing = await applyRules(db, parseRules("version: 1\n"), opts({ prune: true }));
    expect(nothing.changes.map((c) => `${c.action} ${c.kind} ${c.id}`)).toEqual([
      "delete api_key demo-key",
      "delete license demo-pro",
      "delete plan free",
      "delete plan pro",
      "delete account demo",
    ]);
    expect(await snapshot(db)).toEqual({ accounts: [], plans: [], licenses: [], entitlements: [], api_keys: [] });
  });

  test("an invalid document changes nothing", async () => {
    await applyRules(db, parseRules(demo), opts());
    const before = await snapshot(db);
    const invalid = demo.replace("plan: free", "plan: gold");
    expect(() => parseRules(invalid)).toThrow('licenses[1].plan: unknown plan "gold"');
    // A document built in code is validated by applyRules too.
    const doc = parseRules(demo);
    const bad = { ...doc, licenses: doc.licenses.map((l) => ({ ...l, plan: "gold" })) };
    await expect(applyRules(db, bad, opts({ prune: true }))).rejects.toBeInstanceOf(RulesError);
    expect(await snapshot(db)).toEqual(before);
  });

  test("a licence change bumps its version once; a key change bumps its licence", async () => {
    await applyRules(db, parseRules(demo), opts());
    const suspended = demo.replace("    plan: pro\n", "    plan: pro\n    status: suspended\n    environments: [production]\n");
    const result = await applyRules(db, parseRules(suspended), opts({ now: T1 }));
    expect(result.changes).toEqual([{ kind: "license", id: "demo-pro", action: "update", fields: ["status", "environments"] }]);
    expect(await versions(db)).toEqual({ "demo-free": 1, "demo-pro": 2 });
    const row = await db.selectFrom("licenses").selectAll().where("id", "=", "demo-pro").executeTakeFirstOrThrow();
    expect(row.updated_at.toISOString()).toBe(T1.toISOString());

    const revoked = suspended.replace("  - id: demo-free-key\n    license: demo-free\n", "  - id: demo-free-key\n    license: demo-free\n    revoked: true\n");
    await applyRules(db, parseRules(revoked), opts({ now: T1 }));
    expect(await versions(db)).toEqual({ "demo-free": 2, "demo-pro": 2 });
    const key = await db.selectFrom("api_keys").selectAll().where("id", "=", "demo-free-key").executeTakeFirstOrThrow();
    expect(key.revoked_at?.toISOString()).toBe(T1.toISOString());
  });

  test("a plan's entitlement change bumps every licence on that plan, and only those", async () => {
    await applyRules(db, parseRules(demo), opts());
    const before = await db.selectFrom("entitlements").select(["id", "feature"]).where("plan", "=", "pro").execute();
    const changed = demo.replace("limit: 10000", "limit: 20000");
    const result = await applyRules(db, parseRules(changed), opts());
    expect(result.changes).toEqual([{ kind: "plan", id: "pro", action: "update", fields: ["entitlements"] }]);
    expect(await versions(db)).toEqual({ "demo-free": 1, "demo-pro": 2 });
    const after = await db.selectFrom("entitlements").select(["id", "feature", "limit"]).where("plan", "=", "pro").execute();
    // Rows are updated in place: ids are stable.
    expect(after.map((e) => e.id).sort()).toEqual(before.map((e) => e.id).sort());
    expect(Number(after.find((e) => e.feature === "api.calls")?.limit)).toBe(20000);
  });

  test("existing keys keep their hash when moved to another licence", async () => {
    await applyRules(db, parseRules(demo), opts());
    const hashBefore = await db.selectFrom("api_keys").select("secret_hash").where("id", "=", "demo-key").executeTakeFirstOrThrow();
    const moved = demo.replace("  - id: demo-key\n    license: demo-pro\n", "  - id: demo-key\n    license: demo-free\n");
    const result = await applyRules(db, parseRules(moved), opts());
    expect(result).toEqual({ changes: [{ kind: "api_key", id: "demo-key", action: "update", fields: ["license"] }], issuedKeys: [] });
    const hashAfter = await db.selectFrom("api_keys").select("secret_hash").where("id", "=", "demo-key").executeTakeFirstOrThrow();
    expect(hashAfter).toEqual(hashBefore);
    expect(await versions(db)).toEqual({ "demo-free": 2, "demo-pro": 2 });
  });

  test("export then apply is a no-op, in YAML and in JSON", async () => {
    await applyRules(db, parseRules(full), opts());
    await applyRules(db, parseRules(demo), opts());
    const before = await snapshot(db);
    for (const format of ["yaml", "json"] as const) {
      const text = formatRules(await exportRules(db), format);
      const result = await applyRules(db, parseRules(text), opts({ prune: true, now: T1 }));
      expect(result).toEqual({ changes: [], issuedKeys: [] });
    }
    expect(await snapshot(db)).toEqual(before);
  });

  test("export is deterministic, omits defaults and matches what was applied", async () => {
    await applyRules(db, parseRules(full), opts());
    const exported = await exportRules(db);
    expect(exported).toEqual(parseRules(full));
    expect(formatRules(exported, "yaml")).toBe(formatRules(await exportRules(db), "yaml"));
    const text = formatRules(exported, "yaml");
    expect(text).not.toContain("fail_closed");
    expect(text).not.toContain("status: active");
    expect(text).toContain("roles: [admin, analyst]");
  });

  test("an advisory lock serializes concurrent applies", async () => {
    // Both would create the same keys; serialized, the second sees the first's rows.
    const [a, b] = await Promise.all([applyRules(db, parseRules(demo), opts()), applyRules(db, parseRules(demo), opts())]);
    expect([a.changes.length, b.changes.length].sort()).toEqual([0, 7]);
    const count = await sql<{ n: number }>`select count(*)::int as n from api_keys`.execute(db);
    expect(count.rows[0]?.n).toBe(2);
  });
});
