/**
 * The decision log's hash chain: the canonical form of a row and the hash that links it to the
 * replica's previous row. The writer (decision-log.ts) and the verifier (verify.ts) share this
 * file, so what is written and what is checked cannot drift apart.
 *
 * ## The hash, exactly
 *
 *     hash = lowercase hex( SHA-256( UTF-8( prev_hash + "\n" + canonical(row) ) ) )
 *
 * where `prev_hash` is the replica's previous row's `hash` ("" for seq 1) and `canonical(row)`
 * is `JSON.stringify` of this array, in this order:
 *
 *     [replica_id, seq, decision_id, time, license_id, feature, decision, reason, quantity, count]
 *
 *   - replica_id, feature, reason: JSON strings.
 *   - seq, quantity, count: JSON integers (decimal, no exponent, no fraction).
 *   - decision_id, license_id: JSON strings, or `null` (aggregated rows have no decision id;
 *     denies before a licence was found have no licence). `null` and `""` differ.
 *   - time: the ISO 8601 UTC string with milliseconds, as `Date#toISOString` prints it:
 *     "2026-11-21T10:00:00.123Z". Rows are written with millisecond times, so the value
 *     PostgreSQL gives back (microsecond precision) prints the same.
 *   - decision: "allow" or "deny".
 *
 * Example: the first row of replica "r1", a deny:
 *
 *     ""  + "\n" + '["r1",1,"d-1","2026-11-21T10:00:00.123Z","lic-1","export","deny","QUOTA_EXHAUSTED",5,1]'
 *
 * JSON gives an unambiguous encoding for free (quotes and backslashes escaped, null distinct
 * from ""), and any language can reproduce it. prev_hash is hex or empty, so the "\n" separator
 * can never be confused with its content. Strings are hashed as the database stores them: the
 * writer replaces NUL (which PostgreSQL text cannot hold) and a lone UTF-16 surrogate (which
 * UTF-8 cannot carry) with U+FFFD before hashing, so a row read back hashes the same.
 *
 * seq and replica_id are inside the hash, so moving a row to another position or another
 * replica's chain breaks it; prev_hash links each row to the one before, so deleting or
 * inserting a row breaks the next one. What a chain alone cannot show: rows cut off its tail,
 * or a chain recomputed end to end by someone who can write the table. Anchoring the head
 * elsewhere (an export, a second system) covers those; it is not done here.
 */
import { hash } from "node:crypto";
import type { DecisionOutcome } from "../../store/schema.js";

/** One row of `decision_log` as the chain sees it. */
export interface ChainRow {
  replicaId: string;
  /** 1, 2, 3, ... per replica, without gaps. */
  seq: number;
  /** Null on aggregated rows. */
  decisionId: string | null;
  /** Epoch milliseconds (an integer); an aggregated row carries the start of its second. */
  timeMs: number;
  licenseId: string | null;
  feature: string;
  decision: DecisionOutcome;
  reason: string;
  /** Units the decision(s) asked for; summed on aggregated rows. */
  quantity: number;
  /** Decisions the row stands for: 1, or more on an aggregated row. */
  count: number;
}

/**
 * The canonical serialization described at the top of this file. `time` is the row's time as
 * `Date#toISOString` prints it, for a caller that already has it (the writer stores the same
 * string); omitted, it is computed.
 */
export function canonicalRow(row: ChainRow, time: string = new Date(row.timeMs).toISOString()): string {
  return JSON.stringify([
    row.replicaId,
    row.seq,
    row.decisionId,
    time,
    row.licenseId,
    row.feature,
    row.decision,
    row.reason,
    row.quantity,
    row.count,
  ]);
}

/**
 * Lowercase hex SHA-256 of `prevHash + "\n" + canonicalRow(row)`; `time` as for canonicalRow.
 * One-shot crypto.hash: no Hash object per row (the writer chains every deny).
 */
export function chainHash(prevHash: string, row: ChainRow, time?: string): string {
  return hashCanonical(prevHash, canonicalRow(row, time));
}

/** chainHash for a caller that already holds the row's canonical form (the writer stores it). */
export function hashCanonical(prevHash: string, canonical: string): string {
  return hash("sha256", `${prevHash}\n${canonical}`, "hex");
}
