/**
 * The parts of the testpmd loop benchmark (TESTBED.md), shared by
 * `bench/loop.ts` (all systems) and `bench/profile_loop.ts` (vswitch
 * profiled): the three backends under test, each started on lcore 1 with N
 * vhost-user sockets, and the generator testpmd on lcore 0 with N
 * virtio-user ports in one of two topologies:
 *
 * - "ring": what port i receives it sends out of port i+1 addressed to
 *   port i+2's MAC (2 ports: A ↔ B; 3 ports: a ring through the switch);
 * - "pairs": testpmd's default paired topology, ports 0 ↔ 1 and 2 ↔ 3
 *   each forwarding to the other (port i sends to port i^1's MAC), so the
 *   switch sees two independent loops.
 *
 * Every backend forwards the same way: vswitch and OVS-DPDK by MAC
 * learning (each generator port has its own MAC, portMac(i)), DPDK's vhost
 * backend by io-forwarding in the same topology.
 *
 * @module
 */

import { portMac, Testpmd } from "../tests/helpers/dpdk.ts";
import { withV8Flags } from "../src/switch/v8_flags.ts";

/** How the generator's ports forward to each other. */
export type Topology = "ring" | "pairs";

/** One loop case. */
export interface LoopCase {
  name: string;
  size: number;
  ports: number;
  topology: Topology;
}

/** Every case `bench:loop` knows. */
export const ALL_CASES: LoopCase[] = [
  { name: "64B-2port", size: 64, ports: 2, topology: "ring" },
  { name: "1500B-2port", size: 1500, ports: 2, topology: "ring" },
  { name: "64B-3port", size: 64, ports: 3, topology: "ring" },
  { name: "64B-4port", size: 64, ports: 4, topology: "pairs" },
];

/** The systems measured, in chart order. */
export const SYSTEMS = ["vswitch", "dpdk", "ovs-dpdk"] as const;
/** One system. */
export type System = typeof SYSTEMS[number];

/** Sleeps `ms`. */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
/** The repository root (with a trailing slash). */
export const root: string = new URL("..", import.meta.url).pathname;

/** Runs a command; returns its stdout, throws with its stderr if it failed. */
export async function sh(cmd: string, ...args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    throw new Error(`Cannot run ${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
  return text;
}

/** Whether `path` exists. */
export function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** This process's nice value (a run under `nice -n -10` says so in its results). */
export function niceness(): number {
  const stat = Deno.readTextFileSync("/proc/self/stat");
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[16]); // field 19
}

/** The load average (1, 5, 15 min) as printed by /proc/loadavg. */
export function loadAverage(): string {
  return Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
}

/** A backend under test: started with N sockets, stopped afterwards. */
export interface Backend {
  sockets: string[];
  /** The switch's process id (vswitch only). */
  pid?: number;
  stop(): Promise<void>;
}

/** Extra ways to start vswitch (bench/profile_loop.ts). */
export interface VswitchOptions {
  /** Deno flags before the script (e.g. --cpu-prof). */
  denoFlags?: string[];
  /**
   * The dataplane's V8 flags (default true). bench/loop_ab.ts runs an older
   * tree the way that tree's own tasks ran it: without them if it predates them.
   */
  tuned?: boolean;
  /** Environment for the switch process (e.g. VSWITCH_PROFILE_COUNTS). */
  env?: Record<string, string>;
  /** Control socket path (default: none, no control API). */
  control?: string;
  /**
   * Another checkout to run the switch from (bench/loop_ab.ts), with a
   * trailing slash; default this one. A tree older than `--control` gets
   * no such flag.
   */
  tree?: string;
}

/** Whether the CLI of `tree` knows `--flag` (its option list is in src/cli/args.ts). */
function cliTakes(tree: string, flag: string): boolean {
  try {
    return Deno.readTextFileSync(`${tree}src/cli/args.ts`).includes(`"${flag}"`);
  } catch {
    return false;
  }
}

/**
 * `taskset` arguments that run `deno run -A ARGS…` on the switch's core,
 * lcore 1, with the dataplane's V8 flags (src/switch/v8_flags.ts) unless
 * `tuned` is false.
 */
export function onSwitchCore(denoArgs: string[], tuned = true): string[] {
  return ["-c", "1", Deno.execPath(), "run", "-A", ...(tuned ? withV8Flags(denoArgs) : denoArgs)];
}

/** vswitch on lcore 1 with one vhost-user port per socket (it listens). */
export async function startVswitch(
  dir: string,
  c: LoopCase,
  opts: VswitchOptions = {},
): Promise<Backend> {
  const sockets = Array.from({ length: c.ports }, (_, i) => `${dir}/vs${i}.sock`);
  const tree = opts.tree ?? root;
  const child = new Deno.Command("taskset", {
    args: onSwitchCore([
      ...(opts.denoFlags ?? []),
      `${tree}src/cli/main.ts`,
      ...sockets.flatMap((s, i) => ["--vhost", `p${i}=${s}`]),
      ...(cliTakes(tree, "control") ? ["--control", opts.control ?? "none"] : []),
      "--log-level",
      "warn",
    ], opts.tuned ?? true),
    env: opts.env,
    cwd: tree, // its own deno.json and lock
    stdout: "null",
    stderr: "piped",
  }).spawn();
  for (let i = 0; i < 100 && !sockets.every(exists); i++) await sleep(100);
  return {
    sockets,
    pid: child.pid,
    async stop() {
      child.kill("SIGTERM");
      await child.status;
      await child.stderr.cancel();
    },
  };
}

/** DPDK's own vhost backend: testpmd io-forward between net_vhost ports, same topology. */
export async function startDpdk(dir: string, c: LoopCase): Promise<Backend> {
  const sockets = Array.from({ length: c.ports }, (_, i) => `${dir}/ref${i}.sock`);
  // Reference ports forward like the generator's: 2 ports and pairs are testpmd's
  // default "paired" topology, a 3-port ring is "loop".
  const loop = c.topology === "ring" && c.ports > 2;
  const pmd = new Testpmd(
    "vsbenchref",
    sockets.map((s, i) => `--vdev=net_vhost${i},iface=${s}`),
    ["--forward-mode=io", "--nb-cores=1", ...(loop ? ["--port-topology=loop"] : [])],
    0,
  );
  await pmd.ready();
  await pmd.command("start");
  return { sockets, stop: () => pmd.close() };
}

/** Open vSwitch with DPDK: userspace datapath, NORMAL pipeline, dpdkvhostuser ports. */
export async function startOvs(dir: string, c: LoopCase): Promise<Backend> {
  const n = c.ports;
  const run = `${dir}/ovs-${n}-${Date.now()}`; // a fresh database per run
  Deno.mkdirSync(run, { recursive: true });
  const env = { OVS_RUNDIR: run, OVS_DBDIR: run, OVS_LOGDIR: run };
  const db = `unix:${run}/db.sock`;
  const cmd = async (c: string, ...args: string[]) => {
    const out = await new Deno.Command(c, { args, env, stdout: "piped", stderr: "piped" }).output();
    if (!out.success) {
      throw new Error(`Cannot run ${c} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
    }
  };
  await cmd("ovsdb-tool", "create", `${run}/conf.db`, "/usr/share/openvswitch/vswitch.ovsschema");
  await cmd(
    "ovsdb-server",
    `${run}/conf.db`,
    `--remote=punix:${run}/db.sock`,
    `--pidfile=${run}/ovsdb.pid`,
    "--detach",
    "--no-chdir",
    `--log-file=${run}/ovsdb.log`,
  );
  await cmd("ovs-vsctl", `--db=${db}`, "--no-wait", "init");
  await cmd(
    "ovs-vsctl",
    `--db=${db}`,
    "--no-wait",
    "set",
    "Open_vSwitch",
    ".",
    "other_config:dpdk-init=true",
    "other_config:dpdk-extra=--no-pci --single-file-segments --file-prefix=vsbenchovs",
    "other_config:dpdk-socket-mem=256",
    "other_config:dpdk-lcore-mask=0x1",
    "other_config:pmd-cpu-mask=0x2",
  );
  await cmd(
    "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk",
    db,
    `--pidfile=${run}/vswitchd.pid`,
    "--detach",
    "--no-chdir",
    `--log-file=${run}/vswitchd.log`,
  );
  await cmd(
    "ovs-vsctl",
    `--db=${db}`,
    "--timeout=30",
    "add-br",
    "br0",
    "--",
    "set",
    "bridge",
    "br0",
    "datapath_type=netdev",
  );
  const sockets: string[] = [];
  for (let i = 0; i < n; i++) {
    await cmd(
      "ovs-vsctl",
      `--db=${db}`,
      "--timeout=30",
      "add-port",
      "br0",
      `vhu${i}`,
      "--",
      "set",
      "Interface",
      `vhu${i}`,
      "type=dpdkvhostuser",
    );
    sockets.push(`${run}/vhu${i}`);
  }
  return {
    sockets,
    async stop() {
      for (const p of ["vswitchd.pid", "ovsdb.pid"]) {
        try {
          const pid = Number(Deno.readTextFileSync(`${run}/${p}`).trim());
          Deno.kill(pid, "SIGTERM");
          for (let i = 0; i < 50 && exists(`/proc/${pid}`); i++) await sleep(100);
          if (exists(`/proc/${pid}`)) Deno.kill(pid, "SIGKILL");
        } catch { /* not running */ }
      }
      for (const e of Deno.readDirSync("/dev/hugepages")) {
        if (e.name.startsWith("vsbenchovs")) Deno.removeSync(`/dev/hugepages/${e.name}`);
      }
    },
  };
}

/** Starts `system` for case `c`. */
export function startBackend(system: System, dir: string, c: LoopCase): Promise<Backend> {
  if (system === "vswitch") return startVswitch(dir, c);
  if (system === "dpdk") return startDpdk(dir, c);
  return startOvs(dir, c);
}

/**
 * The generator: one virtio-user port per socket, MAC-forwarding in the
 * case's topology, `txpkts`-byte frames, one forwarding lcore (lcore 0).
 */
export function generator(sockets: string[], c: LoopCase): Testpmd {
  const n = sockets.length;
  const peer = (i: number) => c.topology === "pairs" ? i ^ 1 : n === 2 ? 1 - i : (i + 1) % n;
  return new Testpmd(
    "vsbenchgen",
    sockets.map((s, i) => `--vdev=net_virtio_user${i},path=${s},mac=${portMac(i)},queue_size=256`),
    [
      "--forward-mode=mac",
      // "ring" with more than 2 ports needs testpmd's loop topology; pairs are its default.
      ...(c.topology === "ring" && n > 2 ? ["--port-topology=loop"] : []),
      ...sockets.map((_, i) => `--eth-peer=${i},${portMac(peer(i))}`),
      `--txpkts=${c.size}`,
      "--nb-cores=1",
    ],
  );
}

/** Samples taken per measurement, and their length. */
export const SAMPLES = 3;
export const SAMPLE_MS = 2000;

/** What one measurement saw: the generator's Rx-pps per port, averaged over the samples. */
export interface LoopRate {
  /** Mpps summed over the generator's ports: the rate through the switch. */
  mpps: number;
  /** Mpps per generator port. */
  perPort: number[];
}

/**
 * Runs the generator against a started backend: 8 bursts injected, then
 * SAMPLES readings of `show port stats all`. `during` runs while the loop
 * flows (after the first reading) and its result is returned with the rate.
 */
export async function runLoop<T = undefined>(
  backend: Backend,
  c: LoopCase,
  during?: () => Promise<T>,
): Promise<LoopRate & { during?: T }> {
  const gen = generator(backend.sockets, c);
  try {
    await gen.ready();
    await sleep(3000); // vhost-user setup on both sides before the first frame
    await gen.command("start tx_first 8");
    await gen.portStats(); // the first read only sets the baseline
    const duringP = during?.();
    const sums = new Array(c.ports).fill(0);
    for (let i = 0; i < SAMPLES; i++) {
      await sleep(SAMPLE_MS);
      for (const p of await gen.portStats()) sums[p.port] += p.rxPps;
    }
    const perPort = sums.map((s) => s / SAMPLES / 1e6);
    return {
      mpps: perPort.reduce((a, b) => a + b, 0),
      perPort,
      during: duringP === undefined ? undefined : await duringP,
    };
  } finally {
    await gen.close();
  }
}

/** Per pair of ports (0+1, 2+3, …): the pair's Mpps. */
export function pairRates(perPort: number[]): number[] {
  const out: number[] = [];
  for (let i = 0; i + 1 < perPort.length; i += 2) out.push(perPort[i] + perPort[i + 1]);
  return out;
}
