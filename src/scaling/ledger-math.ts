/**
 * Integrating the capacity ledger over time, exactly (pure; billing.ts reads the rows).
 */

/** One ledger row: `units` held over [fromMs, toMs); toMs null = still held. */
export interface LedgerSpan {
  readonly units: number;
  readonly fromMs: number;
  readonly toMs: number | null;
}

/**
 * Unit-milliseconds held over [fromMs, toMs): Σ units × overlap. An open row (toMs null) counts
 * up to `toMs` — pass a `toMs` no later than now for capacity actually held. bigint: units ×
 * ms passes 2^53 quickly (10 000 units for a month is 2.6e13; a large pool is far more).
 */
export function integrateUnitMs(spans: readonly LedgerSpan[], fromMs: number, toMs: number): bigint {
  let total = 0n;
  for (const span of spans) {
    const start = Math.max(fromMs, span.fromMs);
    const end = Math.min(toMs, span.toMs ?? toMs);
    if (end > start) total += BigInt(span.units) * BigInt(end - start);
  }
  return total;
}

/** Whole unit-seconds in `unitMs`, rounded down (exact for Scale's whole-second ledger). */
export function unitSecondsOf(unitMs: bigint): bigint {
  return unitMs / 1000n;
}
