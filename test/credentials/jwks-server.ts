/**
 * A tiny identity provider for tests: a JWKS endpoint on 127.0.0.1 (port 0) whose key set the
 * test changes at will, counting the requests it answers; and helpers to sign tokens.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK, type JWTPayload } from "jose";

export interface TestKey {
  readonly kid: string;
  readonly alg: string;
  readonly privateKey: CryptoKey;
  readonly publicKey: CryptoKey;
  readonly publicJwk: JWK;
}

export async function makeKey(kid: string, alg = "RS256"): Promise<TestKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg, use: "sig" };
  return { kid, alg, privateKey, publicKey, publicJwk };
}

export interface JwksServer {
  readonly url: string;
  /** JWKS requests answered so far. */
  readonly requests: number;
  /** The keys served from now on. */
  serve(keys: readonly TestKey[]): void;
  /** Answer every request with this HTTP status instead (undefined: serve the keys). */
  failWith(status: number | undefined): void;
  close(): Promise<void>;
}

export async function startJwksServer(keys: readonly TestKey[]): Promise<JwksServer> {
  let served = keys;
  let status: number | undefined;
  let requests = 0;
  const server: Server = createServer((req, res) => {
    requests++;
    if (status !== undefined) {
      res.writeHead(status).end();
      return;
    }
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ keys: served.map((k) => k.publicJwk) }));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/jwks.json`,
    get requests() {
      return requests;
    },
    serve(next) {
      served = next;
    },
    failWith(next) {
      status = next;
    },
    close() {
      server.closeAllConnections();
      return new Promise((resolve, reject) => server.close((error) => (error ? reject(error) : resolve())));
    },
  };
}

export interface SignOptions {
  readonly key: TestKey;
  readonly claims?: JWTPayload;
  readonly iss?: string;
  readonly aud?: string | string[];
  /** Seconds since the epoch. */
  readonly iat: number;
  readonly exp?: number;
  readonly nbf?: number;
  /** Overrides the header's kid (e.g. a kid the JWKS does not have). */
  readonly kid?: string;
}

export async function sign(options: SignOptions): Promise<string> {
  const jwt = new SignJWT(options.claims ?? {})
    .setProtectedHeader({ alg: options.key.alg, kid: options.kid ?? options.key.kid, typ: "JWT" })
    .setIssuedAt(options.iat);
  if (options.iss !== undefined) jwt.setIssuer(options.iss);
  if (options.aud !== undefined) jwt.setAudience(options.aud);
  if (options.exp !== undefined) jwt.setExpirationTime(options.exp);
  if (options.nbf !== undefined) jwt.setNotBefore(options.nbf);
  return jwt.sign(options.key.privateKey);
}

export function base64urlJson(value: unknown): string {
  return Buffer.from(JSON.stringify(value), "utf8").toString("base64url");
}
