/**
 * The control API's client: `fetch` over the UNIX socket (a Deno HTTP
 * client whose transport is the socket). Server errors come back as
 * UserErrors carrying the server's one-line message.
 *
 * @module
 */

import { UserError } from "./errors.ts";

/** A client for one switch's control socket. */
export class ControlClient {
  readonly #client: Deno.HttpClient;

  constructor(readonly path: string) {
    this.#client = Deno.createHttpClient({ proxy: { transport: "unix", path } });
  }

  #unreachable(e: unknown): UserError {
    const msg = (e as Error)?.message ?? String(e);
    let exists = true;
    try {
      Deno.lstatSync(this.path);
    } catch {
      exists = false;
    }
    if (!exists) {
      return new UserError(
        `No switch is listening on ${this.path}: start one with "vswitch run", or name its socket with --control PATH`,
      );
    }
    if (/permission denied/i.test(msg)) {
      return new UserError(
        `Cannot connect to ${this.path}: permission denied (the socket is 0600: run as the switch's user)`,
      );
    }
    return new UserError(
      `Cannot reach the switch on ${this.path}: ${msg.split("\n")[0]} (is it running?)`,
    );
  }

  /** Sends a request; resolves to the response's JSON body, throws a UserError for an error status. */
  async request<T = unknown>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await this.raw(method, path, body);
    const text = await res.text();
    let data: unknown = undefined;
    try {
      data = text ? JSON.parse(text) : undefined;
    } catch {
      throw new UserError(`The switch answered ${res.status} with a body that is not JSON`);
    }
    if (!res.ok) {
      const msg = (data as { error?: string })?.error ?? `status ${res.status}`;
      throw new UserError(msg, { status: res.status });
    }
    return data as T;
  }

  /** Sends a request and returns the Response (for streams). */
  async raw(method: string, path: string, body?: unknown): Promise<Response> {
    try {
      return await fetch(`http://vswitch${path}`, {
        method,
        client: this.#client,
        headers: body === undefined ? {} : { "content-type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      throw this.#unreachable(e);
    }
  }

  /** Calls `each` for every JSON line of a streaming response until it ends or `signal` aborts. */
  async follow(path: string, each: (v: unknown) => void, signal?: AbortSignal): Promise<void> {
    let res: Response;
    try {
      res = await fetch(`http://vswitch${path}`, { client: this.#client, signal });
    } catch (e) {
      if (signal?.aborted) return;
      throw this.#unreachable(e);
    }
    if (!res.ok || !res.body) {
      const text = await res.text();
      throw new UserError(JSON.parse(text || "{}").error ?? `status ${res.status}`);
    }
    let pending = "";
    try {
      for await (const chunk of res.body.pipeThrough(new TextDecoderStream())) {
        pending += chunk;
        let nl;
        while ((nl = pending.indexOf("\n")) >= 0) {
          const line = pending.slice(0, nl);
          pending = pending.slice(nl + 1);
          if (line.trim()) each(JSON.parse(line));
        }
      }
    } catch (e) {
      if (signal?.aborted) return;
      throw new UserError(`The event stream from ${this.path} broke: ${(e as Error).message}`);
    }
  }

  /** Releases the HTTP client. */
  close(): void {
    this.#client.close();
  }
}
