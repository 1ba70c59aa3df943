/**
 * Money is an integer count of minor units (cents). JSON carries it as a number, so every
 * amount and balance must stay a safe integer (<= 2^53-1); PostgreSQL stores it as bigint and
 * enforces the same ceiling with a CHECK so a value that cannot round-trip through JSON is
 * never written.
 */
import { z } from "zod";
import { assert } from "#packages/runtime/assert.ts";

export const AMOUNT_MAX_MINOR = Number.MAX_SAFE_INTEGER;

/** A positive amount to move: 1 .. 2^53-1 minor units. */
export const amountMinorSchema = z
  .number({ error: "must be a number of minor units" })
  .int({ error: "must be an integer number of minor units" })
  .positive({ error: "must be positive" })
  .max(AMOUNT_MAX_MINOR, { error: `must be at most ${AMOUNT_MAX_MINOR}` });

/** A balance: 0 .. 2^53-1 minor units. */
export const balanceMinorSchema = z.number().int().nonnegative().max(AMOUNT_MAX_MINOR);

export function assertAmountMinor(value: number): number {
  assert(Number.isSafeInteger(value), `amount must be a safe integer, got ${value}`);
  assert(value > 0, `amount must be positive, got ${value}`);
  return value;
}

export function assertBalanceMinor(value: number): number {
  assert(Number.isSafeInteger(value), `balance must be a safe integer, got ${value}`);
  assert(value >= 0, `balance must not be negative, got ${value}`);
  return value;
}

/**
 * node-postgres returns bigint columns as strings (a JS number could lose precision).
 * Every bigint that is money passes through here, so a value beyond 2^53-1 crashes loudly
 * instead of being rounded.
 */
export function minorFromPg(value: string | number | bigint): number {
  const big = BigInt(value);
  assert(big <= BigInt(AMOUNT_MAX_MINOR), `money value ${big} is above the safe integer range`);
  assert(big >= -BigInt(AMOUNT_MAX_MINOR), `money value ${big} is below the safe integer range`);
  return Number(big);
}
