/** Structured JSON logs (pino), one logger per process, named after the service. */
import { type Logger, pino } from "pino";

export type { Logger };

export function createLogger(service: string, level: string = process.env.LOG_LEVEL ?? "info"): Logger {
  return pino({ name: service, level, base: { service, pid: process.pid } });
}
