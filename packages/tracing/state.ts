/**
 * Whether this process exports spans, read on every carrier call and log line: kept apart from
 * index.ts so that carriers.ts and log.ts need not import it (and it them).
 */
let enabled = false;

export function tracingEnabled(): boolean {
  return enabled;
}

export function setTracingEnabled(value: boolean): void {
  enabled = value;
}

/** The instrumentation scope of every span the project makes (the service is the resource's name). */
export const TRACER_NAME = "distributed-payment-service";
