/** The receiver lives beside the chaos run that uses it too. */
export { type Received, WebhookReceiver } from "../../ops/webhook-receiver.ts";
