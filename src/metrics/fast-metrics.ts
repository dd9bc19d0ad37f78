/**
 * A labelled counter and histogram for the hot path, registered with a prom-client Registry.
 *
 * prom-client's own `labels(...).inc()` hashes the label object on every call (about 0.5 µs
 * here); these keep one plain slot per label set, bound once, so an increment is a property
 * add and an observation a short bucket scan. prom-client reads them only when scraped, through
 * the `get()` contract every prom-client metric implements (so the text format, the JSON form
 * and the cluster aggregator all work unchanged).
 */
import type { Registry } from "prom-client";

/** What prom-client's registry reads from a metric's `get()` (its MetricObjectWithValues, minus `collect`). */
export interface MetricSnapshot {
  readonly name: string;
  readonly help: string;
  readonly type: "counter" | "histogram";
  readonly aggregator: "sum";
  readonly values: ReadonlyArray<{
    readonly metricName?: string;
    readonly labels: Readonly<Record<string, string | number>>;
    readonly value: number;
  }>;
}

/** One label set's running count. */
export interface CounterSlot {
  value: number;
}

export class FastCounter<L extends string> {
  readonly type = "counter" as const;
  readonly aggregator = "sum" as const;
  readonly #slots = new Map<string, { labels: Record<L, string>; slot: CounterSlot }>();

  constructor(
    readonly name: string,
    readonly help: string,
    registry: Registry,
  ) {
    registry.registerMetric(this as never);
  }

  /** The slot of a label set, made on first use: bind once, then `slot.value += n` on the hot path. */
  slot(labels: Record<L, string>): CounterSlot {
    const key = JSON.stringify(labels);
    let entry = this.#slots.get(key);
    if (entry === undefined) {
      entry = { labels: { ...labels }, slot: { value: 0 } };
      this.#slots.set(key, entry);
    }
    return entry.slot;
  }

  get(): Promise<MetricSnapshot> {
    const values = [...this.#slots.values()].map(({ labels, slot }) => ({ labels, value: slot.value }));
    return Promise.resolve({ name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator });
  }

  reset(): void {
    for (const { slot } of this.#slots.values()) slot.value = 0;
  }
}

/** One label set's histogram state: counts per bucket (not cumulative), sum and count. */
export class HistogramSlot {
  readonly counts: Float64Array;
  sum = 0;
  count = 0;

  constructor(private readonly bounds: readonly number[]) {
    this.counts = new Float64Array(bounds.length);
  }

  observe(value: number): void {
    const bounds = this.bounds;
    let i = 0;
    while (i < bounds.length && value > (bounds[i] as number)) i++;
    if (i < bounds.length) this.counts[i] = (this.counts[i] ?? 0) + 1;
    this.sum += value;
    this.count += 1;
  }
}

export class FastHistogram<L extends string> {
  readonly type = "histogram" as const;
  readonly aggregator = "sum" as const;
  readonly #slots = new Map<string, { labels: Record<L, string>; slot: HistogramSlot }>();

  constructor(
    readonly name: string,
    readonly help: string,
    readonly buckets: readonly number[],
    registry: Registry,
  ) {
    registry.registerMetric(this as never);
  }

  slot(labels: Record<L, string>): HistogramSlot {
    const key = JSON.stringify(labels);
    let entry = this.#slots.get(key);
    if (entry === undefined) {
      entry = { labels: { ...labels }, slot: new HistogramSlot(this.buckets) };
      this.#slots.set(key, entry);
    }
    return entry.slot;
  }

  get(): Promise<MetricSnapshot> {
    const values: MetricSnapshot["values"][number][] = [];
    for (const { labels, slot } of this.#slots.values()) {
      let cumulative = 0;
      this.buckets.forEach((bound, i) => {
        cumulative += slot.counts[i] ?? 0;
        values.push({ metricName: `${this.name}_bucket`, labels: { ...labels, le: bound }, value: cumulative });
      });
      values.push({ metricName: `${this.name}_bucket`, labels: { ...labels, le: "+Inf" }, value: slot.count });
      values.push({ metricName: `${this.name}_sum`, labels, value: slot.sum });
      values.push({ metricName: `${this.name}_count`, labels, value: slot.count });
    }
    return Promise.resolve({ name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator });
  }

  reset(): void {
    for (const { slot } of this.#slots.values()) {
      slot.counts.fill(0);
      slot.sum = 0;
      slot.count = 0;
    }
  }
}
