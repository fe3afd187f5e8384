/**
 * The control API: HTTP/1.1 + JSON on a UNIX socket (`Deno.serve({ path })`),
 * mode 0600, so only the switch's user can drive it. Every request and
 * response is listed in the README ("Control API"). Errors are
 * `{"error": "..."}` with 400 (bad request), 404 (no such port or route),
 * 405, 409 (conflict), 413 (body too big) or 500.
 *
 * The server runs on the main thread; the dataplane worker never waits
 * for it, so a client that connects and says nothing, or floods requests,
 * cannot stall forwarding.
 *
 * @module
 */

import { logger } from "../log.ts";
import { VERSION } from "../version.ts";
import type { SwitchEvent } from "../switch/switch.ts";
import type { CaptureDirection } from "../switch/capture.ts";
import { type Controller, describeError, type PortSpec } from "./controller.ts";
import { UserError } from "./errors.ts";

const log = logger("control");

/** Largest request body accepted. */
const MAX_BODY = 64 * 1024;
/** Events a slow follower may fall behind by before it is cut off. */
const MAX_EVENT_BACKLOG = 1000;

/** What a reload did. */
export interface ReloadResult {
  added: string[];
  removed: string[];
  changed: string[];
  unchanged: string[];
  /** Settings that need a restart to change. */
  notes: string[];
}

/** Hooks the server needs from the running program. */
export interface ServerHooks {
  /** Re-reads the config file and reconciles; throws a UserError if it is invalid. */
  reload?: () => Promise<ReloadResult>;
  /** Extra fields for `GET /v1`. */
  info?: () => Record<string, unknown>;
}

/** The default control socket: $VSWITCH_CONTROL, /run/vswitch.sock for root, else in $XDG_RUNTIME_DIR or /tmp. */
export function defaultControlPath(): string {
  const env = Deno.env.get("VSWITCH_CONTROL");
  if (env) return env;
  if (Deno.uid() === 0) return "/run/vswitch.sock";
  return `${Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp"}/vswitch-${Deno.uid()}.sock`;
}

function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body, null, 2) + "\n", {
    status,
    headers: { "content-type": "application/json" },
  });
}

function fail(status: number, message: string): Response {
  return json({ error: message }, status);
}

async function readJson(req: Request): Promise<Record<string, unknown>> {
  const len = Number(req.headers.get("content-length") ?? "0");
  if (len > MAX_BODY) {
    throw new UserError(`Request body too big: at most ${MAX_BODY} bytes`, { status: 413 });
  }
  const text = await req.text();
  if (text.length > MAX_BODY) {
    throw new UserError(`Request body too big: at most ${MAX_BODY} bytes`, { status: 413 });
  }
  if (text.trim() === "") return {};
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new UserError(`Cannot parse the request body as JSON: ${(e as Error).message}`);
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    throw new UserError("The request body must be a JSON object");
  }
  return v as Record<string, unknown>;
}

async function inUse(path: string): Promise<boolean> {
  try {
    const c = await Deno.connect({ transport: "unix", path });
    c.close();
    return true;
  } catch {
    return false;
  }
}

/** The control API server. */
export class ControlServer {
  readonly #server: Deno.HttpServer<Deno.UnixAddr>;
  readonly #streams = new Set<ReadableStreamDefaultController<Uint8Array>>();

  private constructor(
    readonly path: string,
    readonly ctl: Controller,
    readonly hooks: ServerHooks,
  ) {
    // The socket is made 0600 as it is created (umask), so no one else can connect even briefly.
    const old = Deno.umask(0o177);
    try {
      this.#server = Deno.serve(
        { path, onListen: () => {}, onError: (e) => this.#internal(e) },
        (req) => this.#handle(req),
      );
    } finally {
      Deno.umask(old);
    }
    Deno.chmodSync(path, 0o600);
  }

  /**
   * Listens on `path`. A stale socket file is replaced; one a live switch
   * answers on is refused with a UserError.
   */
  static async listen(
    path: string,
    ctl: Controller,
    hooks: ServerHooks = {},
  ): Promise<ControlServer> {
    let st: Deno.FileInfo | undefined;
    try {
      st = Deno.lstatSync(path);
    } catch { /* free */ }
    if (st) {
      if (!st.isSocket) {
        throw new UserError(
          `Cannot use ${path} as the control socket: a file that is not a socket is there`,
        );
      }
      if (await inUse(path)) {
        throw new UserError(
          `Control socket ${path} is in use by another running switch: stop it, or give this one --control PATH`,
        );
      }
      Deno.removeSync(path);
    }
    try {
      return new ControlServer(path, ctl, hooks);
    } catch (e) {
      throw new UserError(`Cannot listen on control socket ${path}: ${describeError(e)}`, {
        cause: e,
      });
    }
  }

  #internal(e: unknown): Response {
    log.error`Control API error: ${describeError(e)}`;
    return fail(500, `Internal error: ${describeError(e)}`);
  }

  async #handle(req: Request): Promise<Response> {
    try {
      return await this.#route(req);
    } catch (e) {
      if (e instanceof UserError) return fail(e.status, e.message);
      return this.#internal(e);
    }
  }

  async #route(req: Request): Promise<Response> {
    const url = new URL(req.url);
    const parts = url.pathname.split("/").filter((p) => p !== "").map(decodeURIComponent);
    const m = req.method;
    if (parts[0] !== "v1") {
      return fail(404, `No such route ${url.pathname}: the API lives under /v1`);
    }
    const [, a, b, c] = parts;
    if (a === undefined) {
      if (m !== "GET") return this.#method(m, "GET");
      return json({
        version: VERSION,
        deno: Deno.version.deno,
        pid: Deno.pid,
        uptimeSeconds: Math.round((Date.now() - this.ctl.started) / 1000),
        rounds: this.ctl.sw.rounds,
        control: this.path,
        ...this.hooks.info?.(),
      });
    }
    if (a === "ports" && b === undefined) {
      if (m === "GET") return json(this.ctl.list());
      if (m === "POST") return json(await this.ctl.add(portSpec(await readJson(req)), "api"), 201);
      return this.#method(m, "GET, POST");
    }
    if (a === "ports" && c === undefined) {
      if (m === "GET") return json(this.ctl.info(b));
      if (m === "DELETE") {
        await this.ctl.remove(b);
        return json({ removed: b });
      }
      return this.#method(m, "GET, DELETE");
    }
    if (a === "ports" && c === "capture" && parts.length === 4) return await this.#capture(req, b);
    if (a === "fdb" && b === undefined) {
      const port = url.searchParams.get("port") ?? undefined;
      if (port !== undefined) this.ctl.need(port);
      if (m === "GET") {
        const rows = await this.ctl.sw.fdb();
        return json(
          rows.filter((r) => port === undefined || r.portName === port).map((r) => ({
            mac: r.mac,
            port: r.portName,
            ageSeconds: Math.round(r.ageMs / 100) / 10,
          })),
        );
      }
      if (m === "DELETE") return json({ flushed: await this.ctl.sw.flushFdb(port) });
      return this.#method(m, "GET, DELETE");
    }
    if (a === "captures" && b === undefined) {
      if (m !== "GET") return this.#method(m, "GET");
      return json(this.ctl.sw.capture.list());
    }
    if (a === "reload" && b === undefined) {
      if (m !== "POST") return this.#method(m, "POST");
      if (!this.hooks.reload) {
        throw new UserError(
          "This switch was started without --config: there is nothing to reload",
          {
            status: 409,
          },
        );
      }
      return json(await this.hooks.reload());
    }
    if (a === "events" && b === undefined) {
      if (m !== "GET") return this.#method(m, "GET");
      return this.#events();
    }
    return fail(404, `No such route ${m} ${url.pathname} (see the README's Control API)`);
  }

  #method(m: string, allowed: string): Response {
    return new Response(
      JSON.stringify({ error: `Method ${m} not allowed here: use ${allowed}` }) + "\n",
      { status: 405, headers: { allow: allowed, "content-type": "application/json" } },
    );
  }

  async #capture(req: Request, name: string): Promise<Response> {
    this.ctl.need(name);
    const port = this.ctl.sw.port(name)!;
    const cap = this.ctl.sw.capture;
    if (req.method === "GET") {
      const s = cap.statusOf(name);
      if (!s) {
        throw new UserError(
          `No capture on port ${name} yet: start one with vswitch capture ${name} FILE`,
          { status: 404 },
        );
      }
      return json(s);
    }
    if (req.method === "DELETE") {
      const s = cap.stop(port.id);
      if (!s) throw new UserError(`No capture is running on port ${name}`, { status: 404 });
      return json(s);
    }
    if (req.method !== "POST") return this.#method(req.method, "GET, POST, DELETE");
    const body = await readJson(req);
    const file = body.file;
    if (typeof file !== "string" || !file.startsWith("/")) {
      throw new UserError('A capture needs "file": an absolute path for the pcapng file');
    }
    const direction = (body.direction ?? "both") as CaptureDirection;
    if (!["rx", "tx", "both"].includes(direction)) {
      throw new UserError(`Capture direction ${JSON.stringify(direction)}: use rx, tx or both`);
    }
    const count = body.count === undefined || body.count === null ? undefined : Number(body.count);
    if (count !== undefined && !(Number.isInteger(count) && count > 0)) {
      throw new UserError(`Capture count ${JSON.stringify(body.count)}: use a positive integer`);
    }
    if (cap.running(port.id)) {
      throw new UserError(`A capture is already running on port ${name}: stop it first (DELETE)`, {
        status: 409,
      });
    }
    try {
      return json(
        await cap.start({
          port: port.id,
          portName: name,
          portType: port.type,
          file,
          direction,
          count,
        }),
        201,
      );
    } catch (e) {
      throw new UserError(describeError(e), { cause: e });
    }
  }

  #events(): Response {
    const enc = new TextEncoder();
    let unsubscribe = () => {};
    let ctrl: ReadableStreamDefaultController<Uint8Array>;
    const body = new ReadableStream<Uint8Array>({
      start: (c) => {
        ctrl = c;
        this.#streams.add(c);
        unsubscribe = this.ctl.sw.subscribe((e: SwitchEvent) => {
          if ((c.desiredSize ?? 0) < -MAX_EVENT_BACKLOG) {
            // A follower that stopped reading must not make us buffer forever.
            unsubscribe();
            this.#streams.delete(c);
            c.error(new Error("event follower too slow"));
            return;
          }
          c.enqueue(enc.encode(JSON.stringify(e) + "\n"));
        });
        // A first line tells the follower the stream is live.
        c.enqueue(
          enc.encode(JSON.stringify({ time: new Date().toISOString(), type: "hello" }) + "\n"),
        );
      },
      cancel: () => {
        unsubscribe();
        this.#streams.delete(ctrl);
      },
    }, { highWaterMark: 0 });
    return new Response(body, { headers: { "content-type": "application/x-ndjson" } });
  }

  /** Stops listening (open event streams end) and removes the socket file. */
  async close(): Promise<void> {
    for (const c of this.#streams) {
      try {
        c.close();
      } catch { /* already closed */ }
    }
    this.#streams.clear();
    await this.#server.shutdown();
    try {
      Deno.removeSync(this.path);
    } catch { /* already gone */ }
  }
}

/** A PortSpec from a request body (checked further by the controller). */
export function portSpec(body: Record<string, unknown>): PortSpec {
  const offloads = body.offloads;
  const spec: PortSpec = {
    name: body.name as string,
    type: body.type as PortSpec["type"],
  };
  if (body.path !== undefined) spec.path = body.path as string;
  if (body.ifname !== undefined) spec.ifname = body.ifname as string;
  if (offloads !== undefined) {
    if (typeof offloads === "string") {
      spec.offloads = offloads === "all"
        ? undefined
        : offloads === "none"
        ? []
        : offloads.split(",");
    } else spec.offloads = offloads as string[];
  }
  for (const k of Object.keys(body)) {
    if (!["name", "type", "path", "ifname", "offloads"].includes(k)) {
      throw new UserError(`Unknown port field "${k}": use name, type, path, ifname, offloads`);
    }
  }
  return spec;
}
