/**
 * One way to state an invariant: a condition the code's own logic guarantees, whose failure
 * means a bug (or a peer breaking its contract), never bad input or a passing outage. Callers
 * tell it apart from a retryable failure by its class: a broken invariant is never retried as
 * if it were a timeout (the saga parks the transfer, a consumer dead-letters the message).
 */

/** A condition the code guarantees did not hold. */
export class InvariantError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(`invariant: ${message}`, options);
    this.name = "InvariantError";
  }
}

/**
 * Throw InvariantError unless `condition` holds; narrows its type for the rest of the caller.
 * One condition per call (no `a && b`), so a failure names the one that broke.
 */
export function assert(condition: boolean, message: string): asserts condition {
  if (!condition) throw new InvariantError(message);
}
