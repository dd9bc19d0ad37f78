/**
 * Capacity money arithmetic: exact integers, bigint wherever a product can pass 2^53.
 *
 * Capacity is billed per unit-hour in minor currency units (cents). Held capacity is measured in
 * unit-milliseconds (units × ms held), which is exact for any ledger (its times have at most
 * millisecond precision here, and Scale writes whole seconds). The amount for `u` unit-ms at
 * price `p` per unit-hour is u × p / 3 600 000, rounded half up to a whole minor unit, once, on
 * the total (never per ledger row, so splitting a span never changes the sum by rounding).
 */

/** Milliseconds in one hour: the price's time unit. */
export const HOUR_MS = 3_600_000n;

/** `unitMs × price / 1 h`, rounded half up to a whole minor unit. Both inputs ≥ 0. */
export function amountForUnitMs(unitMs: bigint, pricePerUnitHour: bigint): bigint {
  return (unitMs * pricePerUnitHour + HOUR_MS / 2n) / HOUR_MS;
}

/**
 * The most unit-ms whose amount (as `amountForUnitMs` rounds) stays ≤ `budget`; undefined when
 * the price is 0 (any amount of capacity is free). amount ≤ B ⇔ u·p + H/2 < (B+1)·H
 * ⇔ u·p ≤ (B+1)·H − H/2 − 1 ⇔ u ≤ floor(((B+1)·H − H/2 − 1) / p).
 */
export function maxUnitMsWithin(budget: bigint, pricePerUnitHour: bigint): bigint | undefined {
  if (pricePerUnitHour <= 0n) return undefined;
  return ((budget + 1n) * HOUR_MS - HOUR_MS / 2n - 1n) / pricePerUnitHour;
}
