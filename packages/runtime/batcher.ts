import { assert } from "#packages/runtime/assert.ts";
/**
 * Group commit for round trips: callers submit one item each and await its own result, while
 * the batcher sends whatever has queued up as one batch (one statement, one HTTP call, one
 * commit for many transfers). Nothing waits on a timer: an idle batcher runs an item at once
 * (a batch of one, no added latency); while a batch runs, new items queue and leave together as
 * the next batch when it ends. A second batch runs beside the first (up to `in_flight_max`) only
 * once a full one waits, so side-by-side batches serve bursts rather than splitting a steady
 * stream into batches of one. So batches grow with load, which is when the saved round trips matter.
 */

export interface BatcherOptions<In, Out> {
  /** What the batches are of, for error messages. */
  name: string;
  /** Most items in one batch. */
  batch_max: number;
  /** Most batches running at once (beyond the first, only full ones). */
  in_flight_max: number;
  /** Most items waiting; a submit beyond it is refused at once (back-pressure, not an unbounded queue). */
  waiting_max: number;
  /**
   * Items with equal keys never share a batch (they wait for the next one), for batch statements
   * that must see each row at most once, such as a compare-and-set per transfer.
   */
  key?: (item: In) => string;
  /** Runs one batch; returns one result per item, in order. A throw fails every item of the batch. */
  run: (items: In[]) => Promise<Out[]>;
}

export class BatcherOverloadedError extends Error {}

interface Waiting<In, Out> {
  item: In;
  resolve: (out: Out) => void;
  reject: (error: unknown) => void;
}

export class Batcher<In, Out> {
  readonly #options: BatcherOptions<In, Out>;
  #waiting: Array<Waiting<In, Out>> = [];
  #in_flight = 0;

  constructor(options: BatcherOptions<In, Out>) {
    if (!(options.batch_max >= 1 && options.in_flight_max >= 1 && options.waiting_max >= 1)) {
      throw new Error(`batcher ${options.name}: limits must be at least 1`);
    }
    this.#options = options;
  }

  /** Items waiting for a batch (not counting the ones running). */
  get waiting(): number {
    return this.#waiting.length;
  }

  submit(item: In): Promise<Out> {
    if (this.#waiting.length >= this.#options.waiting_max) {
      return Promise.reject(
        new BatcherOverloadedError(
          `${this.#options.name}: ${this.#waiting.length} items already wait for a batch`,
        ),
      );
    }
    return new Promise<Out>((resolve, reject) => {
      this.#waiting.push({ item, resolve, reject });
      this.#pump();
    });
  }

  #pump(): void {
    while (this.#in_flight < this.#options.in_flight_max && this.#waiting.length > 0) {
      // A batch beside one already running only when a full one waits: a partial batch sent at
      // once beside a running one is mostly a batch of one, costing a round trip and a commit
      // per item, while the items that queue behind the running batch leave together.
      if (this.#in_flight > 0 && this.#waiting.length < this.#options.batch_max) return;
      this.#start(this.#take());
    }
  }

  /** The next batch: oldest first, skipping (and keeping, in order) items whose key is taken. */
  #take(): Array<Waiting<In, Out>> {
    const key = this.#options.key;
    if (key === undefined) return this.#waiting.splice(0, this.#options.batch_max);
    const batch: Array<Waiting<In, Out>> = [];
    const left: Array<Waiting<In, Out>> = [];
    const keys = new Set<string>();
    for (const entry of this.#waiting) {
      const k = key(entry.item);
      if (batch.length < this.#options.batch_max && !keys.has(k)) {
        keys.add(k);
        batch.push(entry);
      } else {
        left.push(entry);
      }
    }
    this.#waiting = left;
    return batch;
  }

  #start(batch: Array<Waiting<In, Out>>): void {
    this.#in_flight += 1;
    let results: Promise<Out[]>;
    try {
      results = this.#options.run(batch.map((entry) => entry.item));
    } catch (error) {
      results = Promise.reject(error);
    }
    results
      .then((outs) => {
        assert(
          outs.length === batch.length,
          `batch ${this.#options.name} of ${batch.length} returned ${outs.length} results`,
        );
        batch.forEach((entry, i) => {
          entry.resolve(outs[i] as Out);
        });
      })
      // A failed run, or a wrong count (checked before any item is resolved): every item fails.
      .catch((error: unknown) => {
        for (const entry of batch) entry.reject(error);
      })
      .finally(() => {
        this.#in_flight -= 1;
        this.#pump();
      });
  }
}
