/**
 * Composition of values that are usually ready and sometimes pending: the hot path stays
 * synchronous (no promise allocated, no microtask) when every step is answered from memory.
 */
export type MaybePromise<T> = T | Promise<T>;

export function isPromise<T>(value: MaybePromise<T>): value is Promise<T> {
  return typeof (value as { then?: unknown } | null)?.then === "function";
}

/** `fn(value)`, now when `value` is ready, later when it is a promise. */
export function andThen<T, R>(value: MaybePromise<T>, fn: (ready: T) => MaybePromise<R>): MaybePromise<R> {
  return isPromise(value) ? value.then(fn) : fn(value);
}
