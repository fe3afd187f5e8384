/**
 * Runs tests/helpers/switch_child.ts as a child process and gives the test
 * its counters, its log records and its kernel-visible resources (open
 * fds, mappings), so hostile-input tests can assert the outcome of each
 * attack and that nothing leaked.
 *
 * @module
 */

import type { PortStats } from "../../mod.ts";

/** One LogTape JSON-lines record. */
export interface LogRecord {
  level: string;
  message: string;
  logger: string;
}

const CHILD = new URL("./switch_child.ts", import.meta.url).pathname;

/** The switch in its own process. */
export class SwitchProcess {
  readonly logs: LogRecord[] = [];
  #stats: ((s: PortStats[]) => void)[] = [];
  #mem: ((m: Deno.MemoryUsage) => void)[] = [];
  #ready!: () => void;
  readonly #readyP = new Promise<void>((r) => (this.#ready = r));
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #done: Promise<Deno.CommandStatus>;
  #exited = false;

  private constructor(readonly child: Deno.ChildProcess) {
    this.#writer = child.stdin.getWriter();
    this.#pump(child.stdout);
    this.#pump(child.stderr);
    this.#done = child.status.then((s) => {
      this.#exited = true;
      return s;
    });
  }

  /** Starts a switch with vhost-user server ports `name → socket path`. */
  static async start(ports: Record<string, string>): Promise<SwitchProcess> {
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--v8-flags=--expose-gc",
        CHILD,
        ...Object.entries(ports).map(([n, p]) => `${n}=${p}`),
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const sp = new SwitchProcess(child);
    const timeout = setTimeout(() => sp.kill(), 20_000);
    await Promise.race([sp.#readyP, sp.#done]);
    clearTimeout(timeout);
    if (sp.#exited) throw new Error(`Switch child exited early: ${sp.dumpLogs()}`);
    return sp;
  }

  async #pump(stream: ReadableStream<Uint8Array>): Promise<void> {
    let pending = "";
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      pending += chunk;
      let nl;
      while ((nl = pending.indexOf("\n")) >= 0) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        this.#line(line);
      }
    }
  }

  #line(line: string): void {
    let rec;
    try {
      rec = JSON.parse(line);
    } catch {
      this.logs.push({ level: "raw", message: line, logger: "" });
      return;
    }
    if (rec.ready) this.#ready();
    else if (rec.stats) this.#stats.shift()?.(rec.stats);
    else if (rec.mem) this.#mem.shift()?.(rec.mem);
    else if (typeof rec.message === "string") this.logs.push(rec);
  }

  /** The child's pid. */
  get pid(): number {
    return this.child.pid;
  }

  /** True while the process runs. */
  get alive(): boolean {
    return !this.#exited;
  }

  /** Every port's counters, by name. */
  async stats(): Promise<Record<string, PortStats>> {
    if (!this.alive) throw new Error(`Switch child is gone: ${this.dumpLogs()}`);
    const p = new Promise<PortStats[]>((r) => this.#stats.push(r));
    await this.#writer.write(new TextEncoder().encode("stats\n"));
    return Object.fromEntries((await p).map((s) => [s.name, s]));
  }

  /** The control plane's memory figures after a full GC. */
  async memory(): Promise<Deno.MemoryUsage> {
    const p = new Promise<Deno.MemoryUsage>((r) => this.#mem.push(r));
    await this.#writer.write(new TextEncoder().encode("mem\n"));
    return await p;
  }

  /** Open fds of the switch process. */
  fdCount(): number {
    let n = 0;
    for (const _ of Deno.readDirSync(`/proc/${this.pid}/fd`)) n++;
    return n;
  }

  /** Lines of /proc/<pid>/maps that map a file whose name contains `needle`. */
  maps(needle: string): string[] {
    return Deno.readTextFileSync(`/proc/${this.pid}/maps`).split("\n").filter((l) =>
      l.includes(needle)
    );
  }

  /** Lines of /proc/<pid>/maps that map the file with inode `ino` (e.g. one memfd). */
  mapsOf(ino: number): string[] {
    return Deno.readTextFileSync(`/proc/${this.pid}/maps`).split("\n").filter((l) =>
      Number(l.split(/\s+/)[4]) === ino
    );
  }

  /**
   * Waits for a log record matching `re` (logger + message) after index
   * `from`. JSON records quote interpolated strings; the quotes are dropped
   * before matching.
   */
  async waitLog(re: RegExp, from = 0, timeoutMs = 5000): Promise<LogRecord> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      for (let i = from; i < this.logs.length; i++) {
        const r = this.logs[i];
        if (re.test(`${r.logger} ${r.message.replaceAll('"', "")}`)) return r;
      }
      if (Date.now() > deadline) {
        throw new Error(
          `No log line matching ${re} within ${timeoutMs} ms:\n${this.dumpLogs(from)}`,
        );
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** The logs since `from`, for failure messages. */
  dumpLogs(from = 0): string {
    return this.logs.slice(from).map((r) => `${r.level} ${r.logger} ${r.message}`).join("\n");
  }

  /** Sends SIGKILL. */
  kill(): void {
    try {
      this.child.kill("SIGKILL");
    } catch { /* already gone */ }
  }

  /** SIGTERM, then SIGKILL if it does not stop within 5 s. */
  async [Symbol.asyncDispose](): Promise<void> {
    if (this.alive) {
      try {
        this.child.kill("SIGTERM");
      } catch { /* gone */ }
      const t = setTimeout(() => this.kill(), 5000);
      await this.#done;
      clearTimeout(t);
    }
    await this.#writer.close().catch(() => {});
  }
}
