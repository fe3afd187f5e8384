/**
 * The switch as a child process, with its log records and its
 * kernel-visible resources (open fds, mappings): either the test child
 * (tests/helpers/switch_child.ts, which also reports counters) for
 * hostile-input tests, or the real CLI (src/cli/main.ts) for fault tests
 * that stop, kill and restart it. The child is the deno binary itself
 * (Deno.execPath(), not an npx wrapper), so its pid's /proc is the switch's.
 *
 * @module
 */

import type { PortStats } from "../../mod.ts";
import { withV8Flags } from "../../src/switch/v8_flags.ts";
import { fdTargets, mapsInode, mapsLines, windowMappings } from "./procfs.ts";

/** One LogTape JSON-lines record. */
export interface LogRecord {
  level: string;
  message: string;
  logger: string;
}

const CHILD = new URL("./switch_child.ts", import.meta.url).pathname;
const CLI = new URL("../../src/cli/main.ts", import.meta.url).pathname;

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

  private constructor(readonly child: Deno.ChildProcess, readonly cliMode: boolean) {
    this.#writer = child.stdin.getWriter();
    this.#pump(child.stdout);
    this.#pump(child.stderr);
    this.#done = child.status.then((s) => {
      this.#exited = true;
      return s;
    });
  }

  /** Starts the test child with vhost-user server ports `name → socket path`. */
  static async start(ports: Record<string, string>): Promise<SwitchProcess> {
    const args = Object.entries(ports).map(([n, p]) => `${n}=${p}`);
    return await SwitchProcess.#spawn(["--v8-flags=--expose-gc", CHILD, ...args], false);
  }

  /** Starts the CLI (`src/cli/main.ts ARGS --log-format json`) and waits for "Ready". */
  static async cli(args: string[]): Promise<SwitchProcess> {
    return await SwitchProcess.#spawn([CLI, ...args, "--log-format", "json"], true);
  }

  static async #spawn(args: string[], cliMode: boolean): Promise<SwitchProcess> {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", ...withV8Flags(args)],
      // Deno's update check opens a socketpair and DNS sockets of its own a moment after
      // start: fd counts of the switch would flicker. An appliance should not phone home.
      env: { DENO_NO_UPDATE_CHECK: "1" },
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const sp = new SwitchProcess(child, cliMode);
    const timeout = setTimeout(() => sp.kill(), 30_000);
    await Promise.race([sp.#readyP, sp.#done]);
    clearTimeout(timeout);
    if (sp.#exited) throw new Error(`Switch exited before it was ready:\n${sp.dumpLogs()}`);
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
    else if (typeof rec.message === "string") {
      this.logs.push(rec);
      if (this.cliMode && /^Ready/.test(rec.message)) this.#ready();
    }
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

  /**
   * Open fds of the switch process, except pipes: those are its stdio to
   * this test, and the runtime briefly duplicates one while it reads stdin
   * (seen as a pipe fd that comes and goes every few hundred commands).
   * Everything a frontend can make the switch hold (sockets, eventfds,
   * memfds) is counted.
   */
  fdCount(): number {
    let n = 0;
    for (const target of fdTargets(this.pid).values()) if (!target.startsWith("pipe:")) n++;
    return n;
  }

  /** Lines of /proc/<pid>/maps that map a file whose name contains `needle`. */
  maps(needle: string): string[] {
    return mapsLines(this.pid, (l) => l.includes(needle));
  }

  /** Copy-window mappings (src/virtio/address_window.ts), left out of `maps` and `mapsOf`. */
  windows(): number {
    return windowMappings(this.pid).length;
  }

  /** Lines of /proc/<pid>/maps that map the file with inode `ino` (e.g. one memfd). */
  mapsOf(ino: number): string[] {
    return mapsLines(this.pid, (l) => mapsInode(l) === ino);
  }

  /**
   * Waits for a log record matching `re` (logger + message) after index
   * `from`. JSON records quote interpolated strings; the quotes are dropped
   * before matching.
   */
  async waitLog(re: RegExp, from = 0, timeoutMs = 20_000): Promise<LogRecord> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      for (let i = from; i < this.logs.length; i++) {
        if (this.#matches(re, this.logs[i])) return this.logs[i];
      }
      if (Date.now() > deadline) {
        throw new Error(
          `No log line matching ${re} within ${timeoutMs} ms:\n${this.dumpLogs(from)}`,
        );
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** Whether a log record (logger + message, quotes dropped) matches, from index `from` on. */
  has(re: RegExp, from = 0): boolean {
    return this.logs.slice(from).some((r) => this.#matches(re, r));
  }

  /** The logs since `from`, for failure messages. */
  dumpLogs(from = 0): string {
    return this.logs.slice(from).map((r) => `${r.level} ${r.logger} ${r.message}`).join("\n");
  }

  #matches(re: RegExp, r: LogRecord): boolean {
    return re.test(`${r.logger} ${r.message.replaceAll('"', "")}`);
  }

  /** Sends `signal` and waits for the process to end. */
  async stop(signal: Deno.Signal): Promise<Deno.CommandStatus> {
    try {
      this.child.kill(signal);
    } catch { /* already gone */ }
    return await this.#done;
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
