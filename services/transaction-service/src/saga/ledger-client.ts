/**
 * The saga's calls to user-service's ledger (transfer: debit and credit in one step; post and
 * void of a disbursement item's hold, or of a hold made by an earlier version), keyed by
 * transfer id so any retry returns the first result. Concurrent steps of different transfers travel as one
 * batch (`POST /internal/transfers/batch`: one HTTP call, one ledger transaction); a lone step
 * goes at once as a batch of one. Each step's answer is one of: done (with the balances the
 * record needs), a definitive refusal (the saga moves to its failure branch), or no answer
 * (timeout, 5xx, network: the whole batch) which leaves the saga where it is for a later retry.
 */
import {
  type HoldState,
  isStepRefusal,
  type LedgerOp,
  type LedgerOperation,
  ledgerBatchAnswerSchema,
  type StepRefusalCode,
} from "#packages/contracts/ledger.ts";
import type { FailureReason } from "#packages/contracts/transfer.ts";
import { callJson } from "#packages/http/client.ts";
import { InvariantError } from "#packages/runtime/assert.ts";
import { Batcher } from "#packages/runtime/batcher.ts";
import { withSpan } from "#packages/tracing/index.ts";

export type LedgerAnswer =
  | { kind: "ok"; source_balance_before: number; dest_balance_before: number | null }
  | { kind: "rejected"; reason: FailureReason }
  /** A void found the hold posted: the money reached B (a post the saga had lost track of). */
  | { kind: "already_posted" };

/** The ledger said something the saga's state rules out: a bug, never retried into money movement. */
export class LedgerInvariantError extends InvariantError {}

export type Step = LedgerOperation;

/** The refusals the saga acts on, per step, and the failure each means; any other is a bug. */
const refusals: { [Op in LedgerOp]: Partial<Record<StepRefusalCode<Op>, FailureReason>> } = {
  hold: {
    insufficient_funds: "insufficient_funds",
    source_not_found: "source_not_found",
    dest_not_found: "dest_not_found",
  },
  post: { dest_unavailable: "dest_unavailable" },
  void: {},
  transfer: {
    insufficient_funds: "insufficient_funds",
    source_not_found: "source_not_found",
    dest_not_found: "dest_not_found",
    dest_unavailable: "dest_unavailable",
  },
};

function refusalReason(op: LedgerOp, code: string): FailureReason | undefined {
  const known: Partial<Record<string, FailureReason>> = refusals[op];
  return isStepRefusal(op, code) ? known[code] : undefined;
}

const settledState = {
  hold: null,
  post: "posted",
  void: "voided",
  transfer: "posted",
} as const satisfies Record<LedgerOp, HoldState | null>;

export interface LedgerLimits {
  timeout_ms: number;
  /** Most steps per call (user-service accepts at most LEDGER_BATCH_MAX). */
  batch_max: number;
  /** Most calls running at once, per lane (transfers; posts and voids). */
  in_flight_max: number;
  /** Most steps waiting for a call before callers are refused. */
  waiting_max: number;
}

export class LedgerClient {
  readonly #url: string;
  readonly #timeout_ms: number;
  readonly #headers: Record<string, string>;
  /**
   * Two lanes: transfers (a client's POST waits on them) and settlements (post and void of a
   * disbursement's items, which come in large batches). Apart, a POST never queues behind a
   * batch of settlements.
   */
  readonly #transfers: Batcher<Step, LedgerAnswer | Error>;
  readonly #settlements: Batcher<Step, LedgerAnswer | Error>;

  constructor(base_url: string, ledger_token: string, limits: LedgerLimits) {
    this.#url = `${base_url.replace(/\/$/, "")}/internal/transfers/batch`;
    this.#timeout_ms = limits.timeout_ms;
    this.#headers = { authorization: `Bearer ${ledger_token}` };
    const lane = (name: string) =>
      new Batcher<Step, LedgerAnswer | Error>({
        name,
        batch_max: limits.batch_max,
        in_flight_max: limits.in_flight_max,
        waiting_max: limits.waiting_max,
        key: (step) => step.transfer_id,
        run: (steps) => this.#call(steps),
      });
    this.#transfers = lane("ledger transfers");
    this.#settlements = lane("ledger settlements");
  }

  /** Debit and credit in one step; a credit that cannot land is refunded within it (rejected). */
  transfer(
    transfer_id: string,
    body: { source_user_id: number; dest_user_id: number; amount: number },
  ): Promise<LedgerAnswer> {
    return this.#step({ op: "transfer", transfer_id, ...body });
  }

  post(transfer_id: string): Promise<LedgerAnswer> {
    return this.#step({ op: "post", transfer_id });
  }

  void(transfer_id: string): Promise<LedgerAnswer> {
    return this.#step({ op: "void", transfer_id });
  }

  async #step(step: Step): Promise<LedgerAnswer> {
    const answer = await (step.op === "transfer" ? this.#transfers : this.#settlements).submit(step);
    if (answer instanceof Error) throw answer;
    return answer;
  }

  /** One call for the batch; per step, its answer or the error that step alone raises. */
  async #call(steps: Step[]): Promise<Array<LedgerAnswer | Error>> {
    const response = await withSpan(
      "POST /internal/transfers/batch",
      { kind: "client", attributes: { "ledger.batch_size": steps.length } },
      () =>
        callJson(this.#url, {
          method: "POST",
          body: { operations: steps },
          timeout_ms: this.#timeout_ms,
          headers: this.#headers,
        }),
    );
    return readBatchAnswer(steps, response);
  }
}

/**
 * The ledger's answer to one batch call, per step: its answer, or the error that step alone
 * raises. Throws when the whole call failed (a plain Error for a 5xx, which the saga retries; a
 * LedgerInvariantError for anything a correct client and ledger never produce).
 */
export function readBatchAnswer(
  steps: readonly Step[],
  response: { status: number; body: unknown },
): Array<LedgerAnswer | Error> {
  if (response.status !== 200) {
    const what = `ledger batch of ${steps.length} answered ${response.status} ${JSON.stringify(response.body)}`;
    // 5xx: the ledger (or its database) could not answer; the saga retries. A 4xx refuses the
    // whole request (credentials, or a batch the client should never build): a bug.
    if (response.status >= 500) throw new Error(what);
    throw new LedgerInvariantError(what);
  }
  const parsed = ledgerBatchAnswerSchema.safeParse(response.body);
  if (!parsed.success || parsed.data.data.results.length !== steps.length) {
    throw new LedgerInvariantError(`ledger batch: unexpected answer ${JSON.stringify(response.body)}`);
  }
  const results = parsed.data.data.results;
  return steps.map((step, i) => {
    const result = results[i];
    if (result === undefined || result.transfer_id !== step.transfer_id) {
      return new LedgerInvariantError(`ledger batch: answer ${i} is not for transfer ${step.transfer_id}`);
    }
    if (!result.ok) {
      if (step.op === "void" && result.code === "hold_posted") return { kind: "already_posted" };
      const reason = refusalReason(step.op, result.code);
      if (reason !== undefined) return { kind: "rejected", reason };
      // A refusal the saga never expects (hold_voided, hold_mismatch...): never retried into money.
      return new LedgerInvariantError(
        `${step.op} ${step.transfer_id}: ledger refused ${result.code}: ${result.message}`,
      );
    }
    const expected = settledState[step.op];
    if (expected !== null && result.hold.state !== expected) {
      return new LedgerInvariantError(`${step.op} ${step.transfer_id}: hold is ${result.hold.state}`);
    }
    return {
      kind: "ok",
      source_balance_before: result.hold.source_balance_before,
      dest_balance_before: result.hold.dest_balance_before ?? null,
    };
  });
}
