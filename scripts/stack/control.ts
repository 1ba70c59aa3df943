// A tiny HTTP API on loopback through which a test process (which is not the supervisor's parent)
// can kill and restart services and engines while it runs: the chaos tests' remote control.
//
//   GET  /status                               engines and services, with pids
//   GET  /services/<name>/pid                  {"pid": 1234}
//   POST /services/<name>/kill?signal=KILL     signal it (the supervisor restarts it)
//   POST /services/<name>/stop | start | restart   (start/restart wait for /health)
//   GET  /engines/<name>/health                {"healthy": true}
//   POST /engines/<name>/stop | start | restart | kill9   (after kill9 the engine watcher brings it back)
//
// Every request carries `Authorization: Bearer <CONTROL_TOKEN>`; without it the answer is 401: the
// server can kill the whole stack, and any local process can reach a loopback port.
import { createHash, timingSafeEqual } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { constants } from "node:os";
import type { Engine, EngineName } from "./engine.ts";
import type { EngineWatcher, Supervisor } from "./supervisor.ts";

export interface ControlServerOptions {
  supervisor: Supervisor;
  engines: Record<EngineName, Engine>;
  /** Told about deliberate stops, so that it does not bring those engines back. */
  watcher?: EngineWatcher;
  /** The bearer token every request must carry (CONTROL_TOKEN). */
  token: string;
  host?: string;
  port: number;
}

class HttpError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

function toSignal(raw: string | null): NodeJS.Signals {
  const name = (raw ?? "KILL").toUpperCase();
  const sig = name.startsWith("SIG") ? name : `SIG${name}`;
  if (!(sig in constants.signals)) throw new HttpError(400, `unknown signal ${raw}`);
  return sig as NodeJS.Signals;
}

async function route(opts: ControlServerOptions, req: IncomingMessage): Promise<unknown> {
  const url = new URL(req.url ?? "/", "http://control");
  const parts = url.pathname.split("/").filter((p) => p !== "");
  const method = req.method ?? "GET";
  const sup = opts.supervisor;

  if (method === "GET" && parts.length === 1 && parts[0] === "status") {
    const engines = await Promise.all(
      Object.values(opts.engines).map(async (e) => ({
        name: e.name,
        pid: e.pid(),
        healthy: await e.isHealthy(),
      })),
    );
    return { engines, services: sup.status() };
  }

  const [kind, name, action] = parts;
  if (kind === "services" && name !== undefined) {
    if (!sup.names().includes(name)) throw new HttpError(404, `unknown service ${name}`);
    if (method === "GET" && action === "pid") return { pid: sup.pid(name) ?? null };
    if (method === "POST" && action === "kill") {
      const sig = toSignal(url.searchParams.get("signal"));
      return { pid: sup.kill(name, sig) ?? null, signal: sig };
    }
    if (method === "POST" && action === "stop") return void (await sup.stop(name));
    if (method === "POST" && (action === "start" || action === "restart")) {
      if (action === "restart") await sup.stop(name);
      await sup.start(name);
      await sup.waitHealthy(name);
      return { pid: sup.pid(name) ?? null };
    }
  }
  if (kind === "engines" && name !== undefined) {
    const engine = opts.engines[name as EngineName];
    if (engine === undefined) throw new HttpError(404, `unknown engine ${name}`);
    if (method === "GET" && action === "health") return { healthy: await engine.isHealthy() };
    if (method === "POST" && action === "stop") {
      opts.watcher?.pause(engine.name);
      return void (await engine.stop());
    }
    if (method === "POST" && (action === "start" || action === "restart")) {
      // Paused meanwhile, so the watcher does not start it too while it is down.
      opts.watcher?.pause(engine.name);
      try {
        return void (await (action === "start" ? engine.start() : engine.restart()));
      } finally {
        opts.watcher?.resume(engine.name);
      }
    }
    if (method === "POST" && action === "kill9") return void (await engine.kill9());
  }
  throw new HttpError(404, `no route ${method} ${url.pathname}`);
}

const digest = (text: string): Buffer => createHash("sha256").update(text).digest();

/** Compares digests (equal lengths) in constant time. */
function authorized(req: IncomingMessage, expected: Buffer): boolean {
  const m = /^Bearer +(\S{1,4096})$/i.exec(req.headers.authorization ?? "");
  return m?.[1] !== undefined && timingSafeEqual(digest(m[1]), expected);
}

function reply(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  res.writeHead(status, { "content-type": "application/json", ...headers });
  res.end(JSON.stringify(body ?? { ok: true }));
}

/** Listens on 127.0.0.1:<port>. Close it with server.close(). */
export async function startControlServer(opts: ControlServerOptions): Promise<Server> {
  if (opts.token.length < 16) throw new Error("the control server needs a CONTROL_TOKEN of 16+ characters");
  const expected = digest(opts.token);
  const server = createServer((req, res) => {
    req.resume(); // no request bodies; drain anyway
    if (!authorized(req, expected)) {
      reply(
        res,
        401,
        { ok: false, message: "Authorization: Bearer <CONTROL_TOKEN> is required" },
        { "www-authenticate": "Bearer" },
      );
      return;
    }
    route(opts, req).then(
      (body) => reply(res, 200, body),
      (err: unknown) => {
        const status = err instanceof HttpError ? err.status : 500;
        reply(res, status, { ok: false, message: err instanceof Error ? err.message : String(err) });
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, opts.host ?? "127.0.0.1", () => resolve());
  });
  return server;
}
