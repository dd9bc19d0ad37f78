import { describe, expect, it } from "vitest";
import { unverifiedIssuer } from "../../src/envoy/credential.js";
import { createRouteMatcher, normalizePath } from "../../src/envoy/route-table.js";
import { jwtWithIssuer, ROUTES } from "./support.js";

describe("route table", () => {
  const match = createRouteMatcher(ROUTES);

  it("the longest matching prefix wins, whatever the order of the rules", () => {
    expect(match("GET", "/v1/reports/export/x")?.feature).toBe("reports.export");
    expect(match("GET", "/v1/reports")?.feature).toBe("reports.view");
  });

  it("a rule naming the method beats one that does not, at equal prefix length", () => {
    expect(match("POST", "/v1/jobs/1")?.feature).toBe("jobs.create");
    expect(match("DELETE", "/v1/jobs/1")?.feature).toBe("jobs.read");
  });

  it("the query string does not take part in matching", () => {
    expect(match("GET", "/v2?x=/v1/reports")).toBeUndefined();
    expect(match("GET", "/v1/reports?x=1")?.feature).toBe("reports.view");
  });

  it("no rule, no match", () => {
    expect(match("GET", "/")).toBeUndefined();
    expect(createRouteMatcher([])("GET", "/v1/reports")).toBeUndefined();
  });

  it.each([
    [{ pathPrefix: "v1", feature: "f", cost: 1 }, /routes\[0\]\.pathPrefix/],
    [{ pathPrefix: "/v1", feature: "", cost: 1 }, /routes\[0\]\.feature/],
    [{ pathPrefix: "/v1", feature: "f", cost: 1.5 }, /routes\[0\]\.cost/],
    [{ pathPrefix: "/v1", feature: "f", cost: -1 }, /routes\[0\]\.cost/],
    [{ method: "post", pathPrefix: "/v1", feature: "f", cost: 1 }, /routes\[0\]\.method/],
  ])("a malformed rule fails at creation, naming the field (%o)", (rule, message) => {
    expect(() => createRouteMatcher([rule])).toThrow(message);
  });

  it.each([
    ["/a/b", "/a/b"],
    ["/a/b?c=/d", "/a/b"],
    ["/a/./b/../c", "/a/c"],
    ["/a//b", "/a/b"],
    ["/a/%2E%2E/b", "/b"],
    ["/../../etc", "/etc"],
    ["/a/b/", "/a/b/"],
    ["/a/%zz", "/a/%zz"],
    ["relative", "/relative"],
  ])("normalizePath(%s) is %s", (input, expected) => {
    expect(normalizePath(input)).toBe(expected);
  });
});

describe("credential kind", () => {
  it("reads the unverified issuer of a JWT, and nothing from other values", () => {
    expect(unverifiedIssuer(jwtWithIssuer("licensing"))).toBe("licensing");
    expect(unverifiedIssuer("not-a-jwt")).toBeUndefined();
    expect(unverifiedIssuer("a.b.c")).toBeUndefined();
    expect(unverifiedIssuer(`x.${Buffer.from("[1]").toString("base64url")}.y`)).toBeUndefined();
  });
});
