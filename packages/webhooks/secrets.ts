/**
 * Signing keys and signatures, in the Standard Webhooks form. A key is 32 random bytes, written
 * `whsec_<base64>` (the form receivers paste into the library's `new Webhook(secret)`). Signing
 * is done by the specification's own library, never by hand. During a rotation grace period a
 * delivery carries one v1 signature per valid key, space-separated, as the specification allows.
 */
import { randomBytes } from "node:crypto";
import { Webhook } from "standardwebhooks";
import { assert } from "#packages/runtime/assert.ts";
import { BoundedMap } from "#packages/runtime/bounded-map.ts";

const key_bytes = 32;

export function newSecret(): string {
  return `whsec_${randomBytes(key_bytes).toString("base64")}`;
}

export interface SignedHeaders {
  "webhook-id": string;
  "webhook-timestamp": string;
  "webhook-signature": string;
}

/**
 * Signers by key, kept so that a burst to one endpoint decodes its key once, not once per event.
 * Bounded: past `signers_max` keys the oldest is dropped (it is made again if still in use).
 */
const signers = new BoundedMap<string, Webhook>(1_024);

function signerOf(secret: string): Webhook {
  let signer = signers.get(secret);
  if (signer === undefined) {
    signer = new Webhook(secret);
    signers.set(secret, signer);
  }
  return signer;
}

/** The three Standard Webhooks headers for one attempt of one message, signed with every key given. */
export function signHeaders(webhook_id: string, at: Date, body: string, secrets: string[]): SignedHeaders {
  assert(secrets.length > 0, "a webhook is signed with at least one key");
  const signatures = secrets.map((secret) => signerOf(secret).sign(webhook_id, at, body));
  return {
    "webhook-id": webhook_id,
    "webhook-timestamp": String(Math.floor(at.getTime() / 1000)),
    "webhook-signature": signatures.join(" "),
  };
}
