/**
 * Pure decision logic of the record writer: given what the store holds and a batch of
 * RecordTransfer commands, decide what to write. Statuses only move forward; a duplicate or an
 * older snapshot is a no-op that still answers "recorded" (the saga may be waiting for that
 * answer after a redelivery); two different final statuses for one transfer are a saga bug
 * and go to dead letters rather than overwrite money history.
 */
import type { RecordTransferCommand } from "#packages/contracts/messages.ts";
import { statusRank, type TransferSnapshot, type TransferStatus } from "#packages/contracts/transfer.ts";

export interface StoredRecord {
  rank: number;
  status: TransferStatus;
}

export type Outcome =
  | { kind: "recorded"; command: RecordTransferCommand }
  | { kind: "conflict"; command: RecordTransferCommand; reason: string };

export interface WritePlan {
  /** One write per transfer id: the most advanced snapshot seen in the batch. */
  writes: Array<{ mode: "insert" | "update"; snapshot: TransferSnapshot }>;
  /** One outcome per command, in input order. */
  outcomes: Outcome[];
}

export function planWrites(
  stored: ReadonlyMap<string, StoredRecord>,
  commands: RecordTransferCommand[],
): WritePlan {
  const view = new Map(stored);
  const pending = new Map<string, { mode: "insert" | "update"; snapshot: TransferSnapshot }>();
  const outcomes: Outcome[] = [];

  for (const command of commands) {
    const snapshot = command.snapshot;
    const rank = statusRank(snapshot.status);
    const current = view.get(snapshot.id);
    if (current === undefined) {
      view.set(snapshot.id, { rank, status: snapshot.status });
      pending.set(snapshot.id, { mode: "insert", snapshot });
      outcomes.push({ kind: "recorded", command });
      continue;
    }
    if (current.rank === rank && rank === statusRank("COMPLETED") && current.status !== snapshot.status) {
      outcomes.push({
        kind: "conflict",
        command,
        reason: `record ${snapshot.id} is ${current.status}; refusing to make it ${snapshot.status}`,
      });
      continue;
    }
    if (rank > current.rank) {
      view.set(snapshot.id, { rank, status: snapshot.status });
      const mode = pending.get(snapshot.id)?.mode ?? "update";
      pending.set(snapshot.id, { mode, snapshot });
    }
    outcomes.push({ kind: "recorded", command });
  }
  return { writes: [...pending.values()], outcomes };
}
