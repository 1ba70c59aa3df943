import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { idempotencyKeySchema, userIdParamSchema } from "#packages/contracts/ids.ts";
import { pageLimitSchema } from "#packages/contracts/pagination.ts";
import { ApiError } from "#packages/http/errors.ts";
import {
  type HoldRow,
  hashBelowCost,
  hashPassword,
  PasswordHasher,
  passwordSchema,
  SCRYPT_LOG2_N_DEFAULT,
  toApiDeposit,
  toApiHold,
  toApiUser,
  type UserRow,
  usernameSchema,
  verifyPassword,
} from "../src/domain.ts";
import { refuse } from "../src/routes/refusals.ts";

describe("passwords", () => {
  it("hashes at OWASP's cost by default (N = 2^17, r = 8, p = 1) to a self-describing salted string", async () => {
    assert.equal(SCRYPT_LOG2_N_DEFAULT, 17);
    const stored = await hashPassword("correct horse battery");
    assert.match(stored, /^scrypt\$131072\$8\$1\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$/);
    assert.equal(await verifyPassword("correct horse battery", stored), true);
    assert.equal(hashBelowCost(stored, 17), false);
  });

  it("tells a hash below the configured cost, so that log-in can upgrade it", async () => {
    const cheap = await hashPassword("correct horse battery", 14);
    assert.match(cheap, /^scrypt\$16384\$8\$1\$/);
    assert.equal(hashBelowCost(cheap, 17), true);
    assert.equal(hashBelowCost(cheap, 14), false);
    assert.equal(hashBelowCost("scrypt$16384$4$1$AAAA$AAAA", 14), true);
  });

  it("hashes with bounded concurrency: past the queue, 503 with Retry-After at once", async () => {
    const hasher = new PasswordHasher({ log2_n: 14, concurrency_max: 1, queue_max: 1 });
    const running = hasher.hash("first password");
    const queued = hasher.hash("second password");
    const refused = await hasher.hash("third password").then(
      () => assert.fail("a third hash should not even queue"),
      (error: unknown) => error,
    );
    assert.ok(refused instanceof ApiError);
    assert.equal(refused.status, 503);
    assert.equal(refused.headers?.["retry-after"], "1");
    const [a, b] = await Promise.all([running, queued]);
    assert.equal(await hasher.verify("first password", a), true);
    assert.equal(await hasher.verify("second password", b), true);
  });

  it("rejects a wrong password", async () => {
    const stored = await hashPassword("correct horse battery", 14);
    assert.equal(await verifyPassword("correct horse batterY", stored), false);
    assert.equal(await verifyPassword("", stored), false);
  });

  it("salts: the same password hashes differently each time", async () => {
    const [a, b] = await Promise.all([hashPassword("same password", 14), hashPassword("same password", 14)]);
    assert.notEqual(a, b);
  });

  it("treats composed and decomposed unicode as the same password", async () => {
    const stored = await hashPassword("caf\u00e9-password", 14);
    assert.equal(await verifyPassword("cafe\u0301-password", stored), true);
  });

  it("throws on a malformed or out-of-bounds stored hash instead of answering false", async () => {
    await assert.rejects(verifyPassword("x", "plain-text-password"), /malformed/);
    await assert.rejects(
      verifyPassword("x", "scrypt$1048576$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAA=="),
      /malformed/,
    );
    await assert.rejects(verifyPassword("x", "scrypt$16384$8$1$AAAA$AAAAAAAAAAAAAAAAAAAAAA=="), /malformed/);
  });
});

describe("mapping rows to the API", () => {
  const created = new Date("2026-01-02T03:04:05.000Z");
  const userRow = {
    id: "42",
    username: "alice",
    balance_minor: "1500",
    created_at: created,
    updated_at: created,
    password_hash: "scrypt$16384$8$1$c2FsdA==$aGFzaA==",
    password: "should never leave",
  } satisfies UserRow & Record<string, unknown>;

  it("maps a user and never carries password fields, whatever the row holds", () => {
    const user = toApiUser(userRow);
    assert.deepEqual(user, {
      id: 42,
      username: "alice",
      balance: 1500,
      created_at: "2026-01-02T03:04:05.000Z",
      updated_at: "2026-01-02T03:04:05.000Z",
    });
    assert.doesNotMatch(JSON.stringify(user), /password|scrypt/);
  });

  it("crashes on money that cannot be a balance rather than rounding it", () => {
    assert.throws(() => toApiUser({ ...userRow, balance_minor: "9007199254740992" }), /invariant/);
    assert.throws(() => toApiUser({ ...userRow, balance_minor: "-1" }), /invariant/);
  });

  it("maps holds and deposits with numbers, not strings", () => {
    const hold: HoldRow = {
      transfer_id: "0190f5b4-1c2d-7a3b-8c4d-0123456789ab",
      source_user_id: "1",
      dest_user_id: "2",
      amount_minor: "300",
      state: "posted",
      source_balance_before_minor: "1000",
      dest_balance_before_minor: "9007199254740991",
      created_at: created,
      updated_at: created,
    };
    const api = toApiHold(hold);
    assert.equal(api.amount, 300);
    assert.equal(api.source_balance_before, 1000);
    assert.equal(api.dest_balance_before, Number.MAX_SAFE_INTEGER);
    assert.equal(
      toApiHold({ ...hold, state: "held", dest_balance_before_minor: null }).dest_balance_before,
      null,
    );
    const deposit = toApiDeposit({
      id: "7",
      user_id: "1",
      amount_minor: "5",
      balance_after_minor: "10",
      created_at: created,
    });
    assert.deepEqual(deposit, {
      id: 7,
      user_id: 1,
      amount: 5,
      balance_after: 10,
      created_at: created.toISOString(),
    });
  });
});

describe("validation", () => {
  it("usernames: 3-64 of [A-Za-z0-9_.-]", () => {
    for (const ok of ["abc", "a.b-c_d", "A".repeat(64), "user123"])
      assert.ok(usernameSchema.safeParse(ok).success, ok);
    for (const bad of ["ab", "A".repeat(65), "has space", "émile", "a/b", "", 123]) {
      assert.equal(usernameSchema.safeParse(bad).success, false, String(bad));
    }
  });

  it("passwords: 8-256 characters", () => {
    assert.ok(passwordSchema.safeParse("12345678").success);
    assert.ok(passwordSchema.safeParse("x".repeat(256)).success);
    assert.equal(passwordSchema.safeParse("1234567").success, false);
    assert.equal(passwordSchema.safeParse("x".repeat(257)).success, false);
  });

  it("page limits: digits only, 1..100, default 20", () => {
    assert.equal(pageLimitSchema.parse(undefined), 20);
    assert.equal(pageLimitSchema.parse("100"), 100);
    for (const bad of ["0", "101", "-1", "1e1", " 5", "abc", "", "2.5"]) {
      assert.equal(pageLimitSchema.safeParse(bad).success, false, bad);
    }
  });

  it("path ids: digits only", () => {
    assert.equal(userIdParamSchema.parse("17"), 17);
    for (const bad of ["0", "-1", "1e3", "0x10", " 7", "99999999999999999", "abc"]) {
      assert.equal(userIdParamSchema.safeParse(bad).success, false, bad);
    }
  });

  it("idempotency keys: 1-255 printable ASCII, no spaces", () => {
    assert.ok(idempotencyKeySchema.safeParse("0190f5b4-1c2d-7a3b-8c4d-0123456789ab").success);
    for (const bad of ["", "a b", "k".repeat(256), "tab\there", "ünï"]) {
      assert.equal(idempotencyKeySchema.safeParse(bad).success, false, bad);
    }
  });

  it("refusals carry their status and stable code", () => {
    const error = refuse("insufficient_funds", "not enough");
    assert.equal(error.status, 422);
    assert.equal(error.code, "insufficient_funds");
    assert.equal(refuse("hold_not_found", "x").status, 404);
    assert.equal(refuse("dest_unavailable", "x").status, 409);
  });
});
