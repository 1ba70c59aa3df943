// `npm start -- --prometheus`: a Prometheus beside the stack, scraping the four services' internal
// listeners (wherever this stack put them) with deploy/prometheus's alert rules, its data kept in
// .data/prometheus across restarts.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type PrometheusServer, startPrometheus } from "../tools/prometheus.ts";
import { type StackEnv, serviceNames, servicePorts } from "./env.ts";
import { confDir, dataDir, envPort, logsDir, repoRoot } from "./paths.ts";

/** Its web UI and API; 9090 is Prometheus's own default. */
export const prometheusPort = (): number => envPort("DPS_PROMETHEUS_PORT", 9090);

/** deploy/prometheus/prometheus.yml's jobs (one per service, job = its name) at this stack's ports. */
export function stackPrometheusConfig(env: StackEnv): string {
  const host = env.INTERNAL_HOST || "127.0.0.1";
  const rules = join(repoRoot, "deploy", "prometheus", "alerts.yml");
  const jobs = serviceNames.map((name) => {
    const target = `${host}:${env[servicePorts[name].internalEnv]}`;
    return `  - { job_name: ${name}, static_configs: [{ targets: [${JSON.stringify(target)}] }] }`;
  });
  return [
    "global: { scrape_interval: 5s, scrape_timeout: 4s, evaluation_interval: 5s }",
    `rule_files: [${JSON.stringify(rules)}]`,
    "scrape_configs:",
    ...jobs,
    "",
  ].join("\n");
}

export async function startStackPrometheus(env: StackEnv): Promise<PrometheusServer> {
  mkdirSync(confDir, { recursive: true });
  const config_file = join(confDir, "prometheus.yml");
  writeFileSync(config_file, stackPrometheusConfig(env));
  return startPrometheus({
    config_file,
    port: prometheusPort(),
    data_dir: join(dataDir, "prometheus"),
    log_file: join(logsDir, "prometheus.log"),
  });
}
