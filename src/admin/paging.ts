/**
 * Page sizes and opaque page tokens for AdminService list calls.
 *
 * A page token is base64url JSON of the last row's sort key plus a fingerprint of the filters,
 * so a token is only accepted with the filters it was made for. Opaque to clients: its shape
 * may change between versions (a stale token is INVALID_ARGUMENT, and the client starts over).
 */
import { createHash } from "node:crypto";
import { invalidArgument } from "../server/errors.js";

export const DEFAULT_PAGE_SIZE = 100;
export const MAX_PAGE_SIZE = 1000;

/** page_size as a row count: 0 means the default; outside 0..1000 is INVALID_ARGUMENT. */
export function pageSize(requested: number): number {
  if (requested === 0) return DEFAULT_PAGE_SIZE;
  if (!Number.isInteger(requested) || requested < 0 || requested > MAX_PAGE_SIZE) {
    throw invalidArgument("page_size", `must be from 1 to ${MAX_PAGE_SIZE}, or 0 for the default (${DEFAULT_PAGE_SIZE})`);
  }
  return requested;
}

/** A short digest of the filters a token belongs to. */
export function filterFingerprint(filters: readonly unknown[]): string {
  return createHash("sha256").update(JSON.stringify(filters)).digest("base64url").slice(0, 16);
}

export function encodePageToken(key: readonly (string | number)[], fingerprint: string): string {
  return Buffer.from(JSON.stringify({ k: key, f: fingerprint }), "utf8").toString("base64url");
}

/**
 * The sort key a token carries, or undefined for "" (the first page).
 * @throws INVALID_ARGUMENT when the token is malformed or was made for other filters.
 */
export function decodePageToken(token: string, fingerprint: string): (string | number)[] | undefined {
  if (token === "") return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    throw invalidArgument("page_token", "is not a token this service issued");
  }
  const value = parsed as { k?: unknown; f?: unknown };
  if (!Array.isArray(value.k) || !value.k.every((part) => typeof part === "string" || typeof part === "number")) {
    throw invalidArgument("page_token", "is not a token this service issued");
  }
  if (value.f !== fingerprint) throw invalidArgument("page_token", "belongs to a request with other filters: start again without it");
  return value.k as (string | number)[];
}
