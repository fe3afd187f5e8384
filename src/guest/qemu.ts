/**
 * A real QEMU guest whose NIC is a vhost-user virtio-net device, driven
 * over its serial console. Used by the demo and the end-to-end tests.
 *
 * Flags that work on the testbed (../shared/TESTBED.md): TCG, guest RAM in
 * a shared memfd (`share=on`, so the switch can map it), and `vectors=0`
 * on the device (QEMU 7.2 under TCG crashes in msix_set_vector_notifiers
 * otherwise).
 *
 * @module
 */

import type { GuestImage } from "./image.ts";
import { FAILED_MARKER, READY_MARKER } from "./image.ts";

/** How to start a guest. */
export interface GuestOptions {
  /** Name for logs. */
  name: string;
  /** vhost-user socket path. */
  socketPath: string;
  /** Guest MAC, e.g. 52:54:00:00:00:01. */
  mac: string;
  /** eth0 address with prefix, e.g. 10.0.0.1/24. */
  ip: string;
  image: GuestImage;
  /** Guest RAM in MiB (default 256). */
  memMiB?: number;
  /**
   * QEMU creates and listens on the socket (the switch's client mode).
   * Default false: QEMU connects to the switch's socket.
   */
  server?: boolean;
  /** Client mode only: reconnect every N seconds when the switch goes away. */
  reconnect?: number;
  /** Where the console and QEMU's stderr go (default: kept in memory only). */
  logFile?: string;
}

/** The outcome of a command run in the guest. */
export interface GuestResult {
  output: string;
  code: number;
}

const decoder = new TextDecoder();
const encoder = new TextEncoder();

/** A running guest. */
export class QemuGuest {
  #child: Deno.ChildProcess | null = null;
  #console = "";
  #waiters: (() => void)[] = [];
  #seq = 0;
  #log: Deno.FsFile | null = null;
  #exited: Promise<Deno.CommandStatus> | null = null;

  constructor(readonly options: GuestOptions) {}

  /** QEMU's pid (for kill tests and /proc checks). */
  get pid(): number {
    if (!this.#child) throw new Error(`Guest ${this.options.name} is not running`);
    return this.#child.pid;
  }

  /** Everything the console printed so far. */
  get console(): string {
    return this.#console;
  }

  /** The QEMU command line. */
  args(): string[] {
    const o = this.options;
    const mem = o.memMiB ?? 256;
    let chardev = `socket,id=c0,path=${o.socketPath}`;
    if (o.server) chardev += ",server=on,wait=off";
    else if (o.reconnect) chardev += `,reconnect=${o.reconnect}`;
    return [
      "-accel",
      "tcg",
      "-m",
      `${mem}`,
      "-smp",
      "1",
      "-object",
      `memory-backend-memfd,id=mem,size=${mem}M,share=on`,
      "-machine",
      "pc,memory-backend=mem",
      "-nodefaults",
      "-display",
      "none",
      "-serial",
      "stdio",
      "-no-reboot",
      "-kernel",
      o.image.kernel,
      "-initrd",
      o.image.initrd,
      "-append",
      `console=ttyS0 quiet panic=-1 vs.ip=${o.ip}`,
      "-chardev",
      chardev,
      "-netdev",
      "vhost-user,id=n0,chardev=c0",
      "-device",
      `virtio-net-pci,netdev=n0,mac=${o.mac},vectors=0`,
    ];
  }

  /** Starts QEMU and waits until the guest's eth0 is configured. */
  async boot(timeoutMs = 90_000): Promise<void> {
    if (this.options.logFile) {
      this.#log = await Deno.open(this.options.logFile, { create: true, append: true });
    }
    this.#console = "";
    const child = new Deno.Command("qemu-system-x86_64", {
      args: this.args(),
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#child = child;
    this.#exited = child.status;
    this.#pump(child.stdout);
    this.#pump(child.stderr);
    await this.#waitFor(
      () => this.#console.includes(READY_MARKER) || this.#console.includes(FAILED_MARKER),
      timeoutMs,
      "boot",
    );
    if (!this.#console.includes(READY_MARKER)) {
      throw new Error(
        `Guest ${this.options.name}: eth0 did not come up:\n${this.#console.slice(-2000)}`,
      );
    }
  }

  async #pump(stream: ReadableStream<Uint8Array>): Promise<void> {
    try {
      for await (const chunk of stream) {
        this.#console += decoder.decode(chunk, { stream: true });
        await this.#log?.write(chunk);
        for (const w of this.#waiters.splice(0)) w();
      }
    } catch { /* process gone */ }
    for (const w of this.#waiters.splice(0)) w();
  }

  async #waitFor(done: () => boolean, timeoutMs: number, what: string): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let exited = false;
    this.#exited?.then(() => (exited = true));
    while (!done()) {
      if (exited) {
        throw new Error(
          `Guest ${this.options.name} exited during ${what}:\n${this.#console.slice(-2000)}`,
        );
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(
          `Guest ${this.options.name}: ${what} timed out:\n${this.#console.slice(-2000)}`,
        );
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 200));
        this.#waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Runs a shell command in the guest; resolves to its output and exit code. */
  async run(cmd: string, timeoutMs = 30_000): Promise<GuestResult> {
    const child = this.#child;
    if (!child) throw new Error(`Guest ${this.options.name} is not running`);
    const id = `${++this.#seq}x${Math.floor(Math.random() * 1e6)}`;
    const begin = `__VSB_${id}`;
    const endRe = new RegExp(`__VSE_${id}_(\\d+)`);
    const start = this.#console.length;
    const writer = child.stdin.getWriter();
    await writer.write(encoder.encode(`echo ${begin}; ${cmd}; echo __VSE_${id}_$?\n`));
    writer.releaseLock();
    let match: RegExpMatchArray | null = null;
    await this.#waitFor(
      () => (match = this.#console.slice(start).match(endRe)) !== null,
      timeoutMs,
      cmd,
    );
    const text = this.#console.slice(start).replaceAll("\r", "");
    const from = text.indexOf(`${begin}\n`);
    const to = text.search(endRe);
    const output = from >= 0 && from < to
      ? text.slice(from + begin.length + 1, to)
      : text.slice(0, to);
    return { output, code: Number(match![1]) };
  }

  /** Sends a signal to QEMU (e.g. SIGKILL for fault tests). */
  kill(signal: Deno.Signal = "SIGKILL"): void {
    try {
      this.#child?.kill(signal);
    } catch { /* already gone */ }
  }

  /** Waits for QEMU to exit. */
  async exited(): Promise<void> {
    await this.#exited;
  }

  /** Stops QEMU (SIGTERM, then SIGKILL after 3 s); idempotent. */
  async stop(): Promise<void> {
    const child = this.#child;
    if (!child) return;
    this.kill("SIGTERM");
    const t = setTimeout(() => this.kill("SIGKILL"), 3000);
    await child.status;
    clearTimeout(t);
    await child.stdin.close().catch(() => {});
    this.#child = null;
    this.#log?.close();
    this.#log = null;
  }

  /** `await using guest = …`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

/** Why guests cannot run here, or undefined when they can. */
export function guestsUnavailable(): string | undefined {
  if (Deno.uid() !== 0) return "needs root";
  try {
    Deno.statSync("/usr/bin/qemu-system-x86_64");
  } catch {
    return "qemu-system-x86_64 not installed";
  }
  return undefined;
}
