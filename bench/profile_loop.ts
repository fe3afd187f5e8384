/**
 * Where the loop loses (issue 11, point 1): vswitch in the testpmd loop of
 * bench/loop.ts (same generator, same cores), observed four ways, one
 * switch process each:
 *
 * - "plain": the switch as shipped. Rounds per second from the control
 *   API (`rounds`, the worker's CONTROL.rounds), frames per round from the
 *   port counters, interrupts and wake-ups per second, and the CPU time of
 *   every thread of the switch process (/proc/PID/task: the main thread,
 *   the worker and V8's helpers all share lcore 1);
 * - "counts": VSWITCH_PROFILE_COUNTS (src/switch/profile_counts.ts) wraps
 *   the ring methods with counters: avail-index reads, used publishes and
 *   interrupts per frame, per queue; the histogram of chains found per poll;
 * - "cpuprof": `--cpu-prof` (it covers Web Workers in Deno 2.9.6: one
 *   `*.worker-N.cpuprofile` per worker), summarized by bench/cpuprofile.ts;
 * - "cpuprof-noinline": the same with TurboFan inlining off, so small
 *   ring and copy functions get their own lines (slower: shares only).
 *
 * `flock /tmp/vswitch-heavy.lock deno run -A bench/profile_loop.ts [CASE…] [--modes a,b]`
 * (as root; default 64B-2port, every mode). Writes
 * bench/results/profile-latest.json and profile-latest.txt.
 *
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";
import { DEMO_PACKAGES, installPackages, say, setupHugepages } from "../src/cli/install.ts";
import { ControlClient } from "../src/control/client.ts";
import {
  ALL_CASES,
  type LoopCase,
  root,
  runLoop,
  SAMPLE_MS,
  SAMPLES,
  sleep,
  startVswitch,
} from "./loop_rig.ts";
import { type CpuProfile, formatSummary, summarize } from "./cpuprofile.ts";

const MODES = ["plain", "counts", "cpuprof", "cpuprof-noinline"] as const;
type Mode = typeof MODES[number];

const args = parseArgs(Deno.args, { string: ["modes"] });
const names = args._.map(String);
const cases = names.length ? ALL_CASES.filter((c) => names.includes(c.name)) : [ALL_CASES[0]];
const modes = (args.modes ? args.modes.split(",") : [...MODES]) as Mode[];
if (cases.length === 0 || modes.some((m) => !MODES.includes(m))) {
  console.error(
    `Usage: profile_loop.ts [${ALL_CASES.map((c) => c.name).join("|")}…] [--modes ${
      MODES.join(",")
    }]`,
  );
  Deno.exit(2);
}
if (Deno.uid() !== 0) {
  console.error("profile_loop needs root (hugepages, DPDK).");
  Deno.exit(2);
}
if (
  !(await installPackages("bench", [...DEMO_PACKAGES, "dpdk", "dpdk-dev"])) ||
  !(await setupHugepages("bench"))
) Deno.exit(1);

/** The measuring window inside the generator's sampling (which lasts SAMPLES × SAMPLE_MS). */
const WINDOW_MS = SAMPLES * SAMPLE_MS - 1500;
const CLK_TCK = 100;

interface ThreadTimes {
  name: string;
  cpuTicks: number;
  nonvoluntary: number;
  voluntary: number;
}

function threads(pid: number): Map<number, ThreadTimes> {
  const out = new Map<number, ThreadTimes>();
  for (const e of Deno.readDirSync(`/proc/${pid}/task`)) {
    try {
      const stat = Deno.readTextFileSync(`/proc/${pid}/task/${e.name}/stat`);
      const name = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const status = Deno.readTextFileSync(`/proc/${pid}/task/${e.name}/status`);
      const num = (k: string) => Number(status.match(new RegExp(`${k}:\\s+(\\d+)`))?.[1] ?? 0);
      out.set(Number(e.name), {
        name,
        cpuTicks: Number(f[11]) + Number(f[12]), // utime + stime (fields 14, 15)
        voluntary: num("voluntary_ctxt_switches"),
        nonvoluntary: num("nonvoluntary_ctxt_switches"),
      });
    } catch { /* the thread ended */ }
  }
  return out;
}

interface PortJson {
  name: string;
  counters: Record<string, number>;
}

async function plain(c: LoopCase, dir: string) {
  const control = `${dir}/ctl.sock`;
  const backend = await startVswitch(dir, c, { control });
  const client = new ControlClient(control);
  const snap = async () => {
    const [info, ports] = await Promise.all([
      client.request<{ rounds: number }>("GET", "/v1"),
      client.request<PortJson[]>("GET", "/v1/ports"),
    ]);
    return { t: performance.now(), rounds: info.rounds, ports, threads: threads(backend.pid!) };
  };
  try {
    const rate = await runLoop(backend, c, async () => {
      await sleep(500);
      const a = await snap();
      await sleep(WINDOW_MS);
      return { a, b: await snap() };
    });
    const { a, b } = rate.during!;
    const s = (b.t - a.t) / 1000;
    const rounds = ((b.rounds - a.rounds) | 0) >>> 0; // an Int32 slot: wraps
    const sum = (k: string, x: typeof a) => x.ports.reduce((t, p) => t + p.counters[k], 0);
    const frames = sum("rxPackets", b) - sum("rxPackets", a);
    const perThread = [...b.threads].map(([tid, t]) => {
      const before = a.threads.get(tid);
      return {
        tid,
        name: t.name,
        cpuPct: Number(
          (100 * (t.cpuTicks - (before?.cpuTicks ?? 0)) / CLK_TCK / s).toFixed(1),
        ),
        nonvoluntaryPerS: Math.round((t.nonvoluntary - (before?.nonvoluntary ?? 0)) / s),
        voluntaryPerS: Math.round((t.voluntary - (before?.voluntary ?? 0)) / s),
      };
    }).filter((t) => t.cpuPct > 0 || t.nonvoluntaryPerS > 0 || t.voluntaryPerS > 0);
    return {
      mpps: Number(rate.mpps.toFixed(3)),
      perPortMpps: rate.perPort.map((x) => Number(x.toFixed(3))),
      roundsPerS: Math.round(rounds / s),
      framesPerRound: Number((frames / rounds).toFixed(2)),
      // Each round polls every port's TX queue once.
      framesPerRoundPerQueue: Number((frames / rounds / c.ports).toFixed(2)),
      nsPerRound: Number((1e9 * s / rounds).toFixed(0)),
      switchMppsFromCounters: Number((frames / s / 1e6).toFixed(3)),
      interruptsPerS: Math.round((sum("interrupts", b) - sum("interrupts", a)) / s),
      wakeupsPerS: Math.round((sum("wakeups", b) - sum("wakeups", a)) / s),
      dropsPerS: Math.round(
        (sum("dropNoBuffer", b) - sum("dropNoBuffer", a)) / s,
      ),
      threads: perThread,
    };
  } finally {
    await backend.stop();
  }
}

interface RingCounts {
  availReads: number;
  availEmpty: number;
  walks: number;
  usedEntries: number;
  publishes: number;
  wantInterrupt: number;
  notifyStores: number;
  hist: number[];
}
interface CountsSnapshot {
  t: number;
  rounds: number;
  roundsWithWork: number;
  framesTaken: number;
  roundHist: number[];
  ports: { id: number; name: string; rx: RingCounts | null; tx: RingCounts | null }[];
}

async function counts(c: LoopCase, dir: string) {
  const file = `${dir}/counts.json`;
  const backend = await startVswitch(dir, c, { env: { VSWITCH_PROFILE_COUNTS: file } });
  const read = () => JSON.parse(Deno.readTextFileSync(file)) as CountsSnapshot;
  try {
    const rate = await runLoop(backend, c, async () => {
      await sleep(1200);
      const a = read();
      await sleep(WINDOW_MS - 700);
      return { a, b: read() };
    });
    const { a, b } = rate.during!;
    const s = (b.t - a.t) / 1000;
    const frames = b.framesTaken - a.framesTaken;
    const d = (k: keyof RingCounts, q: "rx" | "tx") =>
      b.ports.reduce((t, p, i) => {
        const x = p[q], y = a.ports[i]?.[q];
        return x && y ? t + (x[k] as number) - (y[k] as number) : t;
      }, 0);
    const per = (x: number) => Number((x / frames).toFixed(3));
    const hist = (h: number[], h0: number[]) => {
      const diff = h.map((v, i) => v - (h0[i] ?? 0));
      const total = diff.reduce((x, y) => x + y, 0) || 1;
      // Share of polls per bucket: 0, 1–7, 8–15, 16–31, 32 (a full burst) and more.
      const bucket = (lo: number, hi: number) =>
        Number((100 * diff.slice(lo, hi + 1).reduce((x, y) => x + y, 0) / total).toFixed(1));
      return {
        "0": bucket(0, 0),
        "1-7": bucket(1, 7),
        "8-15": bucket(8, 15),
        "16-31": bucket(16, 31),
        "32+": bucket(32, 1000),
      };
    };
    const txHist = b.ports.reduce(
      (acc, p, i) =>
        p.tx && a.ports[i]?.tx
          ? acc.map((v, k) => v + p.tx!.hist[k] - a.ports[i].tx!.hist[k])
          : acc,
      new Array(b.ports[0].tx?.hist.length ?? 65).fill(0) as number[],
    );
    return {
      note: "counting wrappers on: the rate is lower than plain's and not a figure to report",
      mpps: Number(rate.mpps.toFixed(3)),
      frames,
      seconds: Number(s.toFixed(2)),
      rounds: b.rounds - a.rounds,
      framesPerRound: Number((frames / (b.rounds - a.rounds)).toFixed(2)),
      roundsWithWorkPct: Number(
        (100 * (b.roundsWithWork - a.roundsWithWork) / (b.rounds - a.rounds)).toFixed(1),
      ),
      perFrame: {
        txAvailReads: per(d("availReads", "tx")),
        txAvailEmptyReads: per(d("availEmpty", "tx")),
        txUsedPublishes: per(d("publishes", "tx")),
        rxAvailReads: per(d("availReads", "rx")),
        rxUsedPublishes: per(d("publishes", "rx")),
        rxChainsWalked: per(d("walks", "rx")),
        interruptsWanted: per(d("wantInterrupt", "rx") + d("wantInterrupt", "tx")),
        notifyFlagStores: per(d("notifyStores", "rx") + d("notifyStores", "tx")),
      },
      // Per TX poll: how many chains `available()` reported (share of polls, %).
      txPollHistogramPct: hist(txHist, new Array(txHist.length).fill(0)),
      roundFramesHistogramPct: hist(b.roundHist, a.roundHist),
    };
  } finally {
    await backend.stop();
  }
}

async function cpuprof(c: LoopCase, dir: string, noInline: boolean) {
  const profDir = `${dir}/prof-${Date.now()}`;
  const backend = await startVswitch(dir, c, {
    denoFlags: [
      "--cpu-prof",
      `--cpu-prof-dir=${profDir}`,
      ...(noInline ? ["--v8-flags=--no-turbo-inlining"] : []),
    ],
  });
  let rate;
  try {
    rate = await runLoop(backend, c);
  } finally {
    await backend.stop(); // SIGTERM: the worker stops, then the process exits and writes
  }
  const files = [...Deno.readDirSync(profDir)].map((e) => e.name);
  const worker = files.find((f) => f.includes("worker"));
  const main = files.find((f) => !f.includes("worker"));
  if (!worker) throw new Error(`Cannot find the worker's profile in ${files.join(", ")}`);
  const read = (f: string) => JSON.parse(Deno.readTextFileSync(`${profDir}/${f}`)) as CpuProfile;
  const w = summarize(read(worker), 30);
  const m = main ? summarize(read(main), 8) : null;
  return {
    mpps: Number(rate.mpps.toFixed(3)),
    worker: w,
    main: m,
    text: formatSummary(w, `${c.name} worker${noInline ? " (no inlining)" : ""}`) +
      (m ? "\n" + formatSummary(m, `${c.name} main thread`) : ""),
  };
}

const dir = await Deno.makeTempDir({ prefix: "vswitch-prof-" });
const load = () => Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
const report: Record<string, unknown> = {
  date: new Date().toISOString(),
  loadBefore: load(),
  command: `deno run -A bench/profile_loop.ts ${Deno.args.join(" ")}`.trim(),
  method: "bench/loop.ts's generator (lcore 0, 8 bursts per port) and vswitch (taskset lcore 1)",
  cases: {} as Record<string, unknown>,
};
let text = `${report.date}  ${report.command}\n\n`;
try {
  for (const c of cases) {
    const res: Record<string, unknown> = {};
    for (const mode of modes) {
      say("bench", `${c.name}: ${mode} ...`);
      if (mode === "plain") res.plain = await plain(c, dir);
      else if (mode === "counts") res.counts = await counts(c, dir);
      else {
        const p = await cpuprof(c, dir, mode === "cpuprof-noinline");
        text += p.text + "\n";
        const { text: _, ...rest } = p;
        res[mode] = rest;
      }
      say("bench", `  ${JSON.stringify((res[mode] as { mpps: number }).mpps)} Mpps`);
      await sleep(1000); // hugepages released before the next generator
    }
    (report.cases as Record<string, unknown>)[c.name] = res;
    text = `${c.name}:\n${
      JSON.stringify({ plain: res.plain, counts: res.counts }, null, 2)
    }\n\n${text}`;
  }
} finally {
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}
report.loadAfter = load();
text += `load average ${report.loadBefore} before, ${report.loadAfter} after\n`;
const out = `${root}bench/results`;
Deno.writeTextFileSync(`${out}/profile-latest.json`, JSON.stringify(report, null, 2) + "\n");
Deno.writeTextFileSync(`${out}/profile-latest.txt`, text);
console.log(text);
