/** Structured JSON logs (pino), one logger per process, named after the service. */
import { type Logger, pino } from "pino";
import { traceLogMixin } from "#packages/tracing/log.ts";

export type { Logger };

export function createLogger(service: string, level: string = process.env.LOG_LEVEL ?? "info"): Logger {
  // trace_id and span_id of the active span on each line; nothing at all while tracing is off.
  return pino({ name: service, level, base: { service, pid: process.pid }, mixin: traceLogMixin });
}
