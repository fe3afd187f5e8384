/**
 * iperf3 between test guests and the host: a client run in a guest (or in
 * a network namespace), the result parsed from iperf3's summary lines.
 * Used by the offload end-to-end test (bytes moved) and `bench:iperf`
 * (rates).
 *
 * @module
 */

import type { QemuGuest } from "../../src/guest/qemu.ts";

/** One iperf3 run, as its receiver saw it. */
export interface IperfResult {
  /** Bytes the receiver got. */
  bytes: number;
  /** The receiver's rate in bit/s. */
  bitsPerSecond: number;
  /** iperf3's own output, for failure messages. */
  output: string;
}

const SCALE: Record<string, number> = { "": 1, K: 1e3, M: 1e6, G: 1e9 };
// iperf3's byte columns are binary (MBytes = 2^20), its rate columns decimal.
const BYTE_SCALE: Record<string, number> = { "": 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 };

/**
 * Parses the receiver summary line of iperf3 (client output, either
 * direction), e.g. `[  5]   0.00-2.04  sec   229 MBytes   942 Mbits/sec   receiver`.
 * Returns undefined when there is none (the run failed).
 */
export function parseIperf(output: string): IperfResult | undefined {
  const m = output.match(
    /([\d.]+)\s+([KMG]?)Bytes\s+([\d.]+)\s+([KMG]?)bits\/sec\s+(?:\d+\s+)?receiver/,
  );
  if (!m) return undefined;
  return {
    bytes: Number(m[1]) * BYTE_SCALE[m[2]],
    bitsPerSecond: Number(m[3]) * SCALE[m[4]],
    output,
  };
}

/** How to run one iperf3 client. */
export interface IperfRun {
  /** Server address. */
  server: string;
  /** Seconds (`-t`). */
  seconds: number;
  /** `-R`: the server sends, the client receives. */
  reverse?: boolean;
}

function clientArgs(r: IperfRun): string[] {
  return ["-c", r.server, "-t", `${r.seconds}`, "-f", "m", ...(r.reverse ? ["-R"] : [])];
}

/** True when iperf3 failed only because its server was not listening or still busy. */
function retryable(output: string): boolean {
  return /unable to connect|server is busy|Connection refused/i.test(output);
}

/**
 * Runs an iperf3 client in guest `g`. Retries (up to ~5 s) while the
 * server is not up yet or busy with the previous test; throws with the
 * output when the run fails otherwise.
 */
export async function iperfFromGuest(g: QemuGuest, r: IperfRun): Promise<IperfResult> {
  const cmd = `iperf3 ${clientArgs(r).join(" ")} 2>&1`;
  for (let attempt = 0;; attempt++) {
    const out = await g.run(cmd, (r.seconds + 30) * 1000);
    const res = parseIperf(out.output);
    if (out.code === 0 && res) return res;
    if (attempt < 10 && retryable(out.output)) {
      await new Promise((res) => setTimeout(res, 500));
      continue;
    }
    throw new Error(
      `Cannot run iperf3 in ${g.options.name} to ${r.server}: exit ${out.code}:\n${out.output}`,
    );
  }
}

/** Starts `iperf3 -s -D` in guest `g` (it serves one test at a time, forever). */
export async function iperfServerInGuest(g: QemuGuest): Promise<void> {
  const r = await g.run("iperf3 -s -D");
  if (r.code !== 0) {
    throw new Error(`Cannot start iperf3 server in ${g.options.name}:\n${r.output}`);
  }
}

/** Pings from `g` until one reply comes back; throws after `timeoutMs`. */
export async function pingUntilUp(g: QemuGuest, ip: string, timeoutMs = 30_000): Promise<void> {
  const t0 = Date.now();
  for (;;) {
    const r = await g.run(`ping -c 1 -W 1 ${ip}`, 10_000);
    if (r.code === 0) return;
    if (Date.now() - t0 > timeoutMs) {
      throw new Error(`${g.options.name} cannot reach ${ip} after ${timeoutMs} ms:\n${r.output}`);
    }
  }
}
