// Copies of the services behind HAProxy (`npm start -- --replicas N`): copy k (1..N) of a service
// listens on its port + 100·k and its internal port + 100·k (transaction-service's copies on 8103
// and 8203, internal 9103 and 9203); HAProxy holds the usual ports (8000-8003 public, 9000-9003
// internal on INTERNAL_HOST), so clients and the other services keep their URLs.
import { chmodSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { assert } from "#packages/runtime/assert.ts";
import { aptInstall } from "./engine.ts";
import { type ServiceName, type StackEnv, servicePorts } from "./env.ts";
import { confDir, logsDir } from "./paths.ts";
import { which } from "./proc.ts";
import type { ServiceSpec } from "./supervisor.ts";

export const COPY_PORT_STEP = 100;
/** Copies of a service beyond this many would collide with the next copy's ports of other services. */
export const replicas_max = 9;

/** Copy k of a service: its own public and internal ports, everything else as the service's. */
export function copySpec(spec: ServiceSpec, service: ServiceName, copy: number): ServiceSpec {
  const { env: portEnv, internalEnv } = servicePorts[service];
  const port = spec.port + COPY_PORT_STEP * copy;
  const internal = Number(spec.env[internalEnv]) + COPY_PORT_STEP * copy;
  return {
    ...spec,
    name: `${service}-${copy}`,
    port,
    env: { ...spec.env, [portEnv]: String(port), [internalEnv]: String(internal) },
  };
}

/** N copies of every service in specs (named after their service), in place of the one copy each. */
export function copySpecs(specs: readonly ServiceSpec[], replicas: number): ServiceSpec[] {
  assert(Number.isInteger(replicas), `replicas ${replicas} must be an integer`);
  assert(replicas >= 1, `replicas ${replicas} must be at least 1`);
  assert(replicas <= replicas_max, `replicas ${replicas} must be at most ${replicas_max}`);
  return specs.flatMap((spec) =>
    Array.from({ length: replicas }, (_, k) => copySpec(spec, spec.name as ServiceName, k + 1)),
  );
}

/**
 * HAProxy's configuration: per service a public and an internal frontend on the service's usual
 * ports, each balancing over the copies that pass `GET /health/ready` (the engines a copy needs
 * for its own requests: a broker that all copies share being slow takes none of them out).
 *
 * Retries: only a failed connection is retried, on another copy (`retry-on conn-failure`,
 * `option redispatch`). Such a request never reached a service, so retrying is safe for every
 * method, POST included. A request that reached a copy which then died is never retried here: the
 * balancer cannot know whether it took effect; the client retries it with its Idempotency-Key.
 */
export function haproxyConfig(env: StackEnv, services: readonly ServiceName[], replicas: number): string {
  const host = env.HOST || "127.0.0.1";
  const internalHost = env.INTERNAL_HOST || "127.0.0.1";
  const sections = services.flatMap((service) => {
    const { env: portEnv, internalEnv } = servicePorts[service];
    const port = Number(env[portEnv] ?? servicePorts[service].port);
    const internal = Number(env[internalEnv]);
    return [
      proxy(`${service}`, `${host}:${port}`, port, replicas),
      proxy(`${service}-internal`, `${internalHost}:${internal}`, internal, replicas),
    ];
  });
  return `# Written by scripts/stack/balancer.ts at every start; edits are overwritten.
global
  maxconn 4096

defaults
  mode http
  log stderr format raw local0 warning
  option httplog
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  timeout http-request 10s
  timeout queue 5s
  retries 2
  retry-on conn-failure
  option redispatch 1
  # A copy is out after two failed checks 1 s apart and back after two good ones.
  default-server inter 1s fall 2 rise 2

${sections.join("\n")}`;
}

function proxy(name: string, bind: string, port: number, replicas: number): string {
  const servers = Array.from(
    { length: replicas },
    (_, k) => `  server copy${k + 1} 127.0.0.1:${port + COPY_PORT_STEP * (k + 1)} check`,
  );
  return `frontend ${name}
  bind ${bind}
  default_backend ${name}

backend ${name}
  balance leastconn
  option httpchk GET /health/ready
  http-check expect status 200
${servers.join("\n")}
`;
}

const haproxyConf = join(confDir, "haproxy", "haproxy.cfg");

/** Installs HAProxy (Debian package) if missing, writes its config, and returns its supervised process. */
export async function balancerSpec(
  env: StackEnv,
  services: readonly ServiceName[],
  replicas: number,
): Promise<ServiceSpec> {
  if (which("haproxy") === undefined) await aptInstall(["haproxy"], join(logsDir, "install-haproxy.log"));
  const haproxy = which("haproxy") ?? "/usr/sbin/haproxy";
  mkdirSync(join(confDir, "haproxy"), { recursive: true });
  writeFileSync(haproxyConf, haproxyConfig(env, services, replicas), { mode: 0o600 });
  chmodSync(haproxyConf, 0o600);
  const first = services[0] ?? "user-service";
  return {
    name: "balancer",
    host: env.HOST || "127.0.0.1",
    // Its health is the first service's /health through it.
    port: Number(env[servicePorts[first].env] ?? servicePorts[first].port),
    cmd: haproxy,
    // -db: stay in the foreground under the supervisor, logging to its log file.
    args: ["-db", "-f", haproxyConf],
    env: {},
    // None of the stack's variables (credentials among them) reaches it.
    unset: Object.keys(env),
  };
}
