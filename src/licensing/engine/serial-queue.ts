/**
 * Runs async tasks one at a time, first come first served.
 *
 * Why the engine needs it: this replica's statements that touch its own lease rows (lease,
 * settle, heartbeat, release) lock a counter row and a lease row in different orders; run
 * concurrently on two pooled connections they could deadlock each other. One at a time, they
 * cannot; and since no other replica locks this replica's live lease rows, a lease statement
 * (which Checks may wait on) never takes part in a deadlock.
 */
export interface SerialQueue {
  /** Runs `task` after every task queued before it has settled; resolves or rejects with it. */
  run<T>(task: () => Promise<T>): Promise<T>;
}

export function createSerialQueue(): SerialQueue {
  let tail: Promise<unknown> = Promise.resolve();
  return {
    run<T>(task: () => Promise<T>): Promise<T> {
      const result = tail.then(task);
      // The next task waits for this one to settle either way; its failure is its caller's.
      tail = result.then(
        () => undefined,
        () => undefined,
      );
      return result;
    },
  };
}
