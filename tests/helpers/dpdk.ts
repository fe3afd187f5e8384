/**
 * DPDK testpmd, driven interactively: as a traffic generator with
 * virtio-user ports (a real virtio driver) and as the reference vhost-user
 * backend. See ../shared/TESTBED.md for the flags that work here.
 *
 * @module
 */

/** One port's counters from `show port stats all`. */
export interface TestpmdPortStats {
  port: number;
  rxPackets: number;
  rxMissed: number;
  rxBytes: number;
  txPackets: number;
  txBytes: number;
  rxPps: number;
  txPps: number;
}

/** Why testpmd cannot run here, or undefined. */
export function testpmdUnavailable(): string | undefined {
  if (Deno.uid() !== 0) return "needs root (hugepages)";
  try {
    Deno.statSync("/usr/bin/dpdk-testpmd");
  } catch {
    return "dpdk-testpmd not installed";
  }
  return undefined;
}

const PROMPT = "testpmd> ";

/** A running interactive testpmd. */
export class Testpmd {
  #child: Deno.ChildProcess;
  #out = "";
  #err = "";
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #done: Promise<Deno.CommandStatus>;
  #exited = false;

  /**
   * Spawns testpmd. `eal` are the EAL arguments (vdevs), `app` the
   * application arguments after `--` (`-i` is added).
   */
  constructor(readonly prefix: string, eal: string[], app: string[], mainLcore = 1) {
    const args = [
      "-l",
      "0,1",
      "--main-lcore",
      `${mainLcore}`,
      "-m",
      "256",
      "--single-file-segments",
      "--no-pci",
      `--file-prefix=${prefix}`,
      ...eal,
      "--",
      "-i",
      ...app,
    ];
    // testpmd's printf output is block-buffered on a pipe while its prompt is
    // written directly: stdbuf makes stdout unbuffered so they arrive in order.
    this.#child = new Deno.Command("stdbuf", {
      args: ["-o0", "dpdk-testpmd", ...args],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#writer = this.#child.stdin.getWriter();
    this.#done = this.#child.status.then((s) => {
      this.#exited = true;
      return s;
    });
    this.#pump(this.#child.stdout, false);
    this.#pump(this.#child.stderr, true);
  }

  /** Generator: two virtio-user ports on `socketA`/`socketB`, MAC-forwarding A→B→A. */
  static generator(prefix: string, socketA: string, socketB: string, txpkts = 64): Testpmd {
    return new Testpmd(prefix, [
      `--vdev=net_virtio_user0,path=${socketA},mac=${MAC_A},queue_size=256`,
      `--vdev=net_virtio_user1,path=${socketB},mac=${MAC_B},queue_size=256`,
    ], [
      "--forward-mode=mac",
      `--eth-peer=0,${MAC_B}`,
      `--eth-peer=1,${MAC_A}`,
      `--txpkts=${txpkts}`,
      "--nb-cores=1",
    ]);
  }

  /**
   * Generator with N virtio-user ports in a ring: what port i receives it
   * sends out of port i+1, addressed to port i+2's MAC, so every frame
   * crosses the switch under test once per hop (TESTBED.md's loop).
   */
  static ring(prefix: string, sockets: string[], txpkts = 64): Testpmd {
    const n = sockets.length;
    return new Testpmd(
      prefix,
      sockets.map((s, i) =>
        `--vdev=net_virtio_user${i},path=${s},mac=${portMac(i)},queue_size=256`
      ),
      [
        "--forward-mode=mac",
        ...(n === 2 ? [] : ["--port-topology=loop"]),
        ...sockets.map((_, i) => `--eth-peer=${i},${portMac(n === 2 ? 1 - i : (i + 1) % n)}`),
        `--txpkts=${txpkts}`,
        "--nb-cores=1",
      ],
    );
  }

  /** Reference backend: DPDK's own vhost-user ports, io-forwarding. */
  static reference(prefix: string, sockets: string[]): Testpmd {
    return new Testpmd(
      prefix,
      sockets.map((s, i) => `--vdev=net_vhost${i},iface=${s}`),
      [
        "--forward-mode=io",
        "--nb-cores=1",
        ...(sockets.length === 2 ? [] : ["--port-topology=loop"]),
      ],
      0,
    );
  }

  /** The process id. */
  get pid(): number {
    return this.#child.pid;
  }

  // stderr is kept apart: interleaved, it would split the prompt.
  async #pump(stream: ReadableStream<Uint8Array>, isErr: boolean): Promise<void> {
    const dec = new TextDecoder();
    try {
      for await (const chunk of stream) {
        const text = dec.decode(chunk, { stream: true });
        if (isErr) this.#err += text;
        else this.#out += text;
      }
    } catch { /* gone */ }
  }

  /** Everything testpmd printed (stdout, then stderr). */
  get output(): string {
    return `${this.#out}\n--- stderr ---\n${this.#err}`;
  }

  // testpmd's prompt is not flushed in step with its output when stdout is
  // a pipe, so a stale prompt may arrive after `from`: wait for a prompt
  // that ends the output and stays the last thing printed for a moment.
  async #waitPrompt(from: number, timeoutMs: number): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.#out.lastIndexOf(PROMPT) >= from) {
        const len = this.#out.length;
        await new Promise((r) => setTimeout(r, 150));
        if (this.#out.length === len) {
          return this.#out.slice(from, this.#out.lastIndexOf(PROMPT)).replaceAll(PROMPT, "");
        }
        continue;
      }
      if (this.#exited) {
        throw new Error(`testpmd ${this.prefix} exited:\n${this.output.slice(-3000)}`);
      }
      if (Date.now() > deadline) {
        throw new Error(`testpmd ${this.prefix}: no prompt:\n${this.output.slice(-3000)}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Waits for the first prompt (EAL and ports initialised). */
  async ready(timeoutMs = 30_000): Promise<void> {
    await this.#waitPrompt(0, timeoutMs);
  }

  /** Runs one interactive command; returns what it printed. */
  async command(cmd: string, timeoutMs = 15_000): Promise<string> {
    const from = this.#out.length;
    await this.#writer.write(new TextEncoder().encode(`${cmd}\n`));
    // The prompt printed before our command is already behind `from`.
    return await this.#waitPrompt(from, timeoutMs);
  }

  /** `show port stats all`, parsed. Rx-pps is the rate since the previous call. */
  async portStats(): Promise<TestpmdPortStats[]> {
    return parsePortStats(await this.command("show port stats all"));
  }

  /** `stop`, `quit`, then SIGKILL if needed; removes its hugepage files. */
  async close(): Promise<void> {
    if (!this.#exited) {
      await this.command("stop", 5000).catch(() => {});
      await this.#writer.write(new TextEncoder().encode("quit\n")).catch(() => {});
      const t = setTimeout(() => {
        try {
          this.#child.kill("SIGKILL");
        } catch { /* gone */ }
      }, 5000);
      await this.#done;
      clearTimeout(t);
    }
    await this.#writer.close().catch(() => {});
    for (const e of Deno.readDirSync("/dev/hugepages")) {
      if (e.name.startsWith(this.prefix)) Deno.removeSync(`/dev/hugepages/${e.name}`);
    }
    await Deno.remove(`/var/run/dpdk/${this.prefix}`, { recursive: true }).catch(() => {});
  }

  /** `await using pmd = …`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** The MAC of generator port `i`. */
export function portMac(i: number): string {
  return `02:00:00:00:00:${(10 + i).toString(16).padStart(2, "0")}`;
}

/** The generator's port MACs. */
export const MAC_A = portMac(0);
export const MAC_B = portMac(1);

/** Parses `show port stats all` output. */
export function parsePortStats(text: string): TestpmdPortStats[] {
  const blocks = text.split(/#+ NIC statistics for port /).slice(1);
  return blocks.map((b) => {
    const num = (re: RegExp) => Number(b.match(re)?.[1] ?? NaN);
    return {
      port: num(/^(\d+)/),
      rxPackets: num(/RX-packets:\s+(\d+)/),
      rxMissed: num(/RX-missed:\s+(\d+)/),
      rxBytes: num(/RX-bytes:\s+(\d+)/),
      txPackets: num(/TX-packets:\s+(\d+)/),
      txBytes: num(/TX-bytes:\s+(\d+)/),
      rxPps: num(/Rx-pps:\s+(\d+)/),
      txPps: num(/Tx-pps:\s+(\d+)/),
    };
  });
}
