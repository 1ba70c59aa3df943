import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { AddressRefusedError, checkUrl, type Resolver, refusalOf } from "../address-guard.ts";

const refused = { allow_private: false };
const resolverOf =
  (table: Record<string, string[]>): Resolver =>
  async (host) => {
    const addresses = table[host];
    if (addresses === undefined) throw new Error(`ENOTFOUND ${host}`);
    return addresses.map((address) => ({ address, family: address.includes(":") ? 6 : 4 }));
  };

describe("SSRF guard: address classes", () => {
  const classes: Record<string, string[]> = {
    "IPv4 loopback": ["127.0.0.1", "127.255.255.254"],
    "IPv4 private": ["10.0.0.1", "172.16.0.1", "172.31.255.255", "192.168.1.1"],
    "IPv4 link-local (cloud metadata)": ["169.254.169.254"],
    "IPv4 shared (CGNAT)": ["100.64.0.1"],
    "IPv4 unspecified and this-network": ["0.0.0.0", "0.1.2.3"],
    "IPv4 multicast": ["224.0.0.1", "239.255.255.250"],
    "IPv4 broadcast and reserved": ["255.255.255.255", "240.0.0.1"],
    "IPv6 loopback": ["::1"],
    "IPv6 unspecified": ["::"],
    "IPv6 link-local": ["fe80::1", "fe80::1%eth0"],
    "IPv6 unique-local": ["fc00::1", "fd12:3456:789a::1"],
    "IPv6 multicast": ["ff02::1"],
    "IPv4-mapped IPv6 of private and loopback": ["::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:a9fe:a9fe"],
    "NAT64 and 6to4 of private": ["64:ff9b::7f00:1", "2002:c0a8:0101::1"],
  };
  for (const [name, addresses] of Object.entries(classes)) {
    it(`refuses ${name}`, async () => {
      for (const address of addresses) {
        assert.notEqual(refusalOf(address), undefined, `${address} must be refused`);
        const host = address.includes(":") ? `[${address.split("%")[0]}]` : address;
        await assert.rejects(checkUrl(`https://${host}/hook`, refused), AddressRefusedError, address);
      }
    });
  }

  it("lets public unicast addresses through, IPv4, IPv6 and IPv4-mapped", () => {
    for (const address of [
      "93.184.216.34",
      "8.8.8.8",
      "2606:4700:4700::1111",
      "::ffff:8.8.8.8",
      "172.32.0.1",
    ]) {
      assert.equal(refusalOf(address), undefined, address);
    }
  });

  it("allows private addresses when the operator says so (development stack)", async () => {
    const checked = await checkUrl("http://127.0.0.1:9/hook", { allow_private: true });
    assert.equal(checked.address.address, "127.0.0.1");
  });
});

describe("SSRF guard: URLs and DNS", () => {
  it("accepts only http and https, without credentials", async () => {
    for (const url of [
      "ftp://93.184.216.34/x",
      "file:///etc/passwd",
      "gopher://93.184.216.34/",
      "not a url",
    ]) {
      await assert.rejects(checkUrl(url, refused), AddressRefusedError, url);
    }
    await assert.rejects(checkUrl("https://user:pw@93.184.216.34/", refused), /credentials/);
    await checkUrl("https://93.184.216.34/hook", refused);
  });

  it("sees through the other spellings of an address that URLs admit", async () => {
    for (const url of [
      "http://2130706433/",
      "http://0x7f.1/",
      "http://0177.0.0.1/",
      "http://[::ffff:7f00:1]/",
      "http://127.1/",
    ]) {
      await assert.rejects(checkUrl(url, refused), /not a public address|carries/, url);
    }
  });

  it("refuses a host when any of its addresses is private, after resolving all of them", async () => {
    const resolve = resolverOf({
      "mixed.example": ["93.184.216.34", "10.0.0.7"],
      "v6-loopback.example": ["2606:4700:4700::1111", "::1"],
      "public.example": ["93.184.216.34", "2606:4700:4700::1111"],
    });
    await assert.rejects(
      checkUrl("https://mixed.example/h", { allow_private: false, resolve }),
      /10\.0\.0\.7/,
    );
    await assert.rejects(checkUrl("https://v6-loopback.example/h", { allow_private: false, resolve }), /::1/);
    const ok = await checkUrl("https://public.example/h", { allow_private: false, resolve });
    assert.equal(ok.address.address, "93.184.216.34");
    await assert.rejects(
      checkUrl("https://missing.example/h", { allow_private: false, resolve }),
      /does not resolve/,
    );
  });

  it("resolves through the system resolver: localhost is loopback, refused", async () => {
    await assert.rejects(checkUrl("http://localhost:8080/h", refused), /not a public address/);
  });
});
