import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { applyRules } from "../../src/rules/apply.js";
import { RulesError } from "../../src/rules/errors.js";
import { exportRules, formatRules } from "../../src/rules/export.js";
import { parseRules } from "../../src/rules/parse.js";
import { createTestStore, testBackends, type TestStore } from "../support/database.js";

const BASE = `
version: 1
accounts: [{ id: acme, name: Acme }]
plans: [{ name: pro, entitlements: [{ feature: reports.export, kind: boolean }] }]
licenses: [{ id: acme-prod, account: acme, plan: pro }]
`;

function issuesOf(text: string): string[] {
  try {
    parseRules(text);
  } catch (error) {
    if (error instanceof RulesError) return error.lines();
    throw error;
  }
  return [];
}

describe("routes in the rules file", () => {
  it("reads a route with its defaults: any method, cost 1", () => {
    const doc = parseRules(`${BASE}routes: [{ id: api, path_prefix: /v1/, feature: api.calls }]`);
    expect(doc.routes).toEqual([{ id: "api", path_prefix: "/v1/", feature: "api.calls", cost: 1 }]);
  });

  it("names every bad field by its path", () => {
    const lines = issuesOf(`${BASE}routes:
  - { id: a, method: post, path_prefix: v1, feature: "", cost: -1, extra: 1 }
  - { id: b, method: GET, path_prefix: /x, feature: f }
  - { id: c, method: GET, path_prefix: /x, feature: g }`);
    expect(lines).toEqual(
      expect.arrayContaining([
        "routes[0].extra: unknown field",
        expect.stringMatching(/^routes\[0\]\.method: must be an HTTP method in upper case/),
        expect.stringMatching(/^routes\[0\]\.path_prefix: must start with "\/"/),
        expect.stringMatching(/^routes\[0\]\.feature: /),
        expect.stringMatching(/^routes\[0\]\.cost: /),
        expect.stringMatching(/^routes\[2\]\.path_prefix: duplicate path_prefix "GET \/x"/),
      ]),
    );
  });
});

describe.each(testBackends())("routes applied on %s", (backend) => {
  let store: TestStore;
  beforeAll(async () => {
    store = await createTestStore(backend);
  });
  afterAll(() => store?.drop());

  const now = new Date("2026-11-21T12:00:00Z");

  it("apply creates routes, a second apply changes nothing, and export round-trips", async () => {
    const doc = parseRules(`${BASE}routes:
  - { id: export, method: POST, path_prefix: /v1/export, feature: reports.export, cost: 5 }
  - { id: api, path_prefix: /v1/, feature: api.calls }`);
    const first = await applyRules(store.db, doc, { prune: false, dryRun: false, now });
    expect(first.changes.filter((c) => c.kind === "route").map((c) => `${c.action} ${c.id}`)).toEqual(["create api", "create export"]);
    expect((await applyRules(store.db, doc, { prune: false, dryRun: false, now })).changes).toEqual([]);
    const exported = formatRules(await exportRules(store.db), "yaml");
    expect((await applyRules(store.db, parseRules(exported), { prune: true, dryRun: false, now })).changes).toEqual([]);
    const rows = await store.db.selectFrom("routes").select(["id", "method", "cost"]).orderBy("id").execute();
    expect(rows).toEqual([
      { id: "api", method: "*", cost: 1 },
      { id: "export", method: "POST", cost: 5 },
    ]);
  });

  it("a route renamed with the same method and prefix applies in one transaction", async () => {
    const doc = parseRules(`${BASE}routes:
  - { id: export-v2, method: POST, path_prefix: /v1/export, feature: reports.export, cost: 2 }
  - { id: api, path_prefix: /v1/, feature: api.calls }`);
    const result = await applyRules(store.db, doc, { prune: true, dryRun: false, now });
    expect(result.changes.filter((c) => c.kind === "route").map((c) => `${c.action} ${c.id}`)).toEqual([
      "create export-v2",
      "delete export",
    ]);
  });
});
