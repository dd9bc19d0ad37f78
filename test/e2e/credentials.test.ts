/**
 * Every credential kind through the built service: a customer's IdP JWT (verified against a
 * JWKS server the test runs), a licence token issued with `licensing tokens issue` and
 * verifiable offline from /.well-known/jwks.json, and a service token naming a licence.
 */
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { createLocalJWKSet, jwtVerify, type JSONWebKeySet } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Decision, Reason } from "../../src/index.js";
import { CheckRequestSchema, CheckResponseSchema, type CheckRequest } from "../../src/gen/licensing/v1/licensing_pb.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { makeKey, sign, startJwksServer, type JwksServer, type TestKey } from "../credentials/jwks-server.js";
import { createTestStore, testBackends, type TestStore } from "../support/database.js";
import { grpcError, RawGrpcClient } from "../support/grpc.js";
import { removeDataDir, runCli, startService, type RunningService } from "../support/service.js";

const ISSUER = "https://login.acme.test/";
const ADMIN_TOKEN = "credentials-admin-token-0123456789";

const rules = (jwksUrl: string) => `
version: 1
accounts:
  - { id: acme, name: Acme }
  - { id: globex, name: Globex }
plans:
  - name: pro
    entitlements:
      - { feature: reports.export, kind: boolean, roles: [analyst] }
      - { feature: dashboards.view, kind: boolean }
licenses:
  - { id: acme-prod, account: acme, plan: pro }
  - { id: globex-prod, account: globex, plan: pro }
issuers:
  - id: acme-idp
    issuer: ${ISSUER}
    jwks_url: ${jwksUrl}
    audiences: [licensing]
    license_claim: license_id
service_tokens:
  - { id: billing, rights: [license_id] }
`;

describe.each(testBackends())("credentials end to end on %s", (backend) => {
  let database: TestStore | undefined;
  let service: RunningService;
  let client: RawGrpcClient;
  let idp: JwksServer;
  let idpKey: TestKey;
  let serviceToken = "";
  const adminEnv: Record<string, string> = {};

  function check(init: MessageInitShape<typeof CheckRequestSchema>, metadata?: grpc.Metadata) {
    return client.call("/licensing.v1.LicensingService/Check", CheckRequestSchema, CheckResponseSchema, init, metadata);
  }

  const bearer = (token: string, feature = "dashboards.view"): MessageInitShape<typeof CheckRequestSchema> => ({
    credential: { case: "bearerToken", value: token } as CheckRequest["credential"],
    feature,
  });

  beforeAll(async () => {
    idpKey = await makeKey("idp-1");
    idp = await startJwksServer([idpKey]);
    const env: Record<string, string> = { DEMO_SEED: "off" };
    if (backend === "postgres") {
      database = await createTestStore(backend, { migrate: false });
      env.DATABASE_URL = database.databaseUrl ?? "";
      env.ADMIN_TOKEN = ADMIN_TOKEN;
      env.SIGNING_SECRET = Buffer.alloc(32, 9).toString("base64");
      adminEnv.LICENSING_ADMIN_TOKEN = ADMIN_TOKEN;
    }
    service = await startService({ env });
    adminEnv.DATA_DIR = service.dataDir;
    client = new RawGrpcClient(`127.0.0.1:${service.grpcPort}`);
    const file = join(service.dataDir, "rules.yaml");
    await writeFile(file, rules(idp.url));
    const applied = await runCli(["apply", "-f", file, "--output", "json", "--server", service.grpcUrl], { env: adminEnv });
    expect(applied.stderr).toBe("");
    const issued = JSON.parse(applied.stdout) as { issued_keys: { id: string; kind: string; secret: string }[] };
    serviceToken = issued.issued_keys.find((k) => k.kind === "service_token")?.secret ?? "";
    expect(serviceToken).toMatch(/^lk_svc_/);
  }, 60_000);

  afterAll(async () => {
    client?.close();
    await service?.stop();
    await idp?.close();
    if (service) await removeDataDir(service.dataDir);
    await database?.drop();
  });

  const nowSeconds = () => Math.floor(Date.now() / 1000);

  it("a valid IdP JWT is allowed for its licence, with its roles", async () => {
    const token = await sign({ key: idpKey, iss: ISSUER, aud: "licensing", iat: nowSeconds(), exp: nowSeconds() + 300, claims: { license_id: "acme-prod", roles: ["analyst"] } });
    const answer = await check(bearer(token, "reports.export"));
    expect(answer.decision).toBe(Decision.ALLOW);
    expect(answer.licenseId).toBe("acme-prod");
  });

  it("a JWT without the feature's role is denied ROLE_NOT_ALLOWED", async () => {
    const token = await sign({ key: idpKey, iss: ISSUER, aud: "licensing", iat: nowSeconds(), exp: nowSeconds() + 300, claims: { license_id: "acme-prod" } });
    expect((await check(bearer(token, "reports.export"))).reason).toBe(Reason.ROLE_NOT_ALLOWED);
  });

  it("expired, wrong-audience and unknown-issuer JWTs are denied with their reasons", async () => {
    const base = { key: idpKey, iss: ISSUER, aud: "licensing", claims: { license_id: "acme-prod" } };
    const expired = await sign({ ...base, iat: nowSeconds() - 3600, exp: nowSeconds() - 600 });
    const wrongAudience = await sign({ ...base, aud: "someone-else", iat: nowSeconds(), exp: nowSeconds() + 300 });
    const unknownIssuer = await sign({ ...base, iss: "https://evil.test/", iat: nowSeconds(), exp: nowSeconds() + 300 });
    expect((await check(bearer(expired))).reason).toBe(Reason.TOKEN_EXPIRED);
    expect((await check(bearer(wrongAudience))).reason).toBe(Reason.INVALID_TOKEN);
    expect((await check(bearer(unknownIssuer))).reason).toBe(Reason.INVALID_TOKEN);
  });

  it("licensing tokens issue signs a licence token that Check accepts and anyone can verify offline", async () => {
    const issued = await runCli(["tokens", "issue", "--license", "globex-prod", "--ttl", "10m", "--server", service.grpcUrl], { env: adminEnv });
    expect(issued.code).toBe(0);
    // The token alone on stdout, so scripts can capture it; a note for people on stderr.
    const token = issued.stdout.trim();
    expect(token.split(".")).toHaveLength(3);
    const answer = await check({ credential: { case: "licenseToken", value: token }, feature: "dashboards.view" });
    expect(answer.decision).toBe(Decision.ALLOW);
    expect(answer.licenseId).toBe("globex-prod");

    const jwks = await fetch(`${service.httpUrl}/.well-known/jwks.json`);
    expect(jwks.headers.get("content-type")).toContain("application/jwk-set+json");
    const { payload, protectedHeader } = await jwtVerify(token, createLocalJWKSet((await jwks.json()) as JSONWebKeySet), { algorithms: ["EdDSA"] });
    expect(protectedHeader.alg).toBe("EdDSA");
    expect(payload.sub).toBe("globex-prod");

    const tampered = `${token.slice(0, -4)}AAAA`;
    expect((await check({ credential: { case: "licenseToken", value: tampered }, feature: "dashboards.view" })).reason).toBe(Reason.INVALID_TOKEN);
  });

  it("naming a licence directly needs a service token with that right", async () => {
    const byId = { credential: { case: "licenseId" as const, value: "acme-prod" }, feature: "dashboards.view" };
    const refused = await grpcError(check(byId));
    expect(refused.code).toBe(grpc.status.UNAUTHENTICATED);
    const metadata = new grpc.Metadata();
    metadata.set("authorization", `Bearer ${serviceToken}`);
    const answer = await check(byId, metadata);
    expect(answer.decision).toBe(Decision.ALLOW);
    expect(answer.licenseId).toBe("acme-prod");
  });
});
