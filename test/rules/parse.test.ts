import { readdirSync, readFileSync } from "node:fs";
import { describe, expect, test } from "vitest";
import { RulesError } from "../../src/rules/errors.js";
import { parseRules } from "../../src/rules/parse.js";

function issuesOf(text: string): RulesError["issues"] {
  try {
    parseRules(text);
  } catch (error) {
    if (error instanceof RulesError) return error.issues;
    throw error;
  }
  throw new Error("expected parseRules to throw");
}

describe("parseRules", () => {
  test.each(readdirSync("examples").filter((f) => f.endsWith(".yaml")))("examples/%s parses", (file) => {
    expect(() => parseRules(readFileSync(`examples/${file}`, "utf8"))).not.toThrow();
  });

  test("the demo declares what the quick start relies on", () => {
    const doc = parseRules(readFileSync("examples/demo.yaml", "utf8"));
    expect(doc.accounts.map((a) => a.id)).toEqual(["demo"]);
    expect(doc.plans.map((p) => p.name)).toEqual(["free", "pro"]);
    const features = (plan: string): string[] =>
      doc.plans.find((p) => p.name === plan)?.entitlements.map((e) => e.feature) ?? [];
    expect(features("pro")).toContain("reports.export");
    expect(features("free")).not.toContain("reports.export");
    expect(doc.plans.find((p) => p.name === "pro")?.entitlements.find((e) => e.feature === "api.calls")).toMatchObject({
      kind: "quota",
      limit: 10000,
      period: "month",
    });
    expect(doc.licenses.map((l) => [l.id, l.plan])).toEqual([["demo-free", "free"], ["demo-pro", "pro"]]);
    expect(doc.api_keys.map((k) => [k.id, k.license])).toEqual([["demo-free-key", "demo-free"], ["demo-key", "demo-pro"]]);
  });

  test("JSON is accepted", () => {
    const doc = parseRules('{"version": 1, "accounts": [{"id": "a", "name": "A"}]}');
    expect(doc.accounts).toEqual([{ id: "a", name: "A" }]);
  });

  test("YAML syntax errors carry line and column", () => {
    const issues = issuesOf("version: 1\naccounts:\n  - id: a\n    id: b\n");
    expect(issues).toEqual([
      { path: "", message: "line 4, column 5: Map keys must be unique", line: 4, column: 5 },
    ]);
    expect(new RulesError(issues).lines()).toEqual(["document: line 4, column 5: Map keys must be unique"]);
  });

  test("validation issues carry the position of the offending node", () => {
    const text = "version: 1\naccounts:\n  - id: acme\n    name: Acme\nlicenses:\n  - id: l\n    account: acme\n    plan: gold\n";
    expect(issuesOf(text)).toEqual([{ path: "licenses[0].plan", message: 'unknown plan "gold"', line: 8, column: 11 }]);
  });

  test("integers too large for a double are reported, not rounded", () => {
    const text = "version: 1\nplans:\n  - name: p\n    entitlements:\n      - feature: x\n        kind: seats\n        limit: 9007199254740993\n";
    expect(issuesOf(text).map((i) => `${i.path}: ${i.message}`)).toEqual([
      "plans[0].entitlements[0].limit: must be at most 9007199254740991",
    ]);
  });

  test("an empty document is not a mapping", () => {
    expect(issuesOf("").map((i) => i.message)).toEqual(["must be a mapping"]);
  });

  test("documents over 4 MiB are refused before parsing", () => {
    const text = `version: 1\n#${"x".repeat(4 * 1024 * 1024)}\n`;
    expect(issuesOf(text)).toEqual([{ path: "", message: `is ${text.length} bytes; the limit is 4194304 bytes (4 MiB)` }]);
  });

  test("alias expansion is bounded", () => {
    const lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"];
    for (let i = 0; i < 8; i++) lines.push(`${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} [*${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}]`);
    expect(() => parseRules(lines.join("\n"))).toThrow(RulesError);
  });
});
