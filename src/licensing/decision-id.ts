/**
 * Decision ids: random (version 4) UUIDs, RFC 9562, as crypto.randomUUID makes them.
 *
 * Why not crypto.randomUUID: every Check makes one, and Node builds randomUUID's string from
 * sixteen two-character pieces joined one by one, so each id left about 650 bytes of
 * intermediate strings behind and cost about three times what writing the 36 characters into
 * one buffer and reading them back as a single string costs (measured in-process while
 * profiling the Check path for bench/RESULTS.md). The randomness is the same: the bytes come
 * from crypto.randomFillSync, drawn 4 KiB at a time (randomUUID also draws ahead, 2 KiB).
 */
import { randomFillSync } from "node:crypto";

const ID_BYTES = 16;
/** Random bytes drawn at once: 256 ids per refill. */
const POOL_BYTES = 4096;
const HEX = Buffer.from("0123456789abcdef", "latin1");
const DASH = 0x2d;

const pool = Buffer.allocUnsafe(POOL_BYTES);
let offset = POOL_BYTES;
const text = Buffer.allocUnsafe(36);

/** A new random UUID, lower-case, e.g. "0b6c5a56-3f39-4d8e-9a41-6f0c2d7e8b15". */
export function newDecisionId(): string {
  if (offset + ID_BYTES > POOL_BYTES) {
    randomFillSync(pool);
    offset = 0;
  }
  let at = 0;
  for (let i = 0; i < ID_BYTES; i++) {
    let byte = pool[offset + i] as number;
    if (i === 6) byte = (byte & 0x0f) | 0x40; // version 4
    else if (i === 8) byte = (byte & 0x3f) | 0x80; // variant 10xx
    text[at++] = HEX[byte >> 4] as number;
    text[at++] = HEX[byte & 0x0f] as number;
    if (i === 3 || i === 5 || i === 7 || i === 9) text[at++] = DASH;
  }
  // Each byte is used once: an id never shares randomness with another.
  offset += ID_BYTES;
  return text.toString("latin1", 0, 36);
}
