import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { createAdminAuthenticator } from "../../src/admin/admin-auth.js";
import type { RpcContext } from "../../src/server/rpc.js";

function context(authorization?: string): RpcContext {
  return {
    header: (name) => (name === "authorization" ? authorization : undefined),
    signal: new AbortController().signal,
    transport: "grpc",
  };
}

function codeOf(run: () => void): Code | undefined {
  try {
    run();
    return undefined;
  } catch (error) {
    return error instanceof ConnectError ? error.code : undefined;
  }
}

describe("admin authorization", () => {
  const authenticate = createAdminAuthenticator("correct-horse-battery-staple");

  it("accepts the admin token as a bearer token", () => {
    expect(codeOf(() => authenticate(context("Bearer correct-horse-battery-staple")))).toBeUndefined();
  });

  it.each([undefined, "", "Bearer", "Bearer wrong-token-of-any-length", "Basic correct-horse-battery-staple", "correct-horse-battery-staple"])(
    "refuses %j with UNAUTHENTICATED",
    (header) => {
      expect(codeOf(() => authenticate(context(header)))).toBe(Code.Unauthenticated);
    },
  );

  it("refuses every call when no admin token is configured", () => {
    const disabled = createAdminAuthenticator(undefined);
    expect(codeOf(() => disabled(context("Bearer anything")))).toBe(Code.Unauthenticated);
  });
});
