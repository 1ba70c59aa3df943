/**
 * A small OTLP/HTTP receiver for tests: listens on loopback, accepts JSON-encoded trace export
 * requests on /v1/traces (what the exporter sends; protobuf is refused with 415) and keeps the
 * spans in memory, each with the service.name of the resource it came with.
 */
import { once } from "node:events";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";

/** SpanKind as OTLP numbers it. */
export const OtlpKind = { internal: 1, server: 2, client: 3, producer: 4, consumer: 5 } as const;

export interface ReceivedSpan {
  service: string;
  /** The attributes of the resource the span came with (service.name among them). */
  resource: Record<string, unknown>;
  name: string;
  kind: number;
  trace_id: string;
  span_id: string;
  /** "" for a root span. */
  parent_span_id: string;
  attributes: Record<string, unknown>;
  status_code: number;
}

export interface OtlpReceiver {
  /** Base URL, for OTEL_EXPORTER_OTLP_ENDPOINT. */
  readonly url: string;
  readonly spans: ReceivedSpan[];
  /** Spans received, kept or not. */
  readonly received: number;
  /** Export requests refused (wrong path, encoding or body). */
  readonly refused: number;
  /** Resolves with the spans once predicate holds on them; rejects after timeout_ms. */
  waitFor(predicate: (spans: ReceivedSpan[]) => boolean, timeout_ms: number): Promise<ReceivedSpan[]>;
  close(): Promise<void>;
}

const BODY_MAX_BYTES = 8 * 1024 * 1024;

interface OtlpKeyValue {
  key: string;
  value?: Record<string, unknown>;
}
interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind?: number;
  attributes?: OtlpKeyValue[];
  status?: { code?: number };
}
interface ExportRequest {
  resourceSpans?: Array<{
    resource?: { attributes?: OtlpKeyValue[] };
    scopeSpans?: Array<{ spans?: OtlpSpan[] }>;
  }>;
}

/** An OTLP AnyValue as a plain value (stringValue, intValue, boolValue, doubleValue). */
function plain(value: Record<string, unknown> | undefined): unknown {
  if (value === undefined) return undefined;
  const [first] = Object.values(value);
  return first;
}

function attributes(list: OtlpKeyValue[] | undefined): Record<string, unknown> {
  return Object.fromEntries((list ?? []).map((kv) => [kv.key, plain(kv.value)]));
}

/** OTLP/JSON ids are hex; an exporter that sent base64 is converted, so that ids compare as text. */
function hexId(id: string | undefined): string {
  if (id === undefined || id === "") return "";
  return /^[0-9a-f]+$/i.test(id) ? id.toLowerCase() : Buffer.from(id, "base64").toString("hex");
}

export function decodeExport(request: ExportRequest): ReceivedSpan[] {
  const out: ReceivedSpan[] = [];
  for (const resourceSpans of request.resourceSpans ?? []) {
    const resource = attributes(resourceSpans.resource?.attributes);
    const service = String(resource["service.name"] ?? "");
    for (const scope of resourceSpans.scopeSpans ?? []) {
      for (const span of scope.spans ?? []) {
        out.push({
          service,
          resource,
          name: span.name,
          kind: span.kind ?? 0,
          trace_id: hexId(span.traceId),
          span_id: hexId(span.spanId),
          parent_span_id: hexId(span.parentSpanId),
          attributes: attributes(span.attributes),
          status_code: span.status?.code ?? 0,
        });
      }
    }
  }
  return out;
}

async function readBody(request: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request) {
    size += (chunk as Buffer).length;
    if (size > BODY_MAX_BYTES) throw new Error("export request too large");
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

/**
 * On `port` of loopback (0: any free one; a test stack's services are told a fixed one). A sink
 * for a long run (the benchmark) keeps none: spans_kept_max bounds what is kept, the rest counted.
 */
export async function startOtlpReceiver(
  port = 0,
  options: { spans_kept_max?: number } = {},
): Promise<OtlpReceiver> {
  const spans: ReceivedSpan[] = [];
  const kept_max = options.spans_kept_max ?? Number.POSITIVE_INFINITY;
  let refused = 0;
  let received = 0;
  const answer = (response: ServerResponse, status: number, body: unknown) => {
    if (status >= 400) refused += 1;
    response.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
  };
  const server = createServer((request, response) => {
    const json = (request.headers["content-type"] ?? "").startsWith("application/json");
    if (request.method !== "POST" || request.url !== "/v1/traces") return answer(response, 404, {});
    if (!json) return answer(response, 415, { message: "this receiver decodes JSON only" });
    readBody(request).then(
      (body) => {
        try {
          const decoded = decodeExport(JSON.parse(body.toString("utf8")) as ExportRequest);
          received += decoded.length;
          spans.push(...decoded.slice(0, Math.max(0, kept_max - spans.length)));
          answer(response, 200, { partialSuccess: {} });
        } catch (error) {
          answer(response, 400, { message: String(error) });
        }
      },
      (error: unknown) => answer(response, 413, { message: String(error) }),
    );
  });
  server.listen(port, "127.0.0.1");
  await once(server, "listening");
  const bound = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${bound}`,
    spans,
    get refused() {
      return refused;
    },
    get received() {
      return received;
    },
    async waitFor(predicate, timeout_ms) {
      const deadline = Date.now() + timeout_ms;
      while (!predicate(spans)) {
        if (Date.now() > deadline) {
          const names = spans.map((s) => `${s.service}:${s.name}`).join(", ");
          throw new Error(
            `the receiver did not get the expected spans within ${timeout_ms} ms; has: ${names}`,
          );
        }
        await sleep(50);
      }
      return spans;
    },
    async close() {
      server.closeAllConnections();
      server.close();
      await once(server, "close");
    },
  };
}
