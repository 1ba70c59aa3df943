/**
 * Crash points for fault tests: named places in a step where a process can be made to die with
 * SIGKILL, at the worst moment (an effect done, its record not yet written). Only reachable
 * when a service runs with FAULT_INJECTION=true, armed one-shot through its /ops/crash route;
 * the supervisor then restarts the process and recovery must finish the work.
 */
import type { Logger } from "#packages/log/index.ts";

export const crashPoints = [
  /** transaction-service: the ledger debited A and credited B (or refused), the saga has not recorded it. */
  "after_transfer",
  /** transaction-service: the ledger credited a disbursement item's payee, the saga has not recorded it. */
  "after_post",
  /** transaction-service: the ledger refunded an item's payer, the saga has not recorded it. */
  "after_void",
  /** transaction-service: the ledger funded a disbursement, the saga has not recorded it. */
  "after_fund",
  /** transaction-service: the outbox batch reached Kafka, its rows are not deleted. */
  "after_outbox_send",
  /** transaction-service: a webhook was answered by its receiver, its outcome is not recorded. */
  "after_webhook_send",
  /** transaction-command-service: records written to MongoDB, no event sent, no offset committed. */
  "after_record_write",
] as const;
export type CrashPoint = (typeof crashPoints)[number];

export class CrashSwitch {
  readonly #armed = new Set<CrashPoint>();
  readonly #logger: Logger;
  readonly #onArm: Array<(point: CrashPoint) => void> = [];

  constructor(logger: Logger) {
    this.#logger = logger;
  }

  arm(point: CrashPoint): void {
    this.#armed.add(point);
    for (const listener of this.#onArm) listener(point);
  }

  /** Told of each point armed: a point reached on another thread (a worker) is armed there through it. */
  onArm(listener: (point: CrashPoint) => void): void {
    this.#onArm.push(listener);
  }

  armed(): CrashPoint[] {
    return [...this.#armed];
  }

  /** Die here, now, if this point is armed. */
  reached(point: CrashPoint): void {
    if (!this.#armed.has(point)) return;
    this.#logger.fatal({ point }, "crash point reached: SIGKILL");
    process.kill(process.pid, "SIGKILL");
  }
}

/** A switch that never fires, for code paths built without fault injection. */
export const noCrashes = { reached: (_point: CrashPoint): void => {} };
export type CrashHook = Pick<CrashSwitch, "reached">;
