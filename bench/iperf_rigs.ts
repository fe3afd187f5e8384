/**
 * The three systems `bench:iperf` measures, each set up with its guests and
 * a host side in a network namespace, and torn down completely afterwards
 * (processes by pid, namespaces, TAPs, bridges, sockets, hugepage files):
 * - vswitch: the CLI (`src/cli/main.ts`, what `deno task start` runs) in
 *   its own process, guests on vhost-user, its TAP moved into the namespace;
 * - bridge: each guest on QEMU's own virtio-net over a TAP (`vhost=off`),
 *   the TAPs enslaved to a Linux bridge, the host reached over a veth pair
 *   from the bridge into the namespace (one more kernel hop than vswitch's
 *   TAP, as cheap as the kernel makes one). Offloads are on by default;
 * - dpdk: testpmd io-forward between `net_vhost` ports with `tso=1`, the
 *   host through a `net_tap` port paired with a third vhost port.
 *
 * @module
 */

import type { GuestImage } from "../src/guest/image.ts";
import { NO_MRG_RXBUF, NO_OFFLOADS, QemuGuest } from "../src/guest/qemu.ts";
import { sh } from "../tests/helpers/env.ts";
import { NetNs } from "../tests/helpers/netns.ts";
import { Testpmd } from "../tests/helpers/dpdk.ts";
import { iperfServerInGuest } from "../tests/helpers/iperf.ts";
import { v8FlagsArg } from "../src/switch/v8_flags.ts";

/** The host stack's address (in the namespace). */
export const HOST_IP = "10.0.0.254";

/** The guest kinds a rig may boot; guest n is 10.0.0.n. */
export const GUESTS = {
  /** Default offloads (everything QEMU offers). */
  tso1: { n: 1, props: [] as readonly string[] },
  tso2: { n: 2, props: [] as readonly string[] },
  /** Every offload off. */
  plain: { n: 3, props: NO_OFFLOADS },
  /** Offloads on, no MRG_RXBUF. */
  bigRx: { n: 4, props: NO_MRG_RXBUF },
  /** Default offloads, for a host path on a port of its own (DPDK pairs ports). */
  tsoHost: { n: 5, props: [] as readonly string[] },
};
/** A guest kind. */
export type GuestKind = keyof typeof GUESTS;

/** A system under test, set up. */
export interface Rig {
  /** The guests it booted, by kind. */
  guests: Partial<Record<GuestKind, QemuGuest>>;
  /** The host side. */
  ns: NetNs;
  /** What the system tells about its ports after the runs (vswitch only), or undefined. */
  counters(): Promise<SwitchReport | undefined>;
  /** The switch's own process, whose threads' CPU time is read around each run, if it has one. */
  switchPid?: number;
  /** What was special about this setup, for the report. */
  notes: string[];
}

/** vswitch's ports after the runs: every counter, and what each port offers and negotiated. */
export interface SwitchReport {
  /** Where it came from: the control API (`ports --json`) or the last `--stats` table. */
  source: string;
  ports: Record<string, {
    counters: Record<string, number | string>;
    offloads?: string[];
    /** A guest's virtio features, the TAP's TUNSETOFFLOAD flags (the API's `negotiated`). */
    negotiated?: string[];
  }>;
}

/** Undo steps, run in reverse order; each one's failure is reported, none stops the rest. */
export class Cleanup {
  readonly #steps: [string, () => Promise<unknown> | unknown][] = [];

  /** Registers an undo step. */
  add(what: string, fn: () => Promise<unknown> | unknown): void {
    this.#steps.push([what, fn]);
  }

  /** Runs every step, last first. */
  async run(): Promise<void> {
    for (const [what, fn] of this.#steps.splice(0).reverse()) {
      try {
        await fn();
      } catch (e) {
        console.error(`[bench] cleanup ${what}: ${(e as Error).message.split("\n")[0]}`);
      }
    }
  }
}

/** Names unique to one rig (TAPs are at most 15 characters). */
function names(id: string, tag: string) {
  return {
    ns: `vsi${tag}${id}`,
    tap: (i: number | string) => `vsi${tag}${i}${id}`.slice(0, 15),
  };
}

async function hostNs(cleanup: Cleanup, name: string): Promise<NetNs> {
  const ns = await NetNs.create(name);
  cleanup.add(`netns ${name}`, () => ns[Symbol.asyncDispose]());
  // One server serves the runs one after another; its output is not needed.
  ns.spawn("iperf3", "-s", "--logfile", "/dev/null");
  return ns;
}

async function bootGuests(
  cleanup: Cleanup,
  kinds: GuestKind[],
  make: (kind: GuestKind, n: number, props: readonly string[]) => QemuGuest,
): Promise<Partial<Record<GuestKind, QemuGuest>>> {
  const guests: Partial<Record<GuestKind, QemuGuest>> = {};
  for (const k of kinds) {
    const g = make(k, GUESTS[k].n, GUESTS[k].props);
    guests[k] = g;
    cleanup.add(`guest ${g.options.name}`, () => g.stop());
  }
  await Promise.all(Object.values(guests).map((g) => g.boot()));
  for (const k of ["tso1", "tso2"] as const) if (guests[k]) await iperfServerInGuest(guests[k]);
  return guests;
}

function guestOptions(dir: string, kind: GuestKind, n: number, img: GuestImage) {
  return {
    name: `${kind}`,
    mac: `52:54:00:00:00:0${n}`,
    ip: `10.0.0.${n}/24`,
    image: img,
    logFile: `${dir}/${kind}.log`,
  };
}

/** Parses the last `--stats` table the CLI printed: port → column → value. */
export function lastStatsTable(text: string): Record<string, Record<string, string>> | undefined {
  const at = text.lastIndexOf("\nport ");
  if (at < 0) return undefined;
  const lines = text.slice(at + 1).split("\n");
  const head = lines[0].trim().split(/\s{2,}/);
  const table: Record<string, Record<string, string>> = {};
  for (const line of lines.slice(1)) {
    const detail = line.match(/^\s+(\S+) drops: (.*)$/);
    if (detail && table[detail[1]]) {
      for (const kv of detail[2].split(" ")) {
        const [k, v] = kv.split("=");
        table[detail[1]][`drop ${k}`] = v;
      }
      continue;
    }
    const cells = line.trim().split(/\s{2,}/);
    if (!line.trim() || cells.length !== head.length) break;
    table[cells[0]] = Object.fromEntries(head.map((h, i) => [h, cells[i]]));
  }
  return table;
}

/**
 * The `--allow-*` flags of `deno task start` (deno.json), so the bench runs the
 * switch a user runs, with the permissions it has, whatever they become.
 */
function startPermissions(): string[] {
  const config = JSON.parse(
    Deno.readTextFileSync(new URL("../deno.json", import.meta.url)),
  ) as { tasks: Record<string, string> };
  return config.tasks.start.split(/\s+/).filter((a) => a.startsWith("--allow-"));
}

/**
 * vswitch's ports from its control API (`main.ts ports --json`: every counter by name, so the
 * ones added later show up too), or, where the CLI has no control API, its last `--stats` table.
 */
async function switchReport(
  cli: string,
  control: string,
  statsOutput: string,
): Promise<SwitchReport | undefined> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...startPermissions(), cli, "ports", "--json"],
    env: { DENO_NO_UPDATE_CHECK: "1", VSWITCH_CONTROL: control },
    stdout: "piped",
    stderr: "piped",
  }).output();
  try {
    if (!out.success) throw new Error("no control API");
    const list = JSON.parse(new TextDecoder().decode(out.stdout)) as {
      name: string;
      counters: Record<string, number>;
      offloads?: string[];
      // `negotiated`, not `features`: the latter is a guest's virtio features only (empty for a TAP).
      negotiated?: string[];
    }[];
    return {
      source: "control API (ports --json)",
      ports: Object.fromEntries(
        list.map((
          p,
        ) => [p.name, { counters: p.counters, offloads: p.offloads, negotiated: p.negotiated }]),
      ),
    };
  } catch {
    const table = lastStatsTable(statsOutput);
    if (!table) return undefined;
    return {
      source: "--stats table",
      ports: Object.fromEntries(Object.entries(table).map(([n, c]) => [n, { counters: c }])),
    };
  }
}

/** vswitch: the CLI in its own process. */
export async function vswitchRig(
  cleanup: Cleanup,
  dir: string,
  img: GuestImage,
  id: string,
  kinds: GuestKind[],
): Promise<Rig> {
  const n = names(id, "v");
  const tap = n.tap("t");
  const cli = new URL("../src/cli/main.ts", import.meta.url).pathname;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...startPermissions(),
      v8FlagsArg(),
      cli,
      ...kinds.flatMap((k) => ["--vhost", `${k}=${dir}/${k}.sock`]),
      "--tap",
      tap,
      "--stats",
      "2",
    ],
    // A control socket of its own where the CLI has one: the default path is machine-wide.
    env: { DENO_NO_UPDATE_CHECK: "1", VSWITCH_CONTROL: `${dir}/control.sock` },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let out = "";
  const pump = async (s: ReadableStream<Uint8Array>) => {
    try {
      for await (const c of s.pipeThrough(new TextDecoderStream())) out += c;
    } catch { /* gone */ }
  };
  pump(child.stdout);
  pump(child.stderr);
  let exited = false;
  const status = child.status.then((s) => (exited = true, s));
  cleanup.add(`vswitch pid ${child.pid}`, async () => {
    if (!exited) child.kill("SIGTERM");
    const t = setTimeout(() => !exited && child.kill("SIGKILL"), 5000);
    await status;
    clearTimeout(t);
  });
  for (let i = 0; !/Ready/.test(out); i++) {
    if (exited || i > 300) throw new Error(`Cannot start vswitch:\n${out}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const ns = await hostNs(cleanup, n.ns);
  await ns.adopt(tap, `${HOST_IP}/24`);
  const guests = await bootGuests(cleanup, kinds, (k, i, props) =>
    new QemuGuest({
      ...guestOptions(dir, k, i, img),
      socketPath: `${dir}/${k}.sock`,
      deviceProps: props,
    }));
  return {
    guests,
    ns,
    counters: () => switchReport(cli, `${dir}/control.sock`, out),
    switchPid: child.pid,
    notes: [
      `vswitch: src/cli/main.ts ${kinds.map((k) => `--vhost ${k}=DIR/${k}.sock`).join(" ")} ` +
      `--tap ${tap} --stats 2`,
    ],
  };
}

/** The Linux bridge with QEMU's own virtio-net over TAPs. */
export async function bridgeRig(
  cleanup: Cleanup,
  dir: string,
  img: GuestImage,
  id: string,
  kinds: GuestKind[],
): Promise<Rig> {
  const n = names(id, "b");
  const br = n.tap("br");
  await sh("ip", "link", "add", br, "type", "bridge");
  cleanup.add(`bridge ${br}`, () => sh("ip", "link", "del", br));
  await sh("ip", "link", "set", br, "up");
  const ns = await hostNs(cleanup, n.ns);
  const [vb, vn] = [n.tap("vb"), n.tap("vn")];
  await sh("ip", "link", "add", vb, "type", "veth", "peer", "name", vn);
  cleanup.add(`veth ${vb}`, () => sh("ip", "link", "del", vb).catch(() => {}));
  await sh("ip", "link", "set", vb, "master", br, "up");
  await ns.adopt(vn, `${HOST_IP}/24`);
  const taps: Partial<Record<GuestKind, string>> = {};
  for (const k of kinds) {
    const tap = n.tap(GUESTS[k].n);
    await sh("ip", "tuntap", "add", "dev", tap, "mode", "tap");
    cleanup.add(`tap ${tap}`, () => sh("ip", "tuntap", "del", "dev", tap, "mode", "tap"));
    await sh("ip", "link", "set", tap, "master", br, "up");
    taps[k] = tap;
  }
  const guests = await bootGuests(
    cleanup,
    kinds,
    (k, i, props) =>
      new QemuGuest({ ...guestOptions(dir, k, i, img), tap: taps[k], deviceProps: props }),
  );
  let nf = "";
  try {
    nf = Deno.readTextFileSync("/proc/sys/net/bridge/bridge-nf-call-iptables").trim();
  } catch { /* br_netfilter not loaded */ }
  return {
    guests,
    ns,
    counters: () => Promise.resolve(undefined),
    notes: [
      `bridge: ${br}, guest TAPs (vhost=off), veth ${vb} -> ${vn} in ${ns.name}` +
      (nf ? `; bridge-nf-call-iptables=${nf} (left as the machine has it)` : ""),
    ],
  };
}

/** DPDK testpmd: io-forward, `tso=1` vhost ports; a third vhost port paired with a net_tap port. */
export async function dpdkRig(
  cleanup: Cleanup,
  dir: string,
  img: GuestImage,
  id: string,
  kinds: GuestKind[],
): Promise<Rig> {
  const n = names(id, "d");
  const prefix = `vsiperf${id}`;
  const tap = n.tap("t");
  // tso=1 on the guest ports, except the one paired with the TAP: with it, TCP from that guest
  // to the host stalled (seen: 0.001 Gbit/s), most likely because io-forward hands net_tap the
  // 64 KiB GSO frames without a request to segment them and net_tap drops them as longer than
  // the MTU. Without tso the guest segments itself and the path works.
  const hostPort = kinds.indexOf("tsoHost");
  const vdevs = kinds.map((k, i) =>
    `--vdev=net_vhost${i},iface=${dir}/${k}.sock${i === hostPort ? "" : ",tso=1"}`
  );
  // Ports pair up 0<->1, 2<->3 (testpmd's default topology): the host TAP is the last port.
  vdevs.push(`--vdev=net_tap0,iface=${tap}`);
  const pmd = new Testpmd(prefix, vdevs, ["--forward-mode=io", "--nb-cores=1"], 0);
  cleanup.add(`testpmd pid ${pmd.pid}`, () => pmd.close());
  await pmd.ready();
  await pmd.command("start");
  const ns = await hostNs(cleanup, n.ns);
  await ns.adopt(tap, `${HOST_IP}/24`);
  const guests = await bootGuests(cleanup, kinds, (k, i, props) =>
    new QemuGuest({
      ...guestOptions(dir, k, i, img),
      socketPath: `${dir}/${k}.sock`,
      deviceProps: props,
    }));
  return {
    guests,
    ns,
    counters: () => Promise.resolve(undefined),
    notes: [
      `dpdk: testpmd ${vdevs.map((v) => v.replace(dir, "DIR")).join(" ")} --forward-mode=io; ` +
      `the host path's guest port has no tso=1 (net_tap drops io-forwarded GSO frames)`,
    ],
  };
}
