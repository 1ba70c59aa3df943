/**
 * SSRF guard for webhook URLs: a user-chosen URL must not make the service call into its own
 * network. Only http(s) URLs without credentials pass; the host is resolved (every address) and
 * refused when any address is loopback, private, link-local, unique-local, shared (CGNAT),
 * multicast, broadcast, unspecified or reserved, in IPv4 or IPv6 (IPv4-mapped IPv6 included),
 * unless the operator allows private addresses (a development stack on loopback). The caller
 * then connects to the address that was checked (see pinnedLookup), so a DNS answer that changes
 * between the check and the connect (rebinding) cannot redirect the request.
 */
import { lookup as dnsLookup, type LookupAddress } from "node:dns";
import { BlockList, isIP } from "node:net";
import { withTimeout } from "#packages/runtime/index.ts";

export class AddressRefusedError extends Error {}

/** Resolves a host name to every address it has (node:dns lookup with all: true by default). */
export type Resolver = (host: string) => Promise<LookupAddress[]>;

const dns_timeout_ms = 5_000;

export const systemResolver: Resolver = (host) =>
  withTimeout(
    new Promise<LookupAddress[]>((resolve, reject) => {
      dnsLookup(host, { all: true, verbatim: true }, (error, addresses) =>
        error ? reject(error) : resolve(addresses),
      );
    }),
    dns_timeout_ms,
    `DNS lookup of ${host}`,
  );

const blocked = new BlockList();
for (const [network, prefix] of [
  ["0.0.0.0", 8], // "this network", unspecified
  ["10.0.0.0", 8], // private
  ["100.64.0.0", 10], // shared address space (carrier-grade NAT)
  ["127.0.0.0", 8], // loopback
  ["169.254.0.0", 16], // link-local (cloud metadata services live here)
  ["172.16.0.0", 12], // private
  ["192.0.0.0", 24], // IETF protocol assignments
  ["192.0.2.0", 24], // documentation
  ["192.168.0.0", 16], // private
  ["198.18.0.0", 15], // benchmarking
  ["198.51.100.0", 24], // documentation
  ["203.0.113.0", 24], // documentation
  ["224.0.0.0", 4], // multicast
  ["240.0.0.0", 4], // reserved, and 255.255.255.255 broadcast
] as const) {
  blocked.addSubnet(network, prefix, "ipv4");
}
for (const [network, prefix] of [
  ["::", 128], // unspecified
  ["::1", 128], // loopback
  ["64:ff9b:1::", 48], // local-use IPv4/IPv6 translation
  ["100::", 64], // discard-only
  ["2001:db8::", 32], // documentation
  ["fc00::", 7], // unique-local
  ["fe80::", 10], // link-local
  ["fec0::", 10], // site-local (deprecated, still routed by some networks)
  ["ff00::", 8], // multicast
] as const) {
  blocked.addSubnet(network, prefix, "ipv6");
}

/**
 * The IPv4 address carried inside an IPv6 one that the kernel or a gateway turns into IPv4
 * traffic: IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d), NAT64 (64:ff9b::a.b.c.d)
 * and 6to4 (2002:aabb:ccdd::).
 */
function embeddedIpv4(address: string): string | undefined {
  const groups = expandIpv6(address);
  if (groups === undefined) return undefined;
  const v4 = (hi: number, lo: number) => `${hi >> 8}.${hi & 0xff}.${lo >> 8}.${lo & 0xff}`;
  const zero = (from: number, to: number) => groups.slice(from, to).every((g) => g === 0);
  const [g0, g1, g2, , , g5, g6, g7] = groups as [
    number,
    number,
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  if (zero(0, 5) && (g5 === 0xffff || g5 === 0) && !(g5 === 0 && g6 === 0)) return v4(g6, g7);
  if (g0 === 0x64 && g1 === 0xff9b && zero(2, 6)) return v4(g6, g7);
  if (g0 === 0x2002) return v4(g1, g2);
  return undefined;
}

/** The eight 16-bit groups of an IPv6 address (dotted IPv4 tail accepted), or undefined. */
function expandIpv6(address: string): number[] | undefined {
  let text = address.split("%")[0] ?? "";
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (dotted?.[1] !== undefined) {
    const [a, b, c, d] = dotted[1].split(".").map(Number) as [number, number, number, number];
    text = `${text.slice(0, dotted.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.split("::") as [string, string | undefined];
  const parse = (part: string) => (part === "" ? [] : part.split(":").map((g) => Number.parseInt(g, 16)));
  const left = parse(head);
  const right = tail === undefined ? [] : parse(tail);
  const fill = tail === undefined ? 0 : 8 - left.length - right.length;
  const groups = [...left, ...new Array<number>(Math.max(fill, 0)).fill(0), ...right];
  return groups.length === 8 && groups.every((g) => Number.isInteger(g) && g >= 0 && g <= 0xffff)
    ? groups
    : undefined;
}

/** Why an address may not be called (undefined: it is a public unicast address). */
export function refusalOf(address: string): string | undefined {
  const family = isIP(address);
  if (family === 4) return blocked.check(address, "ipv4") ? `${address} is not a public address` : undefined;
  if (family !== 6) return `${address} is not an IP address`;
  const v4 = embeddedIpv4(address);
  if (v4 !== undefined && blocked.check(v4, "ipv4")) return `${address} carries ${v4}, not a public address`;
  return blocked.check(address, "ipv6") ? `${address} is not a public address` : undefined;
}

export interface CheckedUrl {
  url: URL;
  /** The host name as written (for the Host header and TLS server name). */
  host: string;
  /** The address to connect to: checked, and pinned for the connection. */
  address: LookupAddress;
}

export interface AddressGuardOptions {
  /** Allow loopback, private and link-local addresses (a development or test stack only). */
  allow_private: boolean;
  resolve?: Resolver;
}

/** Checks the URL and resolves it; throws AddressRefusedError with the reason when it may not be called. */
export async function checkUrl(raw: string, options: AddressGuardOptions): Promise<CheckedUrl> {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new AddressRefusedError("not a valid URL");
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new AddressRefusedError(`scheme ${url.protocol} is not allowed: use http or https`);
  }
  if (url.username !== "" || url.password !== "") {
    throw new AddressRefusedError("credentials in the URL are not allowed");
  }
  // URL keeps IPv6 literals in brackets.
  const host = url.hostname.replace(/^\[(.*)\]$/, "$1");
  const family = isIP(host);
  const addresses =
    family === 0 ? await resolveAll(host, options.resolve ?? systemResolver) : [{ address: host, family }];
  if (!options.allow_private) {
    for (const { address } of addresses) {
      const reason = refusalOf(address);
      if (reason !== undefined) throw new AddressRefusedError(`${host}: ${reason}`);
    }
  }
  return { url, host, address: addresses[0] as LookupAddress };
}

async function resolveAll(host: string, resolve: Resolver): Promise<LookupAddress[]> {
  let addresses: LookupAddress[];
  try {
    addresses = await resolve(host);
  } catch (error) {
    throw new AddressRefusedError(`${host} does not resolve: ${(error as Error).message}`);
  }
  if (addresses.length === 0) throw new AddressRefusedError(`${host} has no address`);
  return addresses;
}

/**
 * A `lookup` for node:http(s) that answers with the checked address only, whatever the host name:
 * the connection goes where the guard looked, with no second DNS query.
 */
export function pinnedLookup(address: LookupAddress) {
  return (
    _host: string,
    options: { all?: boolean },
    callback: (error: Error | null, address: string | LookupAddress[], family?: number) => void,
  ): void => {
    if (options.all) callback(null, [address]);
    else callback(null, address.address, address.family);
  };
}
