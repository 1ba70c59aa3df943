/**
 * The shapes of user-service's HTTP API: zod schemas validate every input before any query
 * (unknown fields refused), and describe every success response, so the serializer drops anything
 * a handler did not mean to send. The ledger's internal shapes are the contract's
 * (packages/contracts/ledger.ts).
 */
import { z } from "zod";
import {
  idempotencyKeySchema,
  transferIdSchema,
  userIdParamSchema,
  userIdSchema,
} from "#packages/contracts/ids.ts";
import { amountMinorSchema, balanceMinorSchema } from "#packages/contracts/money.ts";
import { pageLimitSchema } from "#packages/contracts/pagination.ts";
import { envelope } from "#packages/http/openapi.ts";
import { passwordSchema, usernameSchema } from "../domain.ts";

// ---------------------------------------------------------------------------------------------
// Response shapes.

export const isoDate = z.iso.datetime({ offset: true });

export const userSchema = z.object({
  id: userIdSchema,
  username: z.string(),
  balance: balanceMinorSchema,
  created_at: isoDate,
  updated_at: isoDate,
});

export const depositSchema = z.object({
  id: z.number().int().positive(),
  user_id: userIdSchema,
  amount: amountMinorSchema,
  balance_after: balanceMinorSchema,
  created_at: isoDate,
});

const count = z.number().int().nonnegative();
const bigSum = z.string().regex(/^-?[0-9]+$/);
export const auditSchema = z.object({
  accounts: count,
  wallets: count,
  journal_entries: count,
  postings: count,
  total_wallet_balance: bigSum,
  clearing_balance: bigSum,
  external_balance: bigSum,
  total_deposited: bigSum,
  sum_all_entries: bigSum,
  wallets_mismatching_journal: z.array(userIdSchema),
  negative_wallets: count,
  unbalanced_postings: count,
  entries_without_account: count,
  held_amount: bigSum,
  holds_by_state: z.object({ held: count, posted: count, voided: count }),
  wallets_understating_held_out: count,
  consistent: z.boolean(),
});

// ---------------------------------------------------------------------------------------------
// Request shapes.

export const userParams = z.strictObject({ id: userIdParamSchema });
export const transferParams = z.strictObject({ transfer_id: transferIdSchema });

export const createUserBody = z.strictObject({
  username: usernameSchema,
  password: passwordSchema,
  balance: balanceMinorSchema.optional(),
});

export const updateUserBody = z
  .strictObject({
    username: usernameSchema.optional(),
    password: passwordSchema.optional(),
    /** Required with `password`: a stolen access token alone cannot take the account over. */
    current_password: z.string().min(1).max(256).optional(),
  })
  .refine((body) => body.username !== undefined || body.password !== undefined, {
    error: "give username, password or both",
  })
  // The refinement, as the OpenAPI document can say it (current_password alone changes nothing).
  .meta({ anyOf: [{ required: ["username"] }, { required: ["password"] }] });

export const listUsersQuery = z.strictObject({
  limit: pageLimitSchema,
  cursor: userIdParamSchema.optional(),
});

export const depositBody = z.strictObject({ amount: amountMinorSchema });
// Loose: every other request header passes through untouched.
export const depositHeaders = z.looseObject({ "idempotency-key": idempotencyKeySchema.optional() });

// post and void take no input but the path; their body is `{}` (what the OpenAPI document can say:
// with a body schema, a request body is required).
export const emptyBody = z.strictObject({});

/**
 * Login takes any username and password up to the sign-up limits: a malformed one simply matches
 * nobody, and is answered like any wrong credential (401), so the rules leak nothing either.
 */
export const loginBody = z.strictObject({
  username: z.string().min(1).max(256),
  password: z.string().min(1).max(256),
});

export const userResponse = envelope(z.object({ user: userSchema }));
