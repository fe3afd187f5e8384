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
 * bench/results/profile-latest.{json,txt} and a timestamped copy.
 *
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";
import { DEMO_PACKAGES, installPackages, say, setupHugepages } from "../src/cli/install.ts";
import { ControlClient } from "../src/control/client.ts";
import {
  ALL_CASES,
  loadAverage,
  type LoopCase,
  niceness,
  onSwitchCore,
  root,
  runLoop,
  SAMPLE_MS,
  SAMPLES,
  sleep,
  startVswitch,
} from "./loop_rig.ts";
import { type CpuProfile, formatSummary, stageShares, summarize } from "./cpuprofile.ts";
import type { RingCounts } from "../src/switch/profile_counts.ts";
import { CLK_TCK, threadTimes } from "./thread_times.ts";

const MODES = ["plain", "counts", "cpuprof", "cpuprof-noinline", "inprocess"] as const;
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
    return { t: performance.now(), rounds: info.rounds, ports, threads: threadTimes(backend.pid!) };
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
  const all = summarize(read(worker), 10_000);
  const w = { ...all, functions: all.functions.slice(0, 30) };
  const m = main ? summarize(read(main), 8) : null;
  return {
    mpps: Number(rate.mpps.toFixed(3)),
    stagesBusyPct: stageShares(all),
    worker: w,
    main: m,
    text: formatSummary(w, `${c.name} worker${noInline ? " (no inlining)" : ""}`) +
      (m ? "\n" + formatSummary(m, `${c.name} main thread`) : ""),
  };
}

/**
 * The engine in-process (bench/heap.ts: both guests simulated in the same
 * thread, so every ring and buffer is in this core's cache), on the
 * switch's core: its rate, and a --cpu-prof of it grouped like the loop's.
 */
async function inprocess(c: LoopCase, dir: string) {
  const run = async (flags: string[]) => {
    const out = await new Deno.Command("taskset", {
      args: onSwitchCore([...flags, `${root}bench/heap.ts`, "3000000", `${c.size}`]),
      stdout: "piped",
      stderr: "inherit",
    }).output();
    if (!out.success) throw new Error("Cannot run bench/heap.ts");
    return JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!) as {
      mpps: number;
    };
  };
  const plainRun = await run([]);
  const profDir = `${dir}/heapprof-${Date.now()}`;
  await run(["--cpu-prof", `--cpu-prof-dir=${profDir}`]);
  const file = [...Deno.readDirSync(profDir)][0].name;
  const all = summarize(
    JSON.parse(Deno.readTextFileSync(`${profDir}/${file}`)) as CpuProfile,
    10_000,
  );
  return {
    mpps: plainRun.mpps,
    nsPerFrame: Math.round(1000 / plainRun.mpps),
    stagesBusyPct: stageShares(all),
    text: formatSummary(
      { ...all, functions: all.functions.slice(0, 25) },
      `${c.name} in-process (bench/heap.ts)`,
    ),
  };
}

/** ns per frame per stage: the loop's worker (CPU per frame × stage share) beside in-process. */
function stageTable(res: Record<string, unknown>): string {
  const plain = res.plain as {
    threads: { name: string; cpuPct: number }[];
    switchMppsFromCounters: number;
  } | undefined;
  const prof = res.cpuprof as { stagesBusyPct: Record<string, number> } | undefined;
  const inproc = res.inprocess as
    | { nsPerFrame: number; stagesBusyPct: Record<string, number> }
    | undefined;
  if (!plain || !prof || !inproc) return "";
  const cpu = plain.threads.filter((t) => t.name.startsWith("worker")).reduce(
    (a, t) => a + t.cpuPct,
    0,
  );
  const loopNs = 1000 * cpu / 100 / plain.switchMppsFromCounters;
  const lines = [
    `ns per frame by stage: loop worker ${
      loopNs.toFixed(0)
    } ns of CPU per frame (${cpu}% CPU), in-process ${inproc.nsPerFrame} ns`,
  ];
  lines.push(`${"loop".padStart(6)} ${"in-proc".padStart(8)}  stage`);
  for (const k of Object.keys(prof.stagesBusyPct)) {
    const a = loopNs * prof.stagesBusyPct[k] / 100,
      b = inproc.nsPerFrame * (inproc.stagesBusyPct[k] ?? 0) / 100;
    lines.push(`${a.toFixed(0).padStart(6)} ${b.toFixed(0).padStart(8)}  ${k}`);
  }
  res.stageNsPerFrame = {
    loopNs: Math.round(loopNs),
    inprocessNs: inproc.nsPerFrame,
    table: lines,
  };
  return lines.join("\n") + "\n\n";
}

const dir = await Deno.makeTempDir({ prefix: "vswitch-prof-" });
const report: Record<string, unknown> = {
  date: new Date().toISOString(),
  loadBefore: loadAverage(),
  nice: niceness(),
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
      else if (mode === "inprocess") {
        const p = await inprocess(c, dir);
        text += p.text + "\n";
        const { text: _, ...rest } = p;
        res.inprocess = rest;
      } else {
        const p = await cpuprof(c, dir, mode === "cpuprof-noinline");
        text += p.text + "\n";
        const { text: _, ...rest } = p;
        res[mode] = rest;
      }
      say("bench", `  ${JSON.stringify((res[mode] as { mpps: number }).mpps)} Mpps`);
      await sleep(1000); // hugepages released before the next generator
    }
    (report.cases as Record<string, unknown>)[c.name] = res;
    text = stageTable(res) + text;
    text = `${c.name}:\n${
      JSON.stringify({ plain: res.plain, counts: res.counts }, null, 2)
    }\n\n${text}`;
  }
} finally {
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}
report.loadAfter = loadAverage();
text += `load average ${report.loadBefore} before, ${report.loadAfter} after\n`;
const out = `${root}bench/results`;
const stamp = (report.date as string).replaceAll(":", "-").slice(0, 19);
for (const name of ["latest", stamp]) {
  Deno.writeTextFileSync(`${out}/profile-${name}.json`, JSON.stringify(report, null, 2) + "\n");
  Deno.writeTextFileSync(`${out}/profile-${name}.txt`, text);
}
console.log(text);
