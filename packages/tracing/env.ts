/** The standard OpenTelemetry variables tracing reads; apart from index.ts so that packages/config can spread them without an import cycle. */
import { z } from "zod";

const optionalUrl = z.union([z.literal(""), z.url()]).default("");

/** The standard OpenTelemetry variables this package reads; empty means unset. */
export const tracingEnv = {
  /** Base URL of an OTLP/HTTP collector; spans go to <base>/v1/traces. Unset: tracing is off. */
  OTEL_EXPORTER_OTLP_ENDPOINT: optionalUrl,
  /** Full URL for spans only; wins over the base URL above. */
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: optionalUrl,
};
