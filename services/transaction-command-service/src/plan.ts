/**
 * Pure decision logic of the record writer for one batch of RecordTransfer commands: keep the
 * most advanced snapshot per transfer (statuses only move forward), and refuse a batch that
 * asks for two different final statuses of one transfer (a saga bug: dead letters, never an
 * overwrite of money history). What the store already holds is handled by the guarded writes
 * in records.ts, which report the same kind of conflict.
 */
import type { RecordTransferCommand } from "#packages/contracts/messages.ts";
import { statusRank, type TransferRecord } from "#packages/contracts/transfer.ts";

export type Outcome =
  | { kind: "recorded"; command: RecordTransferCommand }
  | { kind: "conflict"; command: RecordTransferCommand; reason: string };

export interface WritePlan {
  /** One write per transfer id: the most advanced snapshot seen in the batch. */
  writes: TransferRecord[];
  /** One outcome per command, in input order (conflicts found in the store are added later). */
  outcomes: Outcome[];
}

export function planWrites(commands: RecordTransferCommand[]): WritePlan {
  const best = new Map<string, TransferRecord>();
  const outcomes: Outcome[] = [];
  for (const command of commands) {
    const snapshot = command.snapshot;
    const current = best.get(snapshot.id);
    if (
      current !== undefined &&
      statusRank(current.status) === 2 &&
      statusRank(snapshot.status) === 2 &&
      current.status !== snapshot.status
    ) {
      outcomes.push({
        kind: "conflict",
        command,
        reason: `record ${snapshot.id} is ${current.status}; refusing to make it ${snapshot.status}`,
      });
      continue;
    }
    if (current === undefined || statusRank(snapshot.status) > statusRank(current.status))
      best.set(snapshot.id, snapshot);
    outcomes.push({ kind: "recorded", command });
  }
  return { writes: [...best.values()], outcomes };
}
