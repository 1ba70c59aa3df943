/**
 * Test fixtures for webhooks: the tables in a schema of their own (webhooks_test) in the saga's
 * test database, and a real HTTP receiver on loopback that records what it is sent.
 */
import { once } from "node:events";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { createLogger } from "#packages/log/index.ts";
import { createPool, type Pool } from "#packages/pg/index.ts";
import { schemaSql } from "../store.ts";

export const logger = createLogger("webhooks-test", "silent");
const schema = "webhooks_test";

/** A pool whose sessions see only the webhook tables, created anew. */
export async function freshTables(): Promise<Pool> {
  const base = process.env.TEST_SAGA_DATABASE_URL;
  if (!base) throw new Error("TEST_SAGA_DATABASE_URL is not set: run through `npm test`");
  const admin = createPool(base, { max: 1, application_name: "webhooks-test" });
  try {
    await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await admin.query(`CREATE SCHEMA ${schema}`);
  } finally {
    await admin.end();
  }
  const pool = createPool(tablesUrl(), { max: 10, application_name: "webhooks-test" });
  await pool.query(schemaSql());
  return pool;
}

/** The test database's URL with the webhook tables' schema first on the search path. */
export function tablesUrl(): string {
  const url = new URL(process.env.TEST_SAGA_DATABASE_URL ?? "");
  url.searchParams.set("options", `-c search_path=${schema}`);
  return url.toString();
}

export interface Received {
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
  at_ms: number;
  /** The client's end of the connection the request came on (address:port). */
  socket: string;
}

/** What the receiver answers on a path: a status after an optional delay. */
export type Behaviour = (count: number) => { status: number; delay_ms?: number };

const answerNoContent: Behaviour = () => ({ status: 204 });

export class Receiver {
  readonly received: Received[] = [];
  readonly answered: Received[] = [];
  readonly #behaviours = new Map<string, Behaviour>();
  readonly #server: Server;

  private constructor(server: Server) {
    this.#server = server;
  }

  static async start(): Promise<Receiver> {
    let receiver: Receiver | undefined;
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", async () => {
        const r = receiver as Receiver;
        const path = req.url ?? "/";
        const got: Received = {
          path,
          headers: req.headers,
          body: Buffer.concat(chunks).toString("utf8"),
          at_ms: performance.now(),
          socket: `${req.socket.remoteAddress}:${req.socket.remotePort}`,
        };
        r.received.push(got);
        const count = r.received.filter((x) => x.path === path).length;
        const { status, delay_ms } = (r.#behaviours.get(path) ?? answerNoContent)(count);
        if (delay_ms !== undefined) await sleep(delay_ms);
        r.answered.push(got);
        res.writeHead(status).end();
      });
    });
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    receiver = new Receiver(server);
    return receiver;
  }

  get port(): number {
    return (this.#server.address() as AddressInfo).port;
  }

  url(path: string, host = "127.0.0.1"): string {
    return `http://${host}:${this.port}${path}`;
  }

  on(path: string, behaviour: Behaviour): void {
    this.#behaviours.set(path, behaviour);
  }

  at(path: string): Received[] {
    return this.received.filter((r) => r.path === path);
  }

  async close(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

/** Polls until the condition holds; fails with `what` after timeout_ms. */
export async function until(what: string, condition: () => boolean | Promise<boolean>, timeout_ms = 15_000) {
  const deadline = Date.now() + timeout_ms;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}
