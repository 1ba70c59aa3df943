/**
 * The data tier's refusals: a business rule said no, with a stable code and a message. They carry
 * no HTTP status (routes/refusals.ts maps codes to statuses, in one table). Thrown, not returned,
 * inside a transaction so that withTransaction rolls it back; the saga's steps answer the same
 * codes as values (LedgerOperationResult), one per step of a batch.
 */
import type { StepRefusalCode } from "#packages/contracts/ledger.ts";

export type LedgerRefusalCode =
  | StepRefusalCode
  | "user_not_found"
  | "username_taken"
  | "balance_not_zero"
  | "transfers_in_flight"
  | "idempotency_key_reused"
  | "balance_limit_exceeded";

export class Refusal extends Error {
  readonly code: LedgerRefusalCode;

  constructor(code: LedgerRefusalCode, message: string) {
    super(message);
    this.code = code;
  }
}
