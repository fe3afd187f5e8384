/**
 * `deno task fuzz`: runs the fuzz targets of tests/fuzz/targets.ts.
 *
 * ```
 * deno task fuzz [--target a|a2|b|b2|c|c2|all] [--runs N] [--slow-runs M]
 *                [--seed S] [--path P] [--hang-seconds H] [--trace]
 * ```
 *
 * Without --seed a random seed is drawn and printed first, so any run can be
 * repeated. A failure prints fast-check's report (seed, path, shrunk
 * counterexample, the error) and the command that replays it; the exit
 * status is then 1. A watchdog thread kills the process (and says which
 * run to replay) if a target stops making progress, since an unbounded
 * loop in a synchronous walk would otherwise hang silently. A crash
 * (SIGBUS, SIGSEGV) cannot be reported: --trace writes each input to
 * stderr before it is used, so the last one names the culprit.
 *
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";
import { failureReport, TARGET_NAMES, type TargetName, TARGETS, tracing } from "./targets.ts";

const USAGE = `Usage: deno task fuzz [options]
  --target T        a | a2 | b | b2 | c | c2 | all (default all)
  --runs N          runs per target (default: ${
  TARGET_NAMES.map((t) => `${t} ${TARGETS[t].defaultRuns}`).join(", ")
})
  --slow-runs M     with --target all and --runs: runs for a2, b2 and c2 (default N/10)
  --seed S          fast-check seed (default: random, printed)
  --path P          fast-check replay path from a failure report
  --hang-seconds H  watchdog: no progress for H s is a failure (default 120; 0: off)
  --trace           write every input to stderr before using it (to find what
                    crashed the process: SIGBUS/SIGSEGV leave no report)`;

// `deno task fuzz -- --runs 5` passes the "--" through; drop it.
const argv = Deno.args[0] === "--" ? Deno.args.slice(1) : Deno.args;
const args = parseArgs(argv, {
  string: ["target", "runs", "slow-runs", "seed", "path", "hang-seconds"],
  boolean: ["help", "trace"],
  default: { target: "all" },
});
if (args.help) {
  console.log(USAGE);
  Deno.exit(0);
}

function intArg(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n)) {
    console.error(`Cannot use --${name} ${v}: not an integer\n${USAGE}`);
    Deno.exit(2);
  }
  return n;
}

const targets: TargetName[] = args.target === "all"
  ? [...TARGET_NAMES]
  : (TARGET_NAMES as readonly string[]).includes(args.target)
  ? [args.target as TargetName]
  : (console.error(`Cannot fuzz target ${args.target}\n${USAGE}`), Deno.exit(2));
const runs = intArg("runs", args.runs);
const slowRuns = intArg("slow-runs", args["slow-runs"]);
// fast-check seeds are 32-bit integers.
const seed = intArg("seed", args.seed) ?? (Math.random() * 0x8000_0000) | 0;
const hangSeconds = intArg("hang-seconds", args["hang-seconds"]) ?? 120;
tracing.on = args.trace;

function runsFor(t: TargetName): number {
  if (runs === undefined) return TARGETS[t].defaultRuns;
  const slow = t === "a2" || t === "b2" || t === "c2";
  if (slow && targets.length > 1) return slowRuns ?? Math.max(1, Math.floor(runs / 10));
  return runs;
}

// Watchdog (a Worker: it keeps running while the main thread is stuck in a loop).
// Slots: 0 evaluations, 1 a failure seen (now shrinking), 2 target index, 3 active.
const beat = new Int32Array(new SharedArrayBuffer(16));
const WATCHDOG = `
self.onmessage = (e) => {
  const { sab, hangMs, seed, names } = e.data;
  const s = new Int32Array(sab);
  let last = -1, since = Date.now();
  setInterval(() => {
    const now = Atomics.load(s, 0);
    if (now !== last || Atomics.load(s, 3) === 0) { last = now; since = Date.now(); return; }
    if (Date.now() - since < hangMs) return;
    const t = names[Atomics.load(s, 2)];
    const where = Atomics.load(s, 1)
      ? "while shrinking a failure (rerun with the same seed to see it)"
      : "in run " + (now - 1) + "; replay: deno task fuzz --target " + t + " --seed " + seed +
        " --path " + (now - 1);
    console.error("HANG: target " + t + " made no progress for " + hangMs / 1000 + " s " + where);
    Deno.kill(Deno.pid, "SIGKILL");
  }, 500);
};`;
const watchdog = hangSeconds > 0
  ? new Worker(
    URL.createObjectURL(new Blob([WATCHDOG], { type: "application/javascript" })),
    { type: "module" },
  )
  : null;
watchdog?.postMessage({ sab: beat.buffer, hangMs: hangSeconds * 1000, seed, names: TARGET_NAMES });

console.log(
  `vswitch fuzz: seed ${seed}${args.path ? `, path ${args.path}` : ""} ` +
    `(repeat with --seed ${seed}); targets ${targets.join(", ")}`,
);

let failed = 0;
for (const t of targets) {
  const target = TARGETS[t];
  const numRuns = runsFor(t);
  console.log(`${t}: ${target.title} — ${numRuns} runs …`);
  Atomics.store(beat, 0, 0);
  Atomics.store(beat, 1, 0);
  Atomics.store(beat, 2, TARGET_NAMES.indexOf(t));
  Atomics.store(beat, 3, 1);
  // Progress every 30 s (the properties are async, so the event loop turns between runs).
  const started = performance.now();
  const progress = setInterval(() => {
    const s = (performance.now() - started) / 1000;
    console.log(`${t}: … ${Atomics.load(beat, 0)} evaluations in ${s.toFixed(0)} s`);
  }, 30_000);
  const outcome = await target.run({
    seed,
    numRuns,
    path: args.path,
    onEval: (failedBefore) => {
      Atomics.add(beat, 0, 1);
      if (failedBefore) Atomics.store(beat, 1, 1);
    },
  });
  clearInterval(progress);
  Atomics.store(beat, 3, 0);
  const d = outcome.details;
  const secs = outcome.ms / 1000;
  const rate = d.numRuns / secs;
  if (d.failed) {
    failed++;
    console.log(
      `${t}: FAILED after ${d.numRuns} runs, ${d.numShrinks} shrinks, ${secs.toFixed(1)} s`,
    );
    console.log(failureReport(t, outcome));
  } else {
    console.log(
      `${t}: ok — ${d.numRuns} runs in ${secs.toFixed(1)} s (${
        rate.toFixed(0)
      } runs/s), seed ${seed}`,
    );
  }
  const cov = Object.entries(outcome.stats).sort(([a], [b]) => a.localeCompare(b));
  if (cov.length > 0) console.log(`${t}: coverage: ${cov.map(([k, v]) => `${k} ${v}`).join(", ")}`);
}
watchdog?.terminate();
console.log(failed ? `${failed} target(s) failed (seed ${seed})` : `all passed (seed ${seed})`);
Deno.exit(failed ? 1 : 0);
