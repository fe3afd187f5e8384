/**
 * `deno task bench:loop` (as root): the testpmd loop from TESTBED.md
 * through three switches in the same run — vswitch (MAC learning), DPDK's
 * own vhost backend (testpmd io-forward, no learning) and Open vSwitch with
 * DPDK (userspace datapath, NORMAL = MAC learning) — at 64 B and 1500 B
 * with two ports, and 64 B with three ports. A generator testpmd with
 * virtio-user ports injects 8 bursts and frames circulate; Rx-pps summed
 * over the generator's ports is the rate through the switch.
 *
 * Results: bench/results/loop-latest.json and loop-latest.svg (and a
 * timestamped JSON copy). Each backend gets lcore 1, the generator lcore 0.
 *
 * @module
 */

import { DEMO_PACKAGES, installPackages, say, setupHugepages } from "../src/cli/install.ts";
import { Testpmd } from "../tests/helpers/dpdk.ts";

const ALL_CASES = [
  { name: "64B-2port", size: 64, ports: 2 },
  { name: "1500B-2port", size: 1500, ports: 2 },
  { name: "64B-3port", size: 64, ports: 3 },
];
/** `deno task bench:loop 64B-3port` runs only the named cases. */
const CASES = Deno.args.length ? ALL_CASES.filter((c) => Deno.args.includes(c.name)) : ALL_CASES;
const SYSTEMS = ["vswitch", "dpdk", "ovs-dpdk"] as const;
type System = typeof SYSTEMS[number];
const SAMPLES = 3;
const SAMPLE_MS = 2000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const root = new URL("..", import.meta.url).pathname;

async function sh(cmd: string, ...args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    throw new Error(`Cannot run ${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
  return text;
}

/** A backend under test: started with N sockets, stopped afterwards. */
interface Backend {
  sockets: string[];
  stop(): Promise<void>;
}

async function startVswitch(dir: string, n: number): Promise<Backend> {
  const sockets = Array.from({ length: n }, (_, i) => `${dir}/vs${i}.sock`);
  const child = new Deno.Command("taskset", {
    args: [
      "-c",
      "1",
      Deno.execPath(),
      "run",
      "-A",
      `${root}src/cli/main.ts`,
      ...sockets.flatMap((s, i) => ["--vhost", `p${i}=${s}`]),
      "--log-level",
      "warn",
    ],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  for (let i = 0; i < 100 && !sockets.every(exists); i++) await sleep(100);
  return {
    sockets,
    async stop() {
      child.kill("SIGTERM");
      await child.status;
      await child.stderr.cancel();
    },
  };
}

async function startDpdk(dir: string, n: number): Promise<Backend> {
  const sockets = Array.from({ length: n }, (_, i) => `${dir}/ref${i}.sock`);
  const pmd = Testpmd.reference("vsbenchref", sockets);
  await pmd.ready();
  await pmd.command("start");
  return { sockets, stop: () => pmd.close() };
}

async function startOvs(dir: string, n: number): Promise<Backend> {
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

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

const starters: Record<System, (dir: string, n: number) => Promise<Backend>> = {
  "vswitch": startVswitch,
  "dpdk": startDpdk,
  "ovs-dpdk": startOvs,
};

/** One measurement: average Mpps through the switch over the samples. */
async function measure(system: System, c: typeof CASES[number], dir: string): Promise<number> {
  const backend = await starters[system](dir, c.ports);
  const gen = Testpmd.ring("vsbenchgen", backend.sockets, c.size);
  try {
    await gen.ready();
    await sleep(3000); // vhost-user setup on both sides before the first frame
    await gen.command("start tx_first 8");
    await gen.portStats(); // the first read only sets the baseline
    const rates: number[] = [];
    for (let i = 0; i < SAMPLES; i++) {
      await sleep(SAMPLE_MS);
      rates.push((await gen.portStats()).reduce((s, p) => s + p.rxPps, 0));
    }
    return rates.reduce((a, b) => a + b, 0) / rates.length / 1e6;
  } finally {
    await gen.close();
    await backend.stop();
  }
}

function svg(results: Record<string, Record<System, number>>): string {
  const names = Object.keys(results);
  const colors: Record<System, string> = {
    "vswitch": "#2b7bb9",
    "dpdk": "#999999",
    "ovs-dpdk": "#e0a030",
  };
  const max = Math.max(...names.flatMap((n) => SYSTEMS.map((s) => results[n][s])), 0.001);
  const W = 640, H = 300, left = 50, bottom = 250, groupW = (W - left) / names.length;
  const bars = names.flatMap((n, gi) =>
    SYSTEMS.map((s, si) => {
      const v = results[n][s];
      const h = (v / max) * 200;
      const x = left + gi * groupW + 20 + si * ((groupW - 40) / 3);
      const w = (groupW - 40) / 3 - 4;
      return `<rect x="${x}" y="${bottom - h}" width="${w}" height="${h}" fill="${colors[s]}"/>` +
        `<text x="${x + w / 2}" y="${bottom - h - 4}" font-size="10" text-anchor="middle">${
          v.toFixed(2)
        }</text>`;
    })
  );
  const labels = names.map((n, gi) =>
    `<text x="${left + gi * groupW + groupW / 2}" y="${
      bottom + 18
    }" font-size="12" text-anchor="middle">${n}</text>`
  );
  const legend = SYSTEMS.map((s, i) =>
    `<rect x="${left + i * 130}" y="8" width="12" height="12" fill="${colors[s]}"/><text x="${
      left + i * 130 + 16
    }" y="19" font-size="12">${s}</text>`
  );
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif">` +
    `<rect width="100%" height="100%" fill="white"/>` +
    `<text x="10" y="${bottom - 100}" font-size="12" transform="rotate(-90 10 ${
      bottom - 100
    })">Mpps</text>` +
    `<line x1="${left}" y1="${bottom}" x2="${W}" y2="${bottom}" stroke="black"/>` +
    [...legend, ...bars, ...labels].join("") + `</svg>\n`;
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
  (await setupHugepages("bench"));
if (!ok) Deno.exit(1);
// The Debian package starts a system OVS; ours runs in its own directories.
await sh("sh", "-c", "systemctl stop openvswitch-switch 2>/dev/null; true");

const dir = await Deno.makeTempDir({ prefix: "vswitch-bench-" });
const results: Record<string, Record<System, number>> = {};
let step = 0;
try {
  for (const c of CASES) {
    results[c.name] = {} as Record<System, number>;
    for (const system of SYSTEMS) {
      step++;
      say("bench", `[${step}/${CASES.length * SYSTEMS.length}] ${c.name} through ${system} ...`);
      // One retry: a backend from the previous run can still be releasing its hugepages.
      const mpps = await measure(system, c, dir).catch(async (e) => {
        say("bench", `  ${system} failed (${(e as Error).message.split("\n")[0]}); retrying once`);
        await sleep(2000);
        return await measure(system, c, dir).catch((e2) => {
          say("bench", `  ${system} failed again: ${(e2 as Error).message.split("\n")[0]}`);
          return 0;
        });
      });
      results[c.name][system] = mpps;
      say("bench", `  ${mpps.toFixed(2)} Mpps, ${(mpps * c.size * 8 / 1000).toFixed(1)} Gbit/s`);
    }
  }
} finally {
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}

const cpu = (await sh("sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2")).trim();
const report = {
  date: new Date().toISOString(),
  machine: `${navigator.hardwareConcurrency} cores, ${cpu}`,
  method: "testpmd virtio-user generator, 8 bursts in flight, Rx-pps summed over generator ports",
  cases: CASES.map((c) => {
    const r = results[c.name];
    return {
      case: c.name,
      frameBytes: c.size,
      ports: c.ports,
      mpps: r,
      gbps: Object.fromEntries(
        SYSTEMS.map((s) => [s, Number((r[s] * c.size * 8 / 1000).toFixed(2))]),
      ),
      ratioVsDpdk: Number((r.vswitch / (r.dpdk || NaN)).toFixed(2)),
      ratioVsOvs: Number((r.vswitch / (r["ovs-dpdk"] || NaN)).toFixed(2)),
    };
  }),
  seconds: Math.round((performance.now() - t0) / 1000),
};
const out = `${root}bench/results`;
Deno.mkdirSync(out, { recursive: true });
const json = JSON.stringify(report, null, 2) + "\n";
Deno.writeTextFileSync(`${out}/loop-latest.json`, json);
Deno.writeTextFileSync(`${out}/loop-${report.date.replaceAll(":", "-").slice(0, 19)}.json`, json);
Deno.writeTextFileSync(`${out}/loop-latest.svg`, svg(results));

console.log(
  `\n${"case".padEnd(12)} ${"vswitch".padStart(9)} ${"dpdk".padStart(9)} ${
    "ovs-dpdk".padStart(9)
  }  ours/dpdk  ours/ovs`,
);
for (const c of report.cases) {
  const m = c.mpps;
  console.log(
    `${c.case.padEnd(12)} ${m.vswitch.toFixed(2).padStart(9)} ${m.dpdk.toFixed(2).padStart(9)} ${
      m["ovs-dpdk"].toFixed(2).padStart(9)
    }  ${String(c.ratioVsDpdk).padStart(9)} ${
      String(c.ratioVsOvs).padStart(9)
    }   (Mpps; ${c.gbps.vswitch} / ${c.gbps.dpdk} / ${c.gbps["ovs-dpdk"]} Gbit/s)`,
  );
}
console.log(
  `\n${report.machine}; ${report.seconds} s; results in bench/results/loop-latest.{json,svg}`,
);
