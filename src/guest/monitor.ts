/**
 * QEMU's human monitor (HMP) over the UNIX socket of `-monitor
 * unix:PATH,server=on,wait=off`: one command at a time, its output being
 * everything up to the next `(qemu) ` prompt. Enough to live-migrate a
 * guest (`migrate -d tcp:HOST:PORT`, `info migrate`) and hot-plug memory
 * (`object_add`, `device_add pc-dimm`) from Deno, where no socat is at
 * hand.
 *
 * @module
 */

const PROMPT = "(qemu) ";
const decoder = new TextDecoder();
const encoder = new TextEncoder();

/** Figures of a finished migration (`info migrate`). */
export interface MigrationInfo {
  /** "completed", "failed", "active", … */
  status: string;
  /** "total time" in ms (0 when not shown). */
  totalMs: number;
  /** "downtime" in ms (0 when not shown). */
  downtimeMs: number;
  /** The whole output. */
  text: string;
}

/** A connected HMP monitor. */
export class Monitor {
  #buf = "";
  readonly #conn: Deno.UnixConn;

  private constructor(conn: Deno.UnixConn) {
    this.#conn = conn;
  }

  /** Connects to `path` (retrying while QEMU starts) and waits for the first prompt. */
  static async connect(path: string, timeoutMs = 10_000): Promise<Monitor> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const m = new Monitor(await Deno.connect({ transport: "unix", path }));
        await m.#untilPrompt(deadline);
        return m;
      } catch (e) {
        if (Date.now() > deadline) {
          throw new Error(`Cannot reach the QEMU monitor at ${path}`, { cause: e });
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  async #untilPrompt(deadline: number): Promise<string> {
    const chunk = new Uint8Array(4096);
    while (!this.#buf.endsWith(PROMPT)) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`No monitor prompt; got: ${this.#buf.slice(-500)}`);
      let timer: ReturnType<typeof setTimeout> | undefined;
      const n = await Promise.race([
        this.#conn.read(chunk),
        new Promise<null>((r) => (timer = setTimeout(() => r(null), left))),
      ]);
      clearTimeout(timer);
      if (n === null) {
        if (Date.now() >= deadline) continue;
        throw new Error("The QEMU monitor closed");
      }
      this.#buf += decoder.decode(chunk.subarray(0, n));
    }
    const out = this.#buf;
    this.#buf = "";
    return out;
  }

  /**
   * Runs `cmd` and returns its output: the echoed command line and
   * terminal escapes dropped, `\r\n` as `\n`.
   */
  async command(cmd: string, timeoutMs = 10_000): Promise<string> {
    await this.#conn.write(encoder.encode(cmd + "\n"));
    const raw = await this.#untilPrompt(Date.now() + timeoutMs);
    // deno-lint-ignore no-control-regex
    const text = raw.replace(/\x1b\[[0-9;]*[A-Za-z]/g, "").replaceAll("\r", "");
    const lines = text.slice(0, -PROMPT.length).split("\n");
    const echo = lines.findIndex((l) => l.includes(cmd));
    return lines.slice(echo + 1).join("\n").trim();
  }

  /** `info migrate`, parsed. */
  async migrationInfo(): Promise<MigrationInfo> {
    const text = await this.command("info migrate");
    const num = (re: RegExp) => Number(text.match(re)?.[1] ?? 0);
    return {
      status: text.match(/Migration status:\s*(\S+)/)?.[1] ?? "none",
      totalMs: num(/total time:\s*(\d+)/),
      downtimeMs: num(/downtime:\s*(\d+)/),
      text,
    };
  }

  /** Starts `migrate -d URI` and polls until it is no longer active. */
  async migrate(uri: string, timeoutMs = 120_000): Promise<MigrationInfo> {
    const started = await this.command(`migrate -d ${uri}`);
    if (/error|fail/i.test(started)) throw new Error(`Cannot migrate to ${uri}: ${started}`);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const info = await this.migrationInfo();
      if (!/active|setup|device|pre-switchover|none/.test(info.status)) return info;
      if (Date.now() > deadline) throw new Error(`Migration still ${info.status}:\n${info.text}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Closes the connection (QEMU keeps running). */
  close(): void {
    try {
      this.#conn.close();
    } catch { /* already closed */ }
  }
}
