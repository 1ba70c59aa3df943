/**
 * The deploy files, checked by the tools users' pipelines run on them (no container engine here):
 * the Dockerfile by hadolint, compose.yaml by compose-go's loader (what `docker compose config`
 * runs), the Helm chart by `helm lint` and `helm template`, its manifests strictly against the
 * Kubernetes JSON schemas. And against the code: the image starts a service the way the stack's
 * supervisor does, and compose and the chart hand each service exactly the variables it reads.
 * The tools are installed, pinned and cached, by scripts/deploy/install-tools.sh.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  chmodSync,
  globSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

const root = join(import.meta.dirname, "..", "..");
const chart = join(root, "deploy", "helm", "distributed-payment-service");
const chartValues = join(chart, "ci", "complete-values.yaml");
const examples = join(root, "deploy", "examples");
const exampleValues = join(examples, "values-production.yaml");
/** The chart's kubeVersion floor and the newest schemas kubernetes-validate bundles. */
const kubeVersions = ["1.27.0", "1.37.0"];
const run_timeout_ms = 120_000;

// The stack writes generated secrets under its data dir: keep a test's away from the checkout's.
const scratch = mkdtempSync(join(tmpdir(), "dps-deploy-"));
process.env.DPS_DATA_DIR = join(scratch, "data");
const { secretNames, serviceNames, servicePorts, serviceEnv, stackEnv } = await import(
  "../../scripts/stack/env.ts"
);
const { serviceSpecs } = await import("../../scripts/stack/supervisor.ts");
const { ports: healthcheckPorts, runningService } = await import("../../scripts/deploy/healthcheck.ts");
const { composeEnv, requiredNames } = await import("../../scripts/deploy/compose-env.ts");
const { topicNames } = await import("../../packages/contracts/messages.ts");

type ServiceName = (typeof serviceNames)[number];
const configShapes: Record<ServiceName, Record<string, unknown>> = {
  "user-service": (await import("../../services/user-service/src/config.ts")).configShape,
  "transaction-command-service": (await import("../../services/transaction-command-service/src/config.ts"))
    .configShape,
  "transaction-query-service": (await import("../../services/transaction-query-service/src/config.ts"))
    .configShape,
  "transaction-service": (await import("../../services/transaction-service/src/config.ts")).configShape,
};

/**
 * Names of the shared credential and listener contract. While no service reads one of them yet,
 * the deploy files may carry it ahead of the code; once any service reads it, only the services
 * that read it may be given it.
 */
const contractNames = new Set([
  "INTERNAL_HOST",
  ...serviceNames.map((s) => servicePorts[s].env.replace(/_PORT$/, "_INTERNAL_PORT")),
  "USER_SERVICE_INTERNAL_URL",
  "ADMIN_TOKEN_SHA256",
  "LEDGER_TOKEN",
  "LEDGER_TOKEN_SHA256",
  "QUERY_TOKEN",
  "QUERY_TOKEN_SHA256",
  "KAFKA_SASL_MECHANISM",
  "KAFKA_USERNAME",
  "KAFKA_PASSWORD",
]);
/** What the contract puts in place of a credential the stack hands out today. */
const replacedBy: Record<string, string[]> = { ADMIN_TOKEN: ["ADMIN_TOKEN_SHA256"] };
/**
 * Stack-only settings: test faults, the prefixes that keep parallel stacks apart on shared
 * engines, and webhook receivers on loopback (a deployment keeps the default: private refused).
 */
const stackOnly = new Set([
  "FAULT_INJECTION",
  "KAFKA_TOPIC_PREFIX",
  "REDIS_KEY_PREFIX",
  "ALLOW_INSECURE_DEV",
  "WEBHOOK_ALLOW_PRIVATE",
]);

/** compose.yaml's variables, generated as the documented command does. */
const composeText = readFileSync(join(root, "compose.yaml"), "utf8");
const composeEnvFile = join(scratch, "compose.env");
// Only what the env file says: no .env of the checkout, no variable of this process.
const composeProcessEnv = { PATH: process.env.PATH, HOME: scratch, COMPOSE_DISABLE_ENV_FILE: "1" };

let tools = "";
const tool = (name: string): string => join(tools, name);

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(
  cmd: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; input?: string; cwd?: string } = {},
): Ran {
  const res = spawnSync(cmd, args, {
    cwd: opts.cwd ?? root,
    env: opts.env ?? process.env,
    input: opts.input,
    encoding: "utf8",
    timeout: run_timeout_ms,
    maxBuffer: 64 * 1024 * 1024,
  });
  if (res.error !== undefined) throw res.error;
  return { code: res.status, stdout: res.stdout, stderr: res.stderr };
}

function ok(res: Ran, what: string): string {
  assert.equal(res.code, 0, `${what} failed:\n${res.stdout}\n${res.stderr}`);
  return res.stdout;
}

function yamlDocuments(text: string): Record<string, unknown>[] {
  const script = "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d]))";
  return JSON.parse(
    ok(run(join(tools, "..", "venv", "bin", "python"), ["-c", script], { input: text }), "yaml"),
  );
}

function keysOf(obj: object | undefined): string[] {
  return Object.keys(obj ?? {}).sort();
}

/**
 * Every variable given to a service must be one it reads (or a contract name no service reads
 * yet). And the stack is the authority on what a service needs: its engine and listener settings
 * must be given too, and so must its credentials once the stack picks them per service (while it
 * hands every service every secret, that says nothing about what one service needs).
 */
function assertEnvMatchesCode(service: ServiceName, given: string[], where: string, complete = true): void {
  const reads = new Set(Object.keys(configShapes[service]));
  const readAnywhere = new Set(serviceNames.flatMap((s) => Object.keys(configShapes[s])));
  for (const key of given) {
    const ahead = contractNames.has(key) && !readAnywhere.has(key);
    assert.ok(
      reads.has(key) || ahead,
      `${where}: ${service} is given ${key}, which its config.ts does not read`,
    );
  }
  if (!complete) return;
  const fromStack = Object.keys(serviceEnv(service, stackEnv({ ...process.env })));
  const secrets = new Set<string>(secretNames);
  const picksSecrets = [...secrets].some((name) => !fromStack.includes(name));
  for (const key of fromStack) {
    if (!reads.has(key) || stackOnly.has(key) || (secrets.has(key) && !picksSecrets)) continue;
    const candidates = [key, ...(replacedBy[key] ?? [])];
    assert.ok(
      candidates.some((k) => given.includes(k)),
      `${where}: ${service} gets ${candidates.join(" or ")} from the stack but not here`,
    );
  }
}

before(() => {
  const res = run("bash", [join(root, "scripts", "deploy", "install-tools.sh")]);
  tools = ok(res, "install-tools.sh").trim().split("\n").at(-1) ?? "";
  const values = composeEnv(requiredNames(composeText), new Map());
  writeFileSync(composeEnvFile, [...values].map(([k, v]) => `${k}=${v}`).join("\n"), { mode: 0o600 });
});

/** The project compose-go resolves from these files, or its error. */
function composeConfig(files: string[], env_file?: string): Ran {
  const args = [
    ...files.flatMap((f) => ["-f", f]),
    ...(env_file === undefined ? [] : ["--env-file", env_file]),
  ];
  return run(tool("compose-config"), args, { env: composeProcessEnv });
}

after(() => rmSync(scratch, { recursive: true, force: true }));

describe("the image", () => {
  const dockerfile = readFileSync(join(root, "Dockerfile"), "utf8");
  const instructions = dockerfile
    .replace(/\\\n/g, " ")
    .split("\n")
    .filter((l) => /^[A-Z]+\s/.test(l));
  const all = (word: string): string[] =>
    instructions.filter((l) => l.startsWith(`${word} `)).map((l) => l.slice(word.length + 1).trim());

  test("hadolint finds nothing", () => {
    ok(run(tool("hadolint"), ["--failure-threshold", "info", "Dockerfile"]), "hadolint");
  });

  test("multi-stage on an official Node 24 slim image, production dependencies from the lockfile", () => {
    const base = /^ARG NODE_IMAGE=(\S+)$/m.exec(dockerfile)?.[1];
    assert.match(base ?? "", /^node:24(\.\d+)*-[a-z]+-slim$/);
    assert.ok(all("FROM").length >= 2, "multi-stage");
    const fromBase = "$" + "{NODE_IMAGE}";
    assert.ok(all("FROM").every((f) => f.startsWith(fromBase)));
    assert.ok(all("RUN").some((r) => /npm ci .*--omit=dev/.test(r)));
  });

  test("its environment is only variables every service reads", () => {
    const keys = all("ENV").flatMap((e) => [...e.matchAll(/([A-Z][A-Z0-9_]*)=/g)].map((m) => m[1] as string));
    assert.ok(keys.length > 0);
    for (const name of serviceNames) assertEnvMatchesCode(name, keys, "Dockerfile ENV", false);
  });

  test("runs as a non-root user and has a HEALTHCHECK", () => {
    const user = all("USER").at(-1) ?? "root";
    assert.doesNotMatch(user, /^(root|0)(:|$)/);
    assert.equal(all("HEALTHCHECK").length, 1);
  });

  test("the build context is the sources the image runs: no tests, data, local dependencies or secrets", () => {
    const context = ok(run(tool("build-context"), [root]), "build-context")
      .trim()
      .split("\n");
    const sources = globSync(["packages/**/*", "services/**/*"], { cwd: root })
      .filter((f) => statSync(join(root, f)).isFile())
      .filter((f) => !/(^|\/)test\/|\.test\.ts$/.test(f));
    const copied = [
      "package.json",
      "package-lock.json",
      "scripts/deploy/entrypoint.sh",
      "scripts/deploy/healthcheck.ts",
    ];
    assert.deepEqual(context.sort(), [...sources, ...copied].sort());
    for (const name of serviceNames) assert.ok(context.includes(`services/${name}/src/main.ts`), name);
  });

  test("the repository's layout under WORKDIR, so entry points and migrations are where the tests run them", () => {
    assert.deepEqual(all("WORKDIR"), ["/app", "/app"]);
    for (const copy of all("COPY").filter((c) => !c.includes("--from="))) {
      const parts = copy.split(/\s+/).filter((p) => !p.startsWith("--"));
      const dest = parts.at(-1) as string;
      if (dest === "./") continue;
      assert.equal(
        dest.replace(/^\.\//, ""),
        parts[0],
        `COPY ${copy} moves a file away from its repository path`,
      );
    }
  });

  test("its entry point starts each service as the stack's supervisor does", () => {
    const entrypoint = JSON.parse(all("ENTRYPOINT")[0] ?? "[]") as string[];
    assert.deepEqual(entrypoint, ["scripts/deploy/entrypoint.sh"]);
    // A stand-in `node` reports what it was started with, from where.
    const bin = join(scratch, "bin");
    mkdirSync(bin, { recursive: true });
    writeFileSync(join(bin, "node"), '#!/bin/sh\nprintf "%s\\n" "$PWD" "$@"\n');
    chmodSync(join(bin, "node"), 0o755);
    const env = { PATH: `${bin}:/usr/bin:/bin` };
    for (const name of serviceNames) {
      const started = ok(run("sh", [entrypoint[0] as string, name], { env }), name)
        .trim()
        .split("\n");
      const spec = serviceSpecs(stackEnv({ ...process.env }), [name])[0];
      assert.deepEqual(started, [root, ...(spec?.args ?? [])], name);
      assert.equal(runningService(`node ${started.slice(1).join(" ")}`), name);
      assert.deepEqual(healthcheckPorts[name], {
        env: servicePorts[name].env,
        port: servicePorts[name].port,
      });
    }
    assert.equal(run("sh", [entrypoint[0] as string, "no-such-service"], { env }).code, 64);
  });
});

describe("docker compose", () => {
  interface ComposeService {
    image?: string;
    build?: unknown;
    command?: string[];
    restart?: string;
    healthcheck?: { test?: string[] };
    environment?: Record<string, string>;
    depends_on?: Record<string, { condition: string }>;
    deploy?: { replicas?: number };
    ports?: { published?: string; host_ip?: string }[];
  }
  interface ComposeProject {
    services: Record<string, ComposeService>;
    volumes?: Record<string, unknown>;
  }

  let project: ComposeProject;

  before(() => {
    const res = composeConfig(["compose.yaml"], composeEnvFile);
    project = JSON.parse(ok(res, "compose config"));
    assert.equal(res.stderr, "", "compose config warned");
  });

  test("follows the current specification: no obsolete version key", () => {
    assert.doesNotMatch(composeText, /^version:/m);
  });

  test("every variable is required or has a default: none silently becomes empty", () => {
    const uses = [...composeText.matchAll(/\$\{[^}]*\}/g)].map((m) => m[0]);
    assert.ok(uses.length > 0);
    for (const use of uses) assert.match(use, /^\$\{[A-Z][A-Z0-9_]*:[?-][^}]+\}$/, use);
  });

  test("fails loudly, naming it, when any required variable is missing", () => {
    const names = requiredNames(composeText);
    assert.ok(names.length >= 10, `only ${names.length} required variables`);
    const full = readFileSync(composeEnvFile, "utf8").split("\n");
    for (const name of names) {
      const partial = join(scratch, `without-${name}.env`);
      writeFileSync(partial, full.filter((l) => !l.startsWith(`${name}=`)).join("\n"));
      const res = composeConfig(["compose.yaml"], partial);
      assert.notEqual(res.code, 0, `compose config resolved without ${name}`);
      assert.match(res.stderr, new RegExp(`required variable ${name} is missing`));
    }
  });

  test("the documented generator writes every required variable once, private, with matching digests", () => {
    const file = join(scratch, "generated.env");
    const generate = (): string =>
      ok(run(process.execPath, ["scripts/deploy/compose-env.ts", "compose.yaml", file]), "compose-env");
    generate();
    const first = readFileSync(file, "utf8");
    assert.equal(statSync(file).mode & 0o777, 0o600);
    generate();
    assert.equal(readFileSync(file, "utf8"), first, "a second run changed the secrets");
    const values = new Map(first.split("\n").map((l) => l.split("=", 2) as [string, string]));
    for (const name of requiredNames(composeText)) assert.ok(values.get(name), `${name} not generated`);
    for (const [name, value] of values) {
      if (!name.endsWith("_SHA256")) continue;
      const base = values.get(name.slice(0, -"_SHA256".length)) ?? "";
      assert.equal(value, createHash("sha256").update(base).digest("hex"), name);
    }
    ok(composeConfig(["compose.yaml"], file), "compose config with the generated file");
  });

  test("the engines on their official images, data in named volumes", () => {
    const image = (s: string): string => project.services[s]?.image ?? "";
    assert.match(image("postgres"), /^postgres:17(\.|$)/);
    assert.match(image("mongodb"), /^mongo:8(\.|$)/);
    assert.match(image("kafka"), /^apache\/kafka:4\.1(\.|$)/);
    assert.match(image("redis"), /^redis:8(\.|$)/);
    assert.ok(project.services.mongodb?.healthcheck?.test?.join(" ").includes("rs.initiate"));
    assert.deepEqual(keysOf(project.volumes), ["kafka-data", "mongodb-data", "postgres-data"]);
  });

  test("the four services from the Dockerfile, restarted, health-checked, started after what they need", () => {
    for (const name of serviceNames) {
      const s = project.services[name];
      assert.ok(s?.build !== undefined, `${name} is built from the Dockerfile`);
      assert.deepEqual(s.command, [name]);
      assert.equal(s.restart, "unless-stopped");
      assert.ok((s.healthcheck?.test ?? []).length > 0, `${name} healthcheck`);
      const conditions = Object.values(s.depends_on ?? {}).map((d) => d.condition);
      assert.ok(conditions.length > 0, `${name} depends on its engines`);
      for (const c of conditions) assert.match(c, /^service_(healthy|completed_successfully)$/);
    }
  });

  test("only the public APIs are published, on loopback", () => {
    const published = Object.entries(project.services).filter(([, s]) => (s.ports ?? []).length > 0);
    assert.deepEqual(published.map(([n]) => n).sort(), ["transaction-service", "user-service"]);
    for (const [, s] of published) for (const p of s.ports ?? []) assert.equal(p.host_ip, "127.0.0.1");
  });

  test("each service is given exactly the variables it reads", () => {
    for (const name of serviceNames)
      assertEnvMatchesCode(name, keysOf(project.services[name]?.environment), "compose");
  });

  test("the scale override runs two copies of each service", () => {
    const scaled = JSON.parse(
      ok(composeConfig(["compose.yaml", "compose.scale.yaml"], composeEnvFile), "compose config (scaled)"),
    );
    for (const name of serviceNames) assert.equal(scaled.services[name]?.deploy?.replicas, 2, name);
  });
});

describe("the Helm chart", () => {
  type Manifest = {
    kind: string;
    metadata: { name: string; labels?: Record<string, string> };
    spec?: Record<string, unknown>;
    data?: Record<string, string>;
    stringData?: Record<string, string>;
  };
  let manifests: Manifest[] = [];
  const helm = (args: string[]): Ran => run(tool("helm"), args, { env: { ...process.env, HOME: scratch } });
  const of = (kind: string, service: ServiceName): Manifest | undefined =>
    manifests.find((m) => m.kind === kind && m.metadata.labels?.["app.kubernetes.io/component"] === service);

  before(() => {
    const rendered = ok(
      helm(["template", "dps", chart, "-f", chartValues, "--kube-version", kubeVersions[0] as string]),
      "helm template",
    );
    writeFileSync(join(scratch, "rendered.yaml"), rendered);
    manifests = yamlDocuments(rendered) as Manifest[];
  });

  test("helm lint --strict passes, with the test values and the production example", () => {
    for (const values of [chartValues, exampleValues]) {
      ok(
        helm(["lint", chart, "--strict", "-f", values, "--kube-version", kubeVersions[0] as string]),
        `lint ${values}`,
      );
    }
  });

  test("the manifests pass strict validation against the Kubernetes JSON schemas", () => {
    const example = ok(
      helm(["template", "dps", chart, "-f", exampleValues, "--kube-version", kubeVersions[0] as string]),
      "helm template (production example)",
    );
    writeFileSync(join(scratch, "rendered-example.yaml"), example);
    for (const version of kubeVersions) {
      for (const file of ["rendered.yaml", "rendered-example.yaml"]) {
        const args = ["--strict", "--quiet", "-k", version, join(scratch, file)];
        ok(run(tool("kubernetes-validate"), args), `kubernetes-validate ${version} ${file}`);
      }
    }
  });

  test("a missing engine URL or credential stops the render with its name", () => {
    const res = helm(["template", "dps", chart, "--kube-version", kubeVersions[0] as string]);
    assert.notEqual(res.code, 0);
    assert.match(res.stderr, /is required/);
  });

  test("a misspelled or out-of-range value is refused by the chart's schema", () => {
    for (const [set, complaint] of [
      ["engines.redisURL=redis://x", /additional properties 'redisURL' not allowed/],
      ["engines.kafkaPartitions=0", /kafkaPartitions.*minimum/],
      ["services.transaction-service.replica=3", /additional properties 'replica' not allowed/],
    ] as const) {
      const args = ["template", "dps", chart, "-f", chartValues, "--set", set];
      const res = helm([...args, "--kube-version", kubeVersions[0] as string]);
      assert.notEqual(res.code, 0, set);
      assert.match(res.stderr, complaint);
    }
  });

  test("Secrets made elsewhere replace the chart's own", () => {
    const rendered = ok(
      helm([
        "template",
        "dps",
        chart,
        "-f",
        chartValues,
        "--kube-version",
        kubeVersions[0] as string,
        "--set",
        "credentials.existingSecrets.user-service=ledger-from-vault",
      ]),
      "helm template",
    );
    const docs = yamlDocuments(rendered) as Manifest[];
    assert.ok(!docs.some((m) => m.kind === "Secret" && m.metadata.name === "dps-user-service"));
    assert.match(rendered, /secretRef:\s+name: ledger-from-vault/);
  });

  test("more Kafka workers than partitions is refused", () => {
    const res = helm([
      "template",
      "dps",
      chart,
      "-f",
      chartValues,
      "--kube-version",
      kubeVersions[0] as string,
      "--set",
      "services.transaction-command-service.autoscaling.maxReplicas=7",
    ]);
    assert.notEqual(res.code, 0);
    assert.match(res.stderr, /must not exceed engines.kafkaPartitions/);
  });

  test("per service: a Deployment probed on /health (ready: /health/ready), with resources, a PDB, an HPA, a ConfigMap and a Secret", () => {
    for (const name of serviceNames) {
      const deployment = of("Deployment", name);
      assert.ok(deployment?.spec !== undefined, `${name}: no Deployment`);
      const pod = (deployment.spec.template as { spec: { containers: Record<string, unknown>[] } }).spec;
      const container = pod.containers[0] as {
        args: string[];
        readinessProbe: { httpGet: { path: string } };
        livenessProbe: { httpGet: { path: string } };
        resources: { requests: object; limits: object };
      };
      assert.deepEqual(container.args, [name]);
      assert.equal(container.readinessProbe.httpGet.path, "/health/ready");
      assert.equal(container.livenessProbe.httpGet.path, "/health");
      assert.deepEqual(keysOf(container.resources.requests), ["cpu", "memory"]);
      assert.deepEqual(keysOf(container.resources.limits), ["cpu", "memory"]);
      for (const kind of [
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "ConfigMap",
        "Secret",
        "NetworkPolicy",
      ]) {
        assert.ok(of(kind, name) !== undefined, `${name}: no ${kind}`);
      }
    }
  });

  test("each service is given exactly the variables it reads, the same as under compose", () => {
    const compose = JSON.parse(ok(composeConfig(["compose.yaml"], composeEnvFile), "compose config"));
    for (const name of serviceNames) {
      const given = [
        ...keysOf(of("ConfigMap", name)?.data),
        ...keysOf(of("Secret", name)?.stringData),
      ].sort();
      assertEnvMatchesCode(name, given, "helm");
      assert.deepEqual(
        given,
        keysOf(compose.services[name]?.environment),
        `${name}: helm and compose differ`,
      );
    }
  });
});

describe("the engines' example resources", () => {
  const topics = Object.values(topicNames(""));
  const load = (file: string): Record<string, unknown>[] =>
    yamlDocuments(readFileSync(join(examples, file), "utf8"));

  test("each is a named resource of the operator it is for", () => {
    const expected: Record<string, string[]> = {
      "kafka-strimzi.yaml": ["kafka.strimzi.io/"],
      "postgres-cloudnativepg.yaml": ["postgresql.cnpg.io/", "v1"],
      "mongodb-community.yaml": ["mongodbcommunity.mongodb.com/", "v1"],
    };
    for (const [file, groups] of Object.entries(expected)) {
      for (const doc of load(file) as { apiVersion: string; kind: string; metadata: { name: string } }[]) {
        assert.ok(
          groups.some((g) => doc.apiVersion.startsWith(g)),
          `${file}: ${doc.apiVersion}`,
        );
        assert.ok(doc.kind !== "" && doc.metadata.name !== "", `${file}: unnamed ${doc.kind}`);
      }
    }
    assert.equal((load("redis-values.yaml")[0] as { auth: { enabled: boolean } }).auth.enabled, true);
  });

  test("Kafka's topics are the services' topics, made by the init job and by Strimzi alike", () => {
    const strimzi = load("kafka-strimzi.yaml") as {
      kind: string;
      spec: { topicName: string; partitions: number };
    }[];
    const made = strimzi.filter((d) => d.kind === "KafkaTopic");
    assert.deepEqual(made.map((t) => t.spec.topicName).sort(), [...topics].sort());
    const values = yamlDocuments(readFileSync(join(chart, "values.yaml"), "utf8"))[0] as {
      engines: { kafkaPartitions: number };
    };
    for (const t of made) assert.equal(t.spec.partitions, values.engines.kafkaPartitions, t.spec.topicName);
    const init = readFileSync(join(root, "deploy", "compose", "kafka-init.sh"), "utf8");
    const initTopics = /^for topic in ([^;]+);/m.exec(init)?.[1]?.trim().split(/\s+/) ?? [];
    assert.deepEqual(initTopics.sort(), [...topics].sort(), "the topics kafka-init.sh makes");
  });

  test("Kafka's users are the principals of the services' consumer groups", () => {
    const users = (
      load("kafka-strimzi.yaml") as { kind: string; metadata: { name: string }; spec: unknown }[]
    ).filter((d) => d.kind === "KafkaUser");
    for (const service of ["transaction-service", "transaction-command-service"]) {
      const user = users.find((u) => u.metadata.name === service);
      assert.ok(JSON.stringify(user?.spec).includes(`{"type":"group","name":"${service}"}`), service);
    }
  });
});
