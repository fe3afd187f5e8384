/**
 * `deno task bench:loop` (as root): the testpmd loop from TESTBED.md
 * through three switches in the same run — vswitch (MAC learning), DPDK's
 * own vhost backend (testpmd io-forward, no learning) and Open vSwitch with
 * DPDK (userspace datapath, NORMAL = MAC learning) — at 64 B and 1500 B
 * with two ports, 64 B with three ports in a ring, and 64 B with four
 * ports in two forwarding pairs (0 ↔ 1, 2 ↔ 3). A generator testpmd with
 * virtio-user ports injects 8 bursts per port and frames circulate; Rx-pps
 * summed over the generator's ports is the rate through the switch, and
 * for the 4-port case each pair's rate is compared with the 2-port case.
 * The parts: bench/loop_rig.ts.
 *
 * Results: bench/results/loop-latest.json (and a timestamped copy) and the
 * chart of every system, bench/results/chart-latest.svg (bench/chart.ts).
 * Each backend gets lcore 1, the generator lcore 0.
 *
 * `deno task bench:loop 64B-4port` runs only the named cases.
 *
 * @module
 */

import { DEMO_PACKAGES, installPackages, say, setupHugepages } from "../src/cli/install.ts";
import {
  ALL_CASES,
  loadAverage,
  type LoopRate,
  niceness,
  pairRates,
  root,
  runLoop,
  sh,
  sleep,
  startBackend,
  type System,
  SYSTEMS,
} from "./loop_rig.ts";
import { writeChart } from "./chart.ts";

const CASES = Deno.args.length ? ALL_CASES.filter((c) => Deno.args.includes(c.name)) : ALL_CASES;
if (CASES.length === 0) {
  console.error(`No such case: use one of ${ALL_CASES.map((c) => c.name).join(", ")}`);
  Deno.exit(2);
}

if (Deno.uid() !== 0) {
  console.error("bench:loop needs root (hugepages, DPDK, OVS-DPDK).");
  Deno.exit(2);
}
const t0 = performance.now();
const ok = (await installPackages("bench", [
  ...DEMO_PACKAGES,
  "dpdk",
  "dpdk-dev",
  "openvswitch-switch-dpdk",
])) &&
  // 2 GiB: the generator takes 256 MiB and OVS-DPDK grows past its socket-mem with 3 and 4
  // vhost ports (with 512 pages its third port left the generator's mbuf pool short, 20:00 UTC).
  (await setupHugepages("bench", 1024));
if (!ok) Deno.exit(1);
// The Debian package starts a system OVS; ours runs in its own directories.
await sh("sh", "-c", "systemctl stop openvswitch-switch 2>/dev/null; true");
const load = async () =>
  (await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3).join(" ");
const loadBefore = await load();

const dir = await Deno.makeTempDir({ prefix: "vswitch-bench-" });
const NONE: LoopRate = { mpps: 0, perPort: [] };
const results: Record<string, Record<System, LoopRate>> = {};
let step = 0;
try {
  for (const c of CASES) {
    results[c.name] = {} as Record<System, LoopRate>;
    for (const system of SYSTEMS) {
      step++;
      say("bench", `[${step}/${CASES.length * SYSTEMS.length}] ${c.name} through ${system} ...`);
      const once = async () => {
        const backend = await startBackend(system, dir, c);
        try {
          return await runLoop(backend, c);
        } finally {
          await backend.stop();
        }
      };
      // One retry: a backend from the previous run can still be releasing its hugepages.
      const rate = await once().catch(async (e) => {
        say("bench", `  ${system} failed (${(e as Error).message.split("\n")[0]}); retrying once`);
        await sleep(2000);
        return await once().catch((e2) => {
          say("bench", `  ${system} failed again: ${(e2 as Error).message.split("\n")[0]}`);
          return NONE;
        });
      });
      results[c.name][system] = rate;
      const pairs = c.topology === "pairs"
        ? `; pairs ${pairRates(rate.perPort).map((p) => p.toFixed(2)).join(" / ")} Mpps`
        : "";
      say(
        "bench",
        `  ${rate.mpps.toFixed(2)} Mpps, ${
          (rate.mpps * c.size * 8 / 1000).toFixed(1)
        } Gbit/s${pairs}`,
      );
    }
  }
} finally {
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}

const round2 = (x: number) => Number(x.toFixed(2));
const ratio = (a: number, b: number) => b > 0 ? round2(a / b) : null;
const cpu = (await sh("sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2")).trim();
const report = {
  date: new Date().toISOString(),
  machine:
    `${navigator.hardwareConcurrency} cores, ${cpu}; load average ${loadBefore} before, ${loadAverage()} after`,
  nice: niceness(),
  method:
    "testpmd virtio-user generator (lcore 0), 8 bursts of 32 in flight per port, backend on lcore 1; " +
    `Rx-pps summed over generator ports, mean of 3 × 2 s readings`,
  command: `deno task bench:loop${Deno.args.length ? " " + Deno.args.join(" ") : ""}`,
  cases: CASES.map((c) => {
    const r = results[c.name];
    const two = results[`${c.size}B-2port`];
    const pairs = c.topology === "pairs"
      ? Object.fromEntries(SYSTEMS.map((s) => [s, pairRates(r[s].perPort).map(round2)]))
      : undefined;
    return {
      case: c.name,
      frameBytes: c.size,
      ports: c.ports,
      topology: c.topology,
      mpps: Object.fromEntries(SYSTEMS.map((s) => [s, round2(r[s].mpps)])),
      perPortMpps: Object.fromEntries(SYSTEMS.map((s) => [s, r[s].perPort.map(round2)])),
      gbps: Object.fromEntries(SYSTEMS.map((s) => [s, round2(r[s].mpps * c.size * 8 / 1000)])),
      ratioVsDpdk: ratio(r.vswitch.mpps, r.dpdk.mpps),
      ratioVsOvs: ratio(r.vswitch.mpps, r["ovs-dpdk"].mpps),
      // Each pair's rate over the same system's 2-port rate (issue 11: ≥ 0.9 per pair).
      pairMpps: pairs,
      pairRatioVs2port: pairs && two
        ? Object.fromEntries(
          SYSTEMS.map((s) => [s, pairs[s].map((p) => ratio(p, two[s].mpps))]),
        )
        : undefined,
    };
  }),
  seconds: Math.round((performance.now() - t0) / 1000),
};
const out = `${root}bench/results`;
Deno.mkdirSync(out, { recursive: true });
const json = JSON.stringify(report, null, 2) + "\n";
// A run of some cases keeps the other cases' latest figures in loop-latest.json.
Deno.writeTextFileSync(`${out}/loop-${report.date.replaceAll(":", "-").slice(0, 19)}.json`, json);
if (CASES.length === ALL_CASES.length) Deno.writeTextFileSync(`${out}/loop-latest.json`, json);
else Deno.writeTextFileSync(`${out}/loop-partial-latest.json`, json);
writeChart(out);

console.log(
  `\n${"case".padEnd(12)} ${"vswitch".padStart(9)} ${"dpdk".padStart(9)} ${
    "ovs-dpdk".padStart(9)
  }  ours/dpdk  ours/ovs`,
);
for (const c of report.cases) {
  const m = c.mpps;
  const pairs = c.pairRatioVs2port
    ? `; per pair vs 2-port: ${
      SYSTEMS.map((s) => `${s} ${c.pairRatioVs2port![s].join("/")}`).join(", ")
    }`
    : "";
  console.log(
    `${c.case.padEnd(12)} ${m.vswitch.toFixed(2).padStart(9)} ${m.dpdk.toFixed(2).padStart(9)} ${
      m["ovs-dpdk"].toFixed(2).padStart(9)
    }  ${String(c.ratioVsDpdk).padStart(9)} ${
      String(c.ratioVsOvs).padStart(9)
    }   (Mpps; ${c.gbps.vswitch} / ${c.gbps.dpdk} / ${c.gbps["ovs-dpdk"]} Gbit/s)${pairs}`,
  );
}
console.log(
  `\n${report.machine}; ${report.seconds} s; results in bench/results/loop-latest.json, chart-latest.svg`,
);
