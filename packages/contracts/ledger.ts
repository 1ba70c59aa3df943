/**
 * The ledger's internal contract: what transaction-service sends user-service under /internal
 * (the saga's two-phase steps, one at a time or in batches, and a disbursement's funding) and
 * what it answers. One module for both sides, as the Kafka messages have in messages.ts: the
 * routes validate and document with these schemas, and the saga's clients read answers with them.
 */
import { z } from "zod";
import { transferIdSchema, userIdSchema } from "./ids.ts";
import { amountMinorSchema, balanceMinorSchema } from "./money.ts";

// ---------------------------------------------------------------------------------------------
// Holds and the steps that move them: hold (source -> clearing), then post (clearing -> dest)
// or void (clearing -> source), each idempotent on the transfer id; or transfer, a hold and its
// post in one step (a credit that cannot land is refunded in the same step: dest_unavailable).

export const HOLD_STATES = ["held", "posted", "voided"] as const;
export const holdStateSchema = z.enum(HOLD_STATES);
export type HoldState = z.infer<typeof holdStateSchema>;

export const LEDGER_OPS = ["hold", "post", "void", "transfer"] as const;
export const ledgerOpSchema = z.enum(LEDGER_OPS);
export type LedgerOp = z.infer<typeof ledgerOpSchema>;

/**
 * The refusals each step can answer with. The saga maps some of them to a failure reason and
 * treats any other as a bug, so a code is never renamed or reused for another meaning.
 */
export const STEP_REFUSALS = {
  hold: ["same_wallet", "source_not_found", "dest_not_found", "insufficient_funds", "hold_mismatch"],
  post: ["hold_not_found", "hold_voided", "dest_unavailable"],
  void: ["hold_not_found", "hold_posted"],
  transfer: [
    "same_wallet",
    "source_not_found",
    "dest_not_found",
    "insufficient_funds",
    "hold_mismatch",
    "dest_unavailable",
  ],
} as const satisfies Record<LedgerOp, readonly string[]>;
export type StepRefusalCode<Op extends LedgerOp = LedgerOp> = (typeof STEP_REFUSALS)[Op][number];

export function isStepRefusal<Op extends LedgerOp>(op: Op, code: string): code is StepRefusalCode<Op> {
  return (STEP_REFUSALS[op] as readonly string[]).includes(code);
}

/**
 * The most operations one batch may carry. A batch is one transaction: it holds one advisory
 * lock per transfer (PostgreSQL's shared lock table) and its wallet locks until it commits, so a
 * large one makes the transfers that queue behind it wait longer. 100 amortises the round trip
 * and the commit almost fully. (The SQL function refuses more than 1000, a backstop.)
 */
export const LEDGER_BATCH_MAX = 100;

export const holdRequestSchema = z.strictObject({
  source_user_id: userIdSchema,
  dest_user_id: userIdSchema,
  amount: amountMinorSchema,
});
export type HoldRequest = z.infer<typeof holdRequestSchema> & { transfer_id: string };

export const ledgerOperationSchema = z.discriminatedUnion("op", [
  holdRequestSchema.extend({ op: z.literal("hold"), transfer_id: transferIdSchema }),
  z.strictObject({ op: z.literal("post"), transfer_id: transferIdSchema }),
  z.strictObject({ op: z.literal("void"), transfer_id: transferIdSchema }),
  holdRequestSchema.extend({ op: z.literal("transfer"), transfer_id: transferIdSchema }),
]);
export type LedgerOperation = z.infer<typeof ledgerOperationSchema>;

export const ledgerBatchRequestSchema = z.strictObject({
  operations: z.array(ledgerOperationSchema).min(1).max(LEDGER_BATCH_MAX),
});

const isoDate = z.iso.datetime({ offset: true });

/** A hold as the ledger answers it. */
export const holdSchema = z.object({
  transfer_id: transferIdSchema,
  state: holdStateSchema,
  source_user_id: userIdSchema,
  dest_user_id: userIdSchema,
  amount: amountMinorSchema,
  source_balance_before: balanceMinorSchema,
  dest_balance_before: balanceMinorSchema.nullable(),
  created_at: isoDate,
  updated_at: isoDate,
});

/** One step's answer in a batch: the hold as it now stands, or the refusal (same codes as the single-step routes). */
export const ledgerStepResultSchema = z.discriminatedUnion("ok", [
  z.object({ transfer_id: transferIdSchema, op: ledgerOpSchema, ok: z.literal(true), hold: holdSchema }),
  z.object({
    transfer_id: transferIdSchema,
    op: ledgerOpSchema,
    ok: z.literal(false),
    code: z.string(),
    message: z.string(),
  }),
]);

/**
 * The batch answer as the saga reads it: per step, the hold's state and the balances its record
 * needs, or the refusal's code. Only what the saga acts on is required.
 */
export const ledgerBatchAnswerSchema = z.object({
  success: z.literal(true),
  data: z.object({
    results: z.array(
      z.discriminatedUnion("ok", [
        z.object({
          transfer_id: z.string(),
          ok: z.literal(true),
          hold: holdSchema.pick({ state: true, source_balance_before: true }).extend({
            dest_balance_before: balanceMinorSchema.nullable().optional(),
          }),
        }),
        z.object({ transfer_id: z.string(), ok: z.literal(false), code: z.string(), message: z.string() }),
      ]),
    ),
  }),
});

// ---------------------------------------------------------------------------------------------
// Funding a disbursement: its items held out of the payer's wallet in one commit, or none.

/** The most items one funding may hold (the SQL function refuses more, too). */
export const FUNDING_ITEMS_MAX = 1_000;

/** Refusals that apply to the whole funding: every item answers the same one. */
export const FUNDING_BATCH_REFUSALS = ["insufficient_funds", "source_not_found", "funding_mismatch"] as const;
export const FUNDING_RESULTS = ["ok", "dest_not_found", ...FUNDING_BATCH_REFUSALS] as const;
export type FundingRefusal = Exclude<(typeof FUNDING_RESULTS)[number], "ok">;

export const fundingItemSchema = z.strictObject({
  transfer_id: transferIdSchema,
  dest_user_id: userIdSchema,
  amount: amountMinorSchema,
});
export type FundingItem = z.infer<typeof fundingItemSchema>;

export const fundingRequestSchema = z.strictObject({
  source_user_id: userIdSchema,
  items: z.array(fundingItemSchema).min(1).max(FUNDING_ITEMS_MAX),
});

/** A funding as the ledger applies it: the route's body with the disbursement id of its path. */
export interface FundingRequest {
  disbursement_id: string;
  source_user_id: number;
  items: readonly FundingItem[];
}

export const fundingItemResultSchema = z.object({
  transfer_id: transferIdSchema,
  result: z.enum(FUNDING_RESULTS),
  source_balance_before: z.number().int().nonnegative().optional(),
});

/** Per item: held (with the payer's balance before its hold), or why not. */
export type FundingItemResult =
  | { transfer_id: string; result: "ok"; source_balance_before: number }
  | { transfer_id: string; result: FundingRefusal };

export const fundingAnswerSchema = z.object({
  success: z.literal(true),
  data: z.object({ results: z.array(fundingItemResultSchema) }),
});
