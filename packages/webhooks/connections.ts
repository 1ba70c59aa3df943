/**
 * Kept-alive connections for deliveries, one agent per endpoint, origin and checked address. A
 * delivery still resolves and checks its URL on every attempt (address-guard.ts); it then takes
 * the agent of exactly that origin and address, so a socket it reuses was opened to an address
 * that passed the same check, and a DNS answer that changes (rebinding) gets an agent, and a
 * connection, of its own. Without this every delivery opened a connection and closed it: a
 * handshake on both sides per event, which a payer's burst of 1,000 events pays 1,000 times.
 * Agents are per endpoint, not per origin: endpoints that share a host never wait for each
 * other's sockets, so one slow endpoint still delays no other.
 */
import type { LookupAddress } from "node:dns";
import http from "node:http";
import https from "node:https";
import { assert } from "#packages/runtime/assert.ts";
import { pinnedLookup } from "./address-guard.ts";

export interface ConnectionLimits {
  /** Most sockets per agent (an endpoint's deliveries in flight never need more). */
  sockets_max: number;
  /** Most agents kept; the least recently used is closed past it. */
  agents_max: number;
  /** An idle kept-alive socket is closed after this long. */
  idle_ms: number;
}

export class DeliveryConnections {
  readonly #limits: ConnectionLimits;
  /** Insertion order is use order: the first entry is the least recently used. */
  readonly #agents = new Map<string, http.Agent>();

  constructor(limits: ConnectionLimits) {
    assert(limits.sockets_max >= 1 && limits.agents_max >= 1 && limits.idle_ms > 0, "connection limits");
    this.#limits = limits;
  }

  /** The agent of `endpoint_id` for `url`'s origin at the checked `address`. */
  agentFor(endpoint_id: string, url: URL, address: LookupAddress): http.Agent {
    const key = `${endpoint_id} ${url.protocol}//${url.host} ${address.address}`;
    const known = this.#agents.get(key);
    if (known !== undefined) {
      this.#agents.delete(key);
      this.#agents.set(key, known);
      return known;
    }
    const options = {
      keepAlive: true,
      maxSockets: this.#limits.sockets_max,
      maxFreeSockets: this.#limits.sockets_max,
      timeout: this.#limits.idle_ms,
      // Every socket of this agent goes to the checked address, whatever DNS says later.
      lookup: pinnedLookup(address) as never,
    };
    const agent = url.protocol === "https:" ? new https.Agent(options) : new http.Agent(options);
    this.#agents.set(key, agent);
    if (this.#agents.size > this.#limits.agents_max) {
      const [oldest_key, oldest] = this.#agents.entries().next().value as [string, http.Agent];
      this.#agents.delete(oldest_key);
      oldest.destroy();
    }
    return agent;
  }

  get size(): number {
    return this.#agents.size;
  }

  /** Closes every kept socket (the dispatcher has stopped). */
  close(): void {
    for (const agent of this.#agents.values()) agent.destroy();
    this.#agents.clear();
  }
}
