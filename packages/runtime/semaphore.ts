import { assert } from "#packages/runtime/assert.ts";
/**
 * At most `max` tasks at once, at most `queue_max` waiting; past that, `run` refuses at once
 * (SemaphoreFull) instead of queueing without bound. For CPU-heavy work such as password hashing,
 * where an unbounded queue would turn a burst of sign-ups into minutes of latency for everyone.
 */
export class SemaphoreFull extends Error {}

export class Semaphore {
  readonly #max: number;
  readonly #queue_max: number;
  #running = 0;
  readonly #waiting: Array<() => void> = [];

  constructor(max: number, queue_max: number) {
    assert(Number.isInteger(max), `concurrency ${max} must be an integer`);
    assert(max >= 1, `concurrency ${max} must be at least 1`);
    assert(Number.isInteger(queue_max), `queue bound ${queue_max} must be an integer`);
    assert(queue_max >= 0, `queue bound ${queue_max} must not be negative`);
    this.#max = max;
    this.#queue_max = queue_max;
  }

  get running(): number {
    return this.#running;
  }

  get waiting(): number {
    return this.#waiting.length;
  }

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.#running >= this.#max) {
      if (this.#waiting.length >= this.#queue_max) throw new SemaphoreFull("too many tasks waiting");
      await new Promise<void>((resolve) => this.#waiting.push(resolve));
    } else {
      this.#running += 1;
    }
    try {
      return await task();
    } finally {
      // Hand the slot straight to the next waiter (running stays the same), or free it.
      const next = this.#waiting.shift();
      if (next !== undefined) next();
      else this.#running -= 1;
    }
  }
}
