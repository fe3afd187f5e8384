/**
 * A real QEMU guest whose NIC is a vhost-user virtio-net device, driven
 * over its serial console. Used by the demo, the end-to-end tests and the
 * benchmarks.
 *
 * Flags that work on the testbed (../shared/TESTBED.md): TCG, guest RAM in
 * a shared memfd (`share=on`, so the switch can map it), and `vectors=0`
 * on the device (QEMU 7.2 under TCG crashes in msix_set_vector_notifiers
 * otherwise).
 *
 * Two variations for offload tests and the TCP benchmark: extra
 * virtio-net-pci properties (`deviceProps`, e.g. {@link NO_OFFLOADS}), and
 * a TAP netdev instead of vhost-user (`tap`): QEMU's own virtio-net
 * backend, the Linux-bridge reference that a user has without any
 * userspace switch.
 *
 * @module
 */

import type { GuestImage } from "./image.ts";
import { FAILED_MARKER, READY_MARKER } from "./image.ts";

/**
 * virtio-net-pci properties that switch every checksum, segmentation and
 * ECN offload off (the guest then checksums and segments everything
 * itself, and accepts only plain frames): the "no offloads" side of mixed
 * tests. QEMU 7.2 property names (TESTBED.md).
 */
export const NO_OFFLOADS: readonly string[] = [
  "csum=off",
  "guest_csum=off",
  "host_tso4=off",
  "host_tso6=off",
  "guest_tso4=off",
  "guest_tso6=off",
  "host_ecn=off",
  "guest_ecn=off",
];

/**
 * virtio-net-pci properties without VIRTIO_NET_F_MRG_RXBUF: Linux then
 * posts one "big" chain of pages per receive buffer when GUEST_TSO is on
 * (or 1.5 KiB buffers without it), so a 64 KiB frame must fit one chain.
 */
export const NO_MRG_RXBUF: readonly string[] = ["mrg_rxbuf=off"];

/** How to start a guest. */
export interface GuestOptions {
  /** Name for logs. */
  name: string;
  /**
   * vhost-user socket path (the default NIC backend). Ignored when `tap` is
   * given.
   */
  socketPath?: string;
  /**
   * Use QEMU's own virtio-net over this host TAP instead of vhost-user
   * (`-netdev tap,ifname=…,script=no,downscript=no,vhost=off`; there is no
   * /dev/vhost-net on the testbed). Guest RAM is then not shared. The TAP
   * should exist already (`ip tuntap add … mode tap`); QEMU sets its
   * offloads from what the guest negotiated, and the caller brings it up.
   */
  tap?: string;
  /**
   * Extra `-device virtio-net-pci` properties, e.g. {@link NO_OFFLOADS} or
   * {@link NO_MRG_RXBUF}. Default none: QEMU offers every offload.
   */
  deviceProps?: readonly string[];
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
  /** An HMP monitor on this UNIX socket (`-monitor unix:PATH,server=on,wait=off`; monitor.ts). */
  monitor?: string;
  /**
   * Wait for a migration instead of booting (`-incoming`, e.g.
   * `tcp:127.0.0.1:4444`): start with `start()`, not `boot()`.
   */
  incoming?: string;
  /** QEMU exits when the guest reboots (`-no-reboot`; default true). False: the guest reboots. */
  noReboot?: boolean;
  /** Memory hotplug: `-m MEM,slots=N,maxmem=MAX` (pc-dimm devices over the monitor). */
  hotplug?: { slots: number; maxMiB: number };
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
    const device = ["virtio-net-pci", "netdev=n0", `mac=${o.mac}`, "vectors=0"];
    if (o.deviceProps) device.push(...o.deviceProps);
    const hp = o.hotplug;
    return [
      // debug-threads names QEMU's threads ("CPU 0/TCG" for the vCPU), so a
      // benchmark can tell the guest's own CPU time from QEMU's I/O (bench:iperf).
      "-name",
      `guest=${o.name.replaceAll(",", ",,")},debug-threads=on`,
      "-accel",
      "tcg",
      "-m",
      hp ? `${mem}M,slots=${hp.slots},maxmem=${hp.maxMiB}M` : `${mem}`,
      "-smp",
      "1",
      ...this.#backendArgs(mem),
      "-nodefaults",
      "-display",
      "none",
      "-serial",
      "stdio",
      ...(o.noReboot ?? true ? ["-no-reboot"] : []),
      ...(o.monitor ? ["-monitor", `unix:${o.monitor},server=on,wait=off`] : []),
      ...(o.incoming ? ["-incoming", o.incoming] : []),
      "-kernel",
      o.image.kernel,
      "-initrd",
      o.image.initrd,
      "-append",
      `console=ttyS0 quiet panic=-1 vs.ip=${o.ip}`,
      "-device",
      device.join(","),
    ];
  }

  /** Memory and netdev arguments: shared memory + vhost-user, or a TAP. */
  #backendArgs(mem: number): string[] {
    const o = this.options;
    if (o.tap !== undefined) {
      // vectors=0 stays on the device: the MSI-X crash is QEMU's under TCG, not vhost-user's.
      return [
        "-machine",
        "pc",
        "-netdev",
        `tap,id=n0,ifname=${o.tap},script=no,downscript=no,vhost=off`,
      ];
    }
    if (o.socketPath === undefined) {
      throw new Error(`Cannot start guest ${o.name}: give socketPath (vhost-user) or tap`);
    }
    let chardev = `socket,id=c0,path=${o.socketPath}`;
    if (o.server) chardev += ",server=on,wait=off";
    else if (o.reconnect) chardev += `,reconnect=${o.reconnect}`;
    return [
      "-object",
      `memory-backend-memfd,id=mem,size=${mem}M,share=on`,
      "-machine",
      "pc,memory-backend=mem",
      "-chardev",
      chardev,
      "-netdev",
      "vhost-user,id=n0,chardev=c0",
    ];
  }

  /** Starts QEMU and waits until the guest's eth0 is configured. */
  async boot(timeoutMs = 90_000): Promise<void> {
    await this.start();
    await this.waitReady(timeoutMs);
  }

  /**
   * Starts QEMU without waiting for the guest (a migration's destination
   * with `incoming`: its console continues where the source's stopped).
   */
  async start(): Promise<void> {
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
  }

  /**
   * Waits until the console shows the guest's eth0 up (after `boot`, or
   * again after a reboot inside the same QEMU: only output from `from` on
   * counts).
   */
  async waitReady(timeoutMs = 90_000, from = 0): Promise<void> {
    const seen = () => this.#console.slice(from);
    await this.#waitFor(
      () => seen().includes(READY_MARKER) || seen().includes(FAILED_MARKER),
      timeoutMs,
      "boot",
    );
    if (!seen().includes(READY_MARKER)) {
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
