/**
 * Refusals as HTTP answers: every business rule the API can answer with, its status and stable
 * code. The one place a refusal code becomes a status; the data tier only names the code.
 */
import { ApiError } from "#packages/http/errors.ts";
import { type LedgerRefusalCode, Refusal } from "../ledger/refusal.ts";

const refusalStatus = {
  user_not_found: 404,
  username_taken: 409,
  balance_not_zero: 409,
  transfers_in_flight: 409,
  idempotency_key_reused: 409,
  balance_limit_exceeded: 422,
  source_not_found: 404,
  dest_not_found: 404,
  same_wallet: 422,
  insufficient_funds: 422,
  hold_mismatch: 409,
  hold_not_found: 404,
  hold_voided: 409,
  hold_posted: 409,
  dest_unavailable: 409,
  source_unavailable: 409,
  transfer_repeated_in_batch: 422,
  unauthorized: 401,
  current_password_required: 403,
  current_password_mismatch: 403,
  account_locked: 403,
} as const satisfies Record<LedgerRefusalCode, number> & Record<string, number>;
export type RefusalCode = keyof typeof refusalStatus;

export function refuse(code: RefusalCode, message: string, headers?: Record<string, string>): ApiError {
  return new ApiError(refusalStatus[code], code, message, headers ? { headers } : {});
}

/** The data tier's answer, or its refusal as the ApiError the routes document. */
export async function orRefused<T>(work: Promise<T>): Promise<T> {
  try {
    return await work;
  } catch (error) {
    if (error instanceof Refusal) throw refuse(error.code, error.message);
    throw error;
  }
}
