/**
 * The AdminService token handlers (src/admin/tokens.ts) called directly with a real database,
 * and the CLI commands (src/cli/commands/tokens.ts) against a stub client.
 */
import { randomBytes } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Kysely } from "kysely";
import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { createAdminAuthenticator } from "../../src/admin/admin-auth.js";
import { createTokenAdminHandlers } from "../../src/admin/tokens.js";
import type { AdminClient } from "../../src/cli/admin-client.js";
import { keysCommand, parseDuration, tokensCommand, type CommandIo } from "../../src/cli/commands/tokens.js";
import {
  IssueLicenseTokenRequestSchema,
  ListSigningKeysRequestSchema,
  RetireSigningKeyRequestSchema,
  RotateSigningKeyRequestSchema,
  SigningKeySchema,
} from "../../src/gen/licensing/admin/v1/admin_pb.js";
import { createLicenseTokenVerifier } from "../../src/licensing/credentials/license-tokens.js";
import { applyRules } from "../../src/rules/apply.js";
import { parseRules } from "../../src/rules/parse.js";
import type { RpcContext } from "../../src/server/rpc.js";
import type { Database } from "../../src/store/schema.js";
import { createTestStore, testBackends, type TestStore } from "../support/database.js";

const T0 = new Date("2026-03-01T12:00:00.000Z");
const ADMIN_TOKEN = "admin-token-for-tests";
const RULES = "version: 1\naccounts: [{ id: acme, name: Acme }]\nplans: [{ name: pro }]\nlicenses: [{ id: acme-prod, account: acme, plan: pro }]\n";

function context(token: string | undefined = ADMIN_TOKEN): RpcContext {
  return {
    header: (name) => (name === "authorization" && token !== undefined ? `Bearer ${token}` : undefined),
    signal: new AbortController().signal,
    transport: "grpc",
  };
}

async function codeOf(promise: unknown): Promise<Code | undefined> {
  try {
    await promise;
    return undefined;
  } catch (error) {
    if (error instanceof ConnectError) return error.code;
    throw error;
  }
}

describe.each(testBackends())("admin token handlers on %s", (backend) => {
  let store: TestStore;
  let db: Kysely<Database>;
  let reloads: number;
  const kek = randomBytes(32);

  beforeEach(async () => {
    store = await createTestStore(backend);
    db = store.db;
    reloads = 0;
    await applyRules(db, parseRules(RULES), { prune: false, dryRun: false, now: T0 });
  });
  afterEach(() => store.drop());

  function handlers(withSecret = true) {
    return createTokenAdminHandlers({
      db,
      authenticate: createAdminAuthenticator(ADMIN_TOKEN),
      signingSecret: withSecret ? kek : undefined,
      onSigningKeysChanged: () => {
        reloads++;
      },
      now: () => T0.getTime(),
      logger: pino({ level: "silent" }),
    });
  }

  test("IssueLicenseToken returns a token that verifies, its expiry and kid", async () => {
    const response = await handlers().issueLicenseToken(create(IssueLicenseTokenRequestSchema, { licenseId: "acme-prod", ttlSeconds: 600n }), context());
    expect(response.expiresAt && timestampDate(response.expiresAt).toISOString()).toBe("2026-03-01T12:10:00.000Z");
    const verifier = createLicenseTokenVerifier({ db, now: () => T0.getTime() });
    await verifier.reload();
    expect(verifier.verify(response.token, T0.getTime())).toMatchObject({ ok: true, licenseId: "acme-prod", kid: response.kid });
  });

  test("IssueLicenseToken: unknown licence NOT_FOUND, bad arguments INVALID_ARGUMENT, no admin token UNAUTHENTICATED", async () => {
    const h = handlers();
    const issue = (licenseId: string, ttlSeconds: bigint, ctx = context()) =>
      h.issueLicenseToken(create(IssueLicenseTokenRequestSchema, { licenseId, ttlSeconds }), ctx);
    expect(await codeOf(issue("nobody", 0n))).toBe(Code.NotFound);
    expect(await codeOf(issue("", 0n))).toBe(Code.InvalidArgument);
    expect(await codeOf(issue("acme-prod", 2_592_001n))).toBe(Code.InvalidArgument);
    expect(await codeOf(issue("acme-prod", -1n))).toBe(Code.InvalidArgument);
    expect(await codeOf(issue("acme-prod", 0n, context("wrong-token-wrong-token")))).toBe(Code.Unauthenticated);
  });

  test("without a signing secret, issuing and rotating answer FAILED_PRECONDITION; listing still works", async () => {
    const h = handlers(false);
    expect(await codeOf(h.issueLicenseToken(create(IssueLicenseTokenRequestSchema, { licenseId: "acme-prod" }), context()))).toBe(Code.FailedPrecondition);
    expect(await codeOf(h.rotateSigningKey(create(RotateSigningKeyRequestSchema), context()))).toBe(Code.FailedPrecondition);
    expect((await h.listSigningKeys(create(ListSigningKeysRequestSchema), context())).keys).toEqual([]);
  });

  test("RotateSigningKey, ListSigningKeys and RetireSigningKey manage the keys and reload the verifier", async () => {
    const h = handlers();
    const first = await h.rotateSigningKey(create(RotateSigningKeyRequestSchema), context());
    const listed = await h.listSigningKeys(create(ListSigningKeysRequestSchema), context());
    expect(listed.keys.map((k) => k.kid)).toEqual([first.kid]);
    expect(listed.keys[0]?.retiredAt).toBeUndefined();
    expect(listed.keys[0]?.activatedAt && timestampDate(listed.keys[0].activatedAt).toISOString()).toBe(T0.toISOString());
    await h.retireSigningKey(create(RetireSigningKeyRequestSchema, { kid: first.kid }), context());
    const after = await h.listSigningKeys(create(ListSigningKeysRequestSchema), context());
    expect(after.keys[0]?.retiredAt && timestampDate(after.keys[0].retiredAt).toISOString()).toBe(T0.toISOString());
    expect(reloads).toBe(2);
    expect(await codeOf(h.retireSigningKey(create(RetireSigningKeyRequestSchema, { kid: "nope" }), context()))).toBe(Code.NotFound);
    expect(await codeOf(h.retireSigningKey(create(RetireSigningKeyRequestSchema, { kid: "" }), context()))).toBe(Code.InvalidArgument);
  });
});

/** Records what the commands print and which RPCs they call. */
function harness() {
  const out: string[] = [];
  const err: string[] = [];
  const calls: Array<[string, unknown]> = [];
  const io: CommandIo = { stdout: (t) => out.push(t), stderr: (t) => err.push(t), now: () => T0.getTime() };
  const client = {
    issueLicenseToken: async (request: unknown) => {
      calls.push(["issueLicenseToken", request]);
      return { token: "h.p.s", kid: "kid-1", expiresAt: timestampFromDate(new Date("2026-03-01T14:00:00.000Z")) };
    },
    rotateSigningKey: async () => {
      calls.push(["rotateSigningKey", {}]);
      return { kid: "kid-2" };
    },
    listSigningKeys: async () => ({
      keys: [
        create(SigningKeySchema, { kid: "kid-2", createdAt: timestampFromDate(T0), activatedAt: timestampFromDate(T0) }),
        create(SigningKeySchema, {
          kid: "kid-1",
          createdAt: timestampFromDate(new Date("2026-02-01T00:00:00Z")),
          retiredAt: timestampFromDate(new Date("2026-03-31T12:05:00Z")),
        }),
      ],
    }),
    retireSigningKey: async (request: unknown) => {
      calls.push(["retireSigningKey", request]);
      return {};
    },
  } as unknown as AdminClient;
  return { out, err, calls, io, client };
}

describe("licensing tokens / keys CLI", () => {
  test("tokens issue prints the token alone by default, and sends the ttl in seconds", async () => {
    const h = harness();
    expect(await tokensCommand(["issue", "--license", "acme-prod", "--ttl", "2h"], h.client, h.io)).toBe(0);
    expect(h.out.join("")).toBe("h.p.s\n");
    expect(h.calls).toEqual([["issueLicenseToken", { licenseId: "acme-prod", ttlSeconds: 7200n }]]);
  });

  test("tokens issue --output json prints token, expiry and kid", async () => {
    const h = harness();
    expect(await tokensCommand(["issue", "--license", "acme-prod", "-o", "json", "--server", "http://x:1"], h.client, h.io)).toBe(0);
    expect(JSON.parse(h.out.join(""))).toEqual({ token: "h.p.s", expires_at: "2026-03-01T14:00:00.000Z", kid: "kid-1" });
  });

  test("keys rotate, list and retire call their RPCs; list shows which key signs and which retire", async () => {
    const h = harness();
    expect(await keysCommand(["rotate"], h.client, h.io)).toBe(0);
    expect(await keysCommand(["list"], h.client, h.io)).toBe(0);
    expect(await keysCommand(["retire", "kid-1"], h.client, h.io)).toBe(0);
    const text = h.out.join("");
    expect(text).toContain("kid-2 now signs");
    expect(text).toMatch(/kid-2\s+2026-03-01T12:00:00.000Z\s+active \(signs\)/);
    expect(text).toMatch(/kid-1\s+2026-02-01T00:00:00.000Z\s+verifies until 2026-03-31T12:05:00.000Z/);
    expect(h.calls.map(([name]) => name)).toEqual(["rotateSigningKey", "retireSigningKey"]);
  });

  test("bad usage exits 2 with a message and calls nothing", async () => {
    const cases: Array<[typeof tokensCommand, string[]]> = [
      [tokensCommand, []],
      [tokensCommand, ["issue"]],
      [tokensCommand, ["issue", "--license", "x", "--ttl", "soon"]],
      [tokensCommand, ["issue", "--license", "x", "--output", "xml"]],
      [keysCommand, ["retire"]],
      [keysCommand, ["retire", "a", "b"]],
      [keysCommand, ["spin"]],
    ];
    for (const [command, args] of cases) {
      const h = harness();
      expect(await command(args, h.client, h.io)).toBe(2);
      expect(h.err.join("")).toMatch(/^licensing: /);
      expect(h.calls).toEqual([]);
    }
  });

  test("durations: 90s, 30m, 1h, 7d and bare seconds", () => {
    expect([parseDuration("90s"), parseDuration("30m"), parseDuration("1h"), parseDuration("7d"), parseDuration("45")]).toEqual([
      90, 1800, 3600, 604_800, 45,
    ]);
  });
});
