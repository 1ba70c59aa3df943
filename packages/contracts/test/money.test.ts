import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { transferIdSchema, userIdParamSchema, uuidv7 } from "../ids.ts";
import { AMOUNT_MAX_MINOR, amountMinorSchema, minorFromPg } from "../money.ts";

describe("money", () => {
  it("accepts exactly the positive safe integers as amounts", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: AMOUNT_MAX_MINOR }),
        (n) => amountMinorSchema.safeParse(n).success,
      ),
    );
    for (const bad of [0, -1, 1.5, Number.NaN, AMOUNT_MAX_MINOR + 1, 2 ** 53, "10", null, 1e300]) {
      assert.equal(amountMinorSchema.safeParse(bad).success, false, `${String(bad)} must be refused`);
    }
  });

  it("reads PostgreSQL bigints exactly and crashes beyond 2^53-1", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: -AMOUNT_MAX_MINOR, max: AMOUNT_MAX_MINOR }),
        (n) => minorFromPg(String(n)) === n,
      ),
    );
    assert.throws(() => minorFromPg("9007199254740992"));
  });
});

describe("ids", () => {
  it("makes time-ordered UUIDv7s that validate", () => {
    const a = uuidv7(1_000);
    const b = uuidv7(2_000);
    assert.ok(transferIdSchema.safeParse(a).success);
    assert.ok(a < b);
    assert.equal(a[14], "7");
    assert.match(a[19] ?? "", /[89ab]/, "RFC 9562 variant");
    assert.ok(a.startsWith("00000000-03e8-"), "48 bits of milliseconds first");
    const many = Array.from({ length: 1_000 }, () => uuidv7(3_000));
    assert.equal(new Set(many).size, many.length);
  });

  it("accepts only plain digits as a user id in a path", () => {
    assert.equal(userIdParamSchema.parse("42"), 42);
    for (const bad of ["0", "-1", "1e3", " 7", "0x10", "1.0", "", "99999999999999999"]) {
      assert.equal(userIdParamSchema.safeParse(bad).success, false, `${bad} must be refused`);
    }
  });
});
