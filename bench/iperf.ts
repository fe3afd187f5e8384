/**
 * `deno task bench:iperf` (as root): TCP between real guests (issue 10), in
 * one run, through vswitch, the Linux bridge (the anchor: what a user has
 * without any userspace switch) and DPDK testpmd with `tso=1`:
 * - guest ↔ guest and guest ↔ host (the host stack in a namespace);
 * - a guest with every offload off ↔ a guest with offloads on, and a guest
 *   without MRG_RXBUF ↔ a guest with offloads on (vswitch and bridge).
 *
 * Each direction runs RUNS times for SECONDS (`iperf3 -t`, the client in
 * guest A, `-R` for B → A) after a discarded 1 s warm-up, in two TCG
 * guests of 256 MiB (the busybox image with iperf3). The runs are
 * interleaved: round i boots every system in turn and measures run i of
 * each of its paths, so a drift of the shared machine's load hits every
 * system alike. The table gives each run, the median, and the ratio of
 * medians to the bridge. The rigs are in bench/iperf_rigs.ts. Results: a Markdown table on stdout and
 * bench/results/iperf-<time>.json + iperf-latest.json, with vswitch's
 * ports after its runs: every counter by name and what each port negotiated
 * (from its control API, or its `--stats` table where it has none).
 *
 * It also reads the CPU time of each of vswitch's threads around every run
 * (bench/thread_times.ts) and prints the cores each thread name used: on 2
 * cores, what the switch takes the TCG vCPUs lack. For every system it
 * reads the machine's busy and stolen time and each guest's QEMU threads
 * (its vCPU, and the rest) around every run: whether the guests had the
 * CPU they could use, and who took it when not.
 *
 * `deno task bench:iperf [vswitch|bridge|dpdk …] [--seconds 5] [--runs 3]
 *  [--paths guest-guest,guest-host,mixed,mrg-off]`
 *
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";
import { DEMO_PACKAGES, installPackages, say, setupHugepages } from "../src/cli/install.ts";
import { buildGuestImage, type GuestImage } from "../src/guest/image.ts";
import { uniqueSuffix } from "../tests/helpers/env.ts";
import { iperfFromGuest, pingUntilUp } from "../tests/helpers/iperf.ts";
import {
  coresByName,
  machineCores,
  machineTimes,
  type ThreadTimes,
  threadTimes,
} from "./thread_times.ts";
import { median } from "./stats.ts";
import {
  bridgeRig,
  Cleanup,
  dpdkRig,
  type GuestKind,
  GUESTS,
  HOST_IP,
  type Rig,
  type SwitchReport,
  vswitchRig,
} from "./iperf_rigs.ts";

const SYSTEMS = ["vswitch", "bridge", "dpdk"] as const;
type System = typeof SYSTEMS[number];

/** One pair of endpoints, measured both ways. */
interface PathDef {
  key: string;
  /** "A ↔ B" for the table. */
  title: string;
  /** Guest A (runs the iperf3 client), per system. */
  client: (s: System) => GuestKind;
  /** B: a guest (its iperf3 server) or the host. */
  server: GuestKind | "host";
  systems: readonly System[];
}

const PATHS: PathDef[] = [
  {
    key: "guest-guest",
    title: "guest ↔ guest",
    client: () => "tso1",
    server: "tso2",
    systems: SYSTEMS,
  },
  {
    key: "guest-host",
    title: "guest ↔ host",
    client: (s) => (s === "dpdk" ? "tsoHost" : "tso1"),
    server: "host",
    systems: SYSTEMS,
  },
  {
    key: "mixed",
    title: "no-offload guest ↔ TSO guest",
    client: () => "plain",
    server: "tso1",
    systems: ["vswitch", "bridge"],
  },
  {
    key: "mrg-off",
    title: "mrg_rxbuf=off guest ↔ TSO guest",
    client: () => "bigRx",
    server: "tso1",
    systems: ["vswitch", "bridge"],
  },
];

/** The guests each system boots. */
const KINDS: Record<System, GuestKind[]> = {
  vswitch: ["tso1", "tso2", "plain", "bigRx"],
  bridge: ["tso1", "tso2", "plain", "bigRx"],
  // testpmd pairs ports 0<->1 and 2<->3: tsoHost (port 2) with the TAP (port 3).
  dpdk: ["tso1", "tso2", "tsoHost"],
};

/** One path through one system. */
interface Row {
  path: string;
  title: string;
  system: System;
  /** Gbit/s of each run, A → B (null: the run failed). */
  forward: (number | null)[];
  /** Gbit/s of each run, B → A. */
  reverse: (number | null)[];
  /** Why this cell has no figures. */
  na?: string;
  errors: string[];
  /** Cores the switch's threads used during each run, by thread name (vswitch only). */
  switchCores?: { forward: Record<string, number>[]; reverse: Record<string, number>[] };
  /** Where the machine's CPU went during each run, every system. */
  cpu?: { forward: CpuShare[]; reverse: CpuShare[] };
}

/**
 * Cores during one run: the whole machine (busy, and stolen by the
 * hypervisor), and each guest's QEMU split into its vCPU thread (TCG: the
 * guest's own work) and the rest (its main loop: interrupts, the bridge's
 * virtio-net and TAP I/O). On 2 cores this says whether the guests had the
 * CPU they could use, and who else took it.
 */
interface CpuShare {
  machine: number;
  steal: number;
  clientVcpu: number;
  clientQemu: number;
  /** null when B is the host. */
  serverVcpu: number | null;
  serverQemu: number | null;
}

/** A QEMU's cores between two readings: its vCPU threads ("CPU 0/TCG") and the rest. */
function qemuCores(
  a: Map<number, ThreadTimes>,
  b: Map<number, ThreadTimes>,
  seconds: number,
): { vcpu: number; other: number } {
  let vcpu = 0, other = 0;
  for (const [name, cores] of Object.entries(coresByName(a, b, seconds))) {
    if (/^CPU \d+\//.test(name)) vcpu += cores;
    else other += cores;
  }
  return { vcpu: Number(vcpu.toFixed(3)), other: Number(other.toFixed(3)) };
}

const args = parseArgs(Deno.args, { string: ["seconds", "runs", "paths"] });
const SECONDS = Number(args.seconds ?? 5);
const RUNS = Number(args.runs ?? 3);
const PATH_KEYS = PATHS.map((p) => p.key);
const chosenPaths = args.paths === undefined ? PATH_KEYS : String(args.paths).split(",");
for (const k of chosenPaths) {
  if (!PATH_KEYS.includes(k)) {
    console.error(`bench:iperf: unknown path "${k}"; --paths takes ${PATH_KEYS.join(",")}`);
    Deno.exit(2);
  }
}
const chosen = (args._ as string[]).filter((a) => (SYSTEMS as readonly string[]).includes(a));
const systems: System[] = chosen.length ? chosen as System[] : [...SYSTEMS];
const root = new URL("..", import.meta.url).pathname;

function ipOf(kind: GuestKind | "host"): string {
  return kind === "host" ? HOST_IP : `10.0.0.${GUESTS[kind].n}`;
}

/** The row of `path` through `system`, made on first use. */
function rowOf(rows: Row[], system: System, path: PathDef): Row {
  let row = rows.find((r) => r.system === system && r.path === path.key);
  if (!row) {
    row = { path: path.key, title: path.title, system, forward: [], reverse: [], errors: [] };
    rows.push(row);
  }
  return row;
}

/** Measures one run of `path` (both ways) on a set-up rig, into `row`. */
async function measure(rig: Rig, system: System, path: PathDef, row: Row): Promise<void> {
  const client = rig.guests[path.client(system)];
  if (!client) {
    row.na = `no guest ${path.client(system)}`;
    return;
  }
  const server = ipOf(path.server);
  await pingUntilUp(client, server);
  // TCG translates the guests' TCP paths on first use: the first second is slower.
  await iperfFromGuest(client, { server, seconds: 1 }).catch(() => {});
  for (const reverse of [false, true]) {
    const into = reverse ? row.reverse : row.forward;
    try {
      const pid = rig.switchPid;
      const serverGuest = path.server === "host" ? undefined : rig.guests[path.server];
      const before = pid === undefined ? undefined : threadTimes(pid);
      const m0 = machineTimes();
      const c0 = threadTimes(client.pid);
      const s0 = serverGuest && threadTimes(serverGuest.pid);
      const t0 = performance.now();
      const r = await iperfFromGuest(client, { server, seconds: SECONDS, reverse });
      into.push(Number((r.bitsPerSecond / 1e9).toFixed(3)));
      const secs = (performance.now() - t0) / 1000;
      const m = machineCores(m0, machineTimes(), secs);
      const cq = qemuCores(c0, threadTimes(client.pid), secs);
      const sq = serverGuest && s0 ? qemuCores(s0, threadTimes(serverGuest.pid), secs) : null;
      row.cpu ??= { forward: [], reverse: [] };
      row.cpu[reverse ? "reverse" : "forward"].push({
        machine: m.busy,
        steal: m.steal,
        clientVcpu: cq.vcpu,
        clientQemu: cq.other,
        serverVcpu: sq?.vcpu ?? null,
        serverQemu: sq?.other ?? null,
      });
      if (pid !== undefined && before) {
        const cores = coresByName(before, threadTimes(pid), secs);
        row.switchCores ??= { forward: [], reverse: [] };
        row.switchCores[reverse ? "reverse" : "forward"].push(cores);
      }
    } catch (e) {
      into.push(null);
      row.errors.push((e as Error).message.split("\n").slice(0, 6).join(" | "));
    }
    say("bench", `  ${system} ${path.title} ${reverse ? "B→A" : "A→B"}: ${into.at(-1)} Gbit/s`);
  }
}

const RIGS = { vswitch: vswitchRig, bridge: bridgeRig, dpdk: dpdkRig };

/** Sets up `system`, measures one run of its paths, tears it down (whatever happened). */
async function runSystem(
  system: System,
  img: GuestImage,
  dir: string,
  cleanup: Cleanup,
  report: { rows: Row[]; counters: SwitchReport | undefined; notes: string[] },
): Promise<void> {
  const sub = await Deno.makeTempDir({ dir, prefix: `${system}-` });
  const paths = PATHS.filter((p) => p.systems.includes(system) && chosenPaths.includes(p.key));
  try {
    say("bench", `${system}: booting ${KINDS[system].length} guests …`);
    const rig = await RIGS[system](cleanup, sub, img, uniqueSuffix(), KINDS[system]);
    // One note per system: later rounds differ only in the names they made.
    for (const n of rig.notes) {
      const head = n.split(" ")[0];
      if (!report.notes.some((m) => m.split(" ")[0] === head)) report.notes.push(n);
    }
    for (const p of paths) {
      const row = rowOf(report.rows, system, p);
      await measure(rig, system, p, row).catch((e) => {
        row.forward.push(null);
        row.reverse.push(null);
        row.errors.push((e as Error).message.split("\n").slice(0, 8).join(" | "));
      });
    }
    if (system === "vswitch") {
      // The --stats table prints every 2 s: let one more come after the last run.
      // (Each round boots afresh: the counters are those of the last round.)
      await new Promise((r) => setTimeout(r, 2500));
      report.counters = await rig.counters();
    }
  } catch (e) {
    const why = (e as Error).message.split("\n")[0];
    say("bench", `${system} failed: ${why}`);
    for (const p of paths) {
      const row = rowOf(report.rows, system, p);
      if (row.forward.length === 0) row.na = why;
      row.errors.push((e as Error).message.slice(0, 2000));
    }
  } finally {
    await cleanup.run();
  }
}

/** Each run, then the median: "0.91, 1.02, 0.97 (med 0.97)". */
function fmtRuns(xs: (number | null)[]): string {
  const runs = xs.map((x) => (x === null ? "fail" : x.toFixed(2))).join(", ");
  const m = median(xs);
  return xs.length > 1 && m !== undefined ? `${runs} (med ${m.toFixed(2)})` : runs;
}

/** The ratio of medians. */
function ratio(a: (number | null)[], b: (number | null)[] | undefined): string {
  const ma = median(a), mb = b && median(b);
  return ma !== undefined && mb ? (ma / mb).toFixed(2) : "–";
}

/** The Markdown table. */
function table(rows: Row[]): string {
  const head = [
    "path (A ↔ B)",
    "system",
    "A → B Gbit/s",
    "B → A Gbit/s",
    "÷ bridge, medians (A→B, B→A)",
  ];
  const body = rows.map((r) => {
    const ref = rows.find((b) => b.path === r.path && b.system === "bridge");
    if (r.na) return [r.title, r.system, `n/a: ${r.na}`, "", ""];
    const rel = r.system === "bridge" || !ref || ref.na
      ? "–"
      : `${ratio(r.forward, ref.forward)}, ${ratio(r.reverse, ref.reverse)}`;
    return [r.title, r.system, fmtRuns(r.forward), fmtRuns(r.reverse), rel];
  });
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i])).join(" | ")} |`;
  return [line(head), line(widths.map((w) => "-".repeat(w))), ...body.map(line)].join("\n");
}

/** vswitch's ports: non-zero counters, offers and negotiated features. */
function portLines(r: SwitchReport): string {
  return Object.entries(r.ports).map(([name, p]) =>
    `${name}: ${
      Object.entries(p.counters).filter(([, v]) => v !== 0 && v !== "0" && v !== "")
        .map(([k, v]) => `${k}=${v}`).join(" ")
    }${p.offloads ? `\n  offers: ${p.offloads.join(",") || "none"}` : ""}${
      p.negotiated ? `\n  negotiated: ${p.negotiated.join(",") || "none"}` : ""
    }`
  ).join("\n");
}

/** Per vswitch row and direction: each thread name's median cores over the runs. */
function coreLines(rows: Row[]): string {
  const lines: string[] = [];
  for (const r of rows) {
    if (!r.switchCores) continue;
    for (const dir of ["forward", "reverse"] as const) {
      const runs = r.switchCores[dir];
      const names = [...new Set(runs.flatMap((c) => Object.keys(c)))];
      const med = names.map((n) => [n, median(runs.map((c) => c[n] ?? 0)) ?? 0] as const)
        .filter(([, v]) => v >= 0.005).sort((a, b) => b[1] - a[1]);
      const total = median(runs.map((c) => Object.values(c).reduce((t, v) => t + v, 0))) ?? 0;
      lines.push(
        `${r.title} ${dir === "forward" ? "A → B" : "B → A"}: total ${total.toFixed(2)}; ` +
          med.map(([n, v]) => `${n} ${v.toFixed(2)}`).join(", "),
      );
    }
  }
  return lines.join("\n");
}

/** Per row and direction, the medians of where the CPU went (CpuShare). */
function cpuLines(rows: Row[]): string {
  const lines: string[] = [];
  const med = (xs: (number | null)[]) => {
    const m = median(xs);
    return m === undefined ? "–" : m.toFixed(2);
  };
  for (const r of rows) {
    if (!r.cpu) continue;
    for (const dir of ["forward", "reverse"] as const) {
      const runs = r.cpu[dir];
      const pick = (k: keyof CpuShare) => med(runs.map((c) => c[k]));
      lines.push(
        `| ${r.title} | ${r.system} | ${dir === "forward" ? "A → B" : "B → A"} | ` +
          `${pick("machine")} | ${pick("steal")} | ${pick("clientVcpu")} | ` +
          `${pick("clientQemu")} | ${pick("serverVcpu")} | ${pick("serverQemu")} |`,
      );
    }
  }
  if (lines.length === 0) return "";
  return [
    "| path | system | dir | machine busy | stolen | A vCPU | A QEMU other | B vCPU | B QEMU other |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ...lines,
  ].join("\n");
}

if (Deno.uid() !== 0) {
  console.error("bench:iperf needs root (TAPs, bridges, namespaces, hugepages).");
  Deno.exit(2);
}
const t0 = performance.now();
// The machine is shared: the load around the run says how far its figures can be trusted.
const loadavg = () => Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
const loadBefore = loadavg();
const packages = [...DEMO_PACKAGES, ...(systems.includes("dpdk") ? ["dpdk", "dpdk-dev"] : [])];
if (!(await installPackages("bench", packages))) Deno.exit(1);
if (systems.includes("dpdk") && !(await setupHugepages("bench"))) Deno.exit(1);
const img = await buildGuestImage(`${root}.work/guest`);
const dir = await Deno.makeTempDir({ prefix: "vswitch-iperf-" });
const cleanup = new Cleanup();
// Ctrl-C must not leave guests, namespaces or a testpmd behind.
const onSignal = async () => {
  say("bench", "interrupted: cleaning up");
  await cleanup.run();
  await Deno.remove(dir, { recursive: true }).catch(() => {});
  Deno.exit(130);
};
Deno.addSignalListener("SIGINT", onSignal);
Deno.addSignalListener("SIGTERM", onSignal);

const report = {
  date: new Date().toISOString(),
  machine: "",
  versions: {} as Record<string, string>,
  method: `iperf3 -t ${SECONDS} -f m, client in guest A, -R for B -> A, ${RUNS} runs per ` +
    `direction, interleaved (round i boots each system in turn for run i), each after a 1 s ` +
    `warm-up; TCG guests, 256 MiB, 1 vCPU; the receiver's rate; ratios of medians`,
  command: `deno task bench:iperf${Deno.args.length ? " " + Deno.args.join(" ") : ""}`,
  rows: [] as Row[],
  counters: undefined as SwitchReport | undefined,
  notes: [] as string[],
  seconds: 0,
};
try {
  for (let i = 0; i < RUNS; i++) {
    say("bench", `round ${i + 1} of ${RUNS}`);
    for (const s of systems) await runSystem(s, img, dir, cleanup, report);
  }
} finally {
  await cleanup.run();
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}

const first = async (cmd: string, ...a: string[]) => {
  const o = await new Deno.Command(cmd, { args: a, stdout: "piped", stderr: "piped" }).output()
    .catch(() => undefined);
  return o ? new TextDecoder().decode(o.stdout).split("\n")[0].trim() : "";
};
const cpu = Deno.readTextFileSync("/proc/cpuinfo").match(/model name\s*:\s*(.*)/)?.[1] ?? "";
report.machine = `${navigator.hardwareConcurrency} cores, ${cpu}, kernel ${Deno.osRelease()}; ` +
  `load average ${loadBefore} before, ${loadavg()} after`;
report.versions = {
  deno: Deno.version.deno,
  qemu: await first("qemu-system-x86_64", "--version"),
  iperf3: await first("iperf3", "--version"),
  guestKernel: img.kernel,
};
report.seconds = Math.round((performance.now() - t0) / 1000);

const out = `${root}bench/results`;
Deno.mkdirSync(out, { recursive: true });
const json = JSON.stringify(report, null, 2) + "\n";
Deno.writeTextFileSync(`${out}/iperf-latest.json`, json);
Deno.writeTextFileSync(`${out}/iperf-${report.date.replaceAll(":", "-").slice(0, 19)}.json`, json);

console.log(`\n${table(report.rows)}\n`);
for (const r of report.rows) for (const e of r.errors) console.log(`${r.system} ${r.title}: ${e}`);
if (report.counters) {
  console.log(
    `vswitch after its last round (${report.counters.source}):\n${portLines(report.counters)}\n`,
  );
}
const cores = coreLines(report.rows);
if (cores) {
  console.log(`vswitch's threads, cores used during the runs (median per name):\n${cores}\n`);
}
const shares = cpuLines(report.rows);
if (shares) {
  console.log(
    `Where the CPU went (cores, medians over the runs; ${navigator.hardwareConcurrency} in all):\n` +
      `${shares}\n`,
  );
}
for (const n of report.notes) console.log(`note: ${n}`);
console.log(`\n${report.machine}; ${report.seconds} s; bench/results/iperf-latest.json`);
