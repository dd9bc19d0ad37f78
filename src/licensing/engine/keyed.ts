/**
 * A map keyed by (licence id, feature) without building a composite string per lookup: the hot
 * path looks state up on every Check, and a two-level map costs two hash lookups and no
 * allocation.
 */
export class ByLicenseFeature<T> {
  readonly #byLicense = new Map<string, Map<string, T>>();

  get(licenseId: string, feature: string): T | undefined {
    return this.#byLicense.get(licenseId)?.get(feature);
  }

  set(licenseId: string, feature: string, value: T): void {
    let byFeature = this.#byLicense.get(licenseId);
    if (byFeature === undefined) {
      byFeature = new Map();
      this.#byLicense.set(licenseId, byFeature);
    }
    byFeature.set(feature, value);
  }

  delete(licenseId: string, feature: string): void {
    const byFeature = this.#byLicense.get(licenseId);
    if (byFeature === undefined) return;
    byFeature.delete(feature);
    if (byFeature.size === 0) this.#byLicense.delete(licenseId);
  }

  *values(): IterableIterator<T> {
    for (const byFeature of this.#byLicense.values()) yield* byFeature.values();
  }
}

/** A string key for background batches (not the hot path), unambiguous for any ids. */
export function counterKey(licenseId: string, feature: string, periodStartMs: number): string {
  return `${licenseId}\u0000${feature}\u0000${periodStartMs}`;
}
