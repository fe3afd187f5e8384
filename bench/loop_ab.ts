/**
 * `deno task bench:loop-ab REV [CASE …] [--runs 3]` (as root): bench:loop's
 * testpmd loop through vswitch as it is here and as it was at git revision
 * REV, in one run, interleaved (REV, here, REV, here, …) so that a drift of
 * the shared machine's load hits both alike. It answers "did this change
 * make the loop slower?" on equal terms, which two bench:loop runs hours
 * apart cannot (the same code measured 3.4 and 9.5 Mpps in-process on this
 * machine kind on different days).
 *
 * REV is checked out into a temporary git worktree (removed at the end);
 * each side runs with its own deno.json and lock. Cases default to 64B-2port
 * and 1500B-2port. Prints each run, the medians and here ÷ REV; writes
 * bench/results/loop-ab-latest.json and a timestamped copy.
 *
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";
import { DEMO_PACKAGES, installPackages, say, setupHugepages } from "../src/cli/install.ts";
import {
  ALL_CASES,
  loadAverage,
  type LoopRate,
  root,
  runLoop,
  sh,
  sleep,
  startVswitch,
} from "./loop_rig.ts";
import { median } from "./stats.ts";

const args = parseArgs(Deno.args, { string: ["runs"] });
const [rev, ...caseNames] = args._.map(String);
const RUNS = Number(args.runs ?? 3);
if (!rev || !(RUNS >= 1)) {
  console.error("usage: deno task bench:loop-ab REV [CASE …] [--runs N]  (REV: a git revision)");
  Deno.exit(2);
}
const wanted = caseNames.length ? caseNames : ["64B-2port", "1500B-2port"];
const CASES = ALL_CASES.filter((c) => wanted.includes(c.name));
if (CASES.length !== wanted.length) {
  console.error(`No such case: use ${ALL_CASES.map((c) => c.name).join(", ")}`);
  Deno.exit(2);
}
if (Deno.uid() !== 0) {
  console.error("bench:loop-ab needs root (hugepages, DPDK).");
  Deno.exit(2);
}
let commit: string;
try {
  commit = (await sh("git", "-C", root, "rev-parse", "--short", `${rev}^{commit}`)).trim();
} catch {
  console.error(`bench:loop-ab: "${rev}" is not a revision of this repository`);
  Deno.exit(2);
}
const here = (await sh("git", "-C", root, "rev-parse", "--short", "HEAD")).trim();
const dirty = (await sh("git", "-C", root, "status", "--porcelain", "--untracked-files=no")).trim();
if (
  !(await installPackages("bench", [...DEMO_PACKAGES, "dpdk", "dpdk-dev"])) ||
  !(await setupHugepages("bench", 1024))
) Deno.exit(1);

const dir = await Deno.makeTempDir({ prefix: "vswitch-loop-ab-" });
const old = `${dir}/tree/`;
await sh("git", "-C", root, "worktree", "add", "--detach", old, commit);
// Each side runs as its own tasks ran it: with the dataplane's V8 flags only
// where the tree has them (src/switch/v8_flags.ts).
const tuned = (tree: string) => {
  try {
    return Deno.statSync(`${tree}src/switch/v8_flags.ts`).isFile;
  } catch {
    return false;
  }
};
const SIDES = [{ name: commit, tree: old, tuned: tuned(old) }, {
  name: `HEAD ${here}${dirty ? "+" : ""}`,
  tree: root,
  tuned: tuned(root),
}];
const loadBefore = loadAverage();
const rates: Record<string, Record<string, number[]>> = {};
try {
  for (let run = 0; run < RUNS; run++) {
    for (const c of CASES) {
      for (const side of SIDES) {
        const once = async () => {
          const backend = await startVswitch(dir, c, { tree: side.tree, tuned: side.tuned });
          try {
            return await runLoop(backend, c);
          } finally {
            await backend.stop();
          }
        };
        // One retry, as bench:loop: a backend can still be releasing its hugepages.
        const rate: LoopRate = await once().catch(async () => {
          await sleep(2000);
          return await once().catch(() => ({ mpps: 0, perPort: [] }));
        });
        ((rates[c.name] ??= {})[side.name] ??= []).push(Number(rate.mpps.toFixed(2)));
        say("bench", `run ${run + 1}/${RUNS} ${c.name} ${side.name}: ${rate.mpps.toFixed(2)} Mpps`);
      }
    }
  }
} finally {
  await sh("git", "-C", root, "worktree", "remove", "--force", old).catch(() => {});
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}

const med = (xs: number[]) => median(xs) ?? 0;
const lines = [
  `| case | ${SIDES[0].name} Mpps | ${SIDES[1].name} Mpps | here ÷ ${commit}, medians |`,
  "|---|---|---|---|",
];
const result: Record<string, unknown> = {};
for (const c of CASES) {
  const [a, b] = SIDES.map((s) => rates[c.name][s.name]);
  const ratio = med(a) > 0 ? med(b) / med(a) : NaN;
  const fmt = (xs: number[]) =>
    `${xs.map((x) => x.toFixed(2)).join(", ")} (med ${med(xs).toFixed(2)})`;
  lines.push(`| ${c.name} | ${fmt(a)} | ${fmt(b)} | ${ratio.toFixed(2)} |`);
  result[c.name] = { [SIDES[0].name]: a, [SIDES[1].name]: b, ratio: Number(ratio.toFixed(3)) };
}
const report = {
  date: new Date().toISOString(),
  command: `deno task bench:loop-ab ${Deno.args.join(" ")}`,
  method:
    `bench:loop's rig (generator testpmd, 8 bursts; ${CASES.map((c) => c.name).join(", ")}), ` +
    `vswitch only, ${RUNS} interleaved runs per side; dataplane V8 flags: ` +
    SIDES.map((s) => `${s.name} ${s.tuned ? "on" : "off"}`).join(", "),
  load: `${loadBefore} before, ${loadAverage()} after`,
  cases: result,
};
const out = `${root}bench/results`;
Deno.mkdirSync(out, { recursive: true });
const json = JSON.stringify(report, null, 2) + "\n";
Deno.writeTextFileSync(`${out}/loop-ab-latest.json`, json);
Deno.writeTextFileSync(
  `${out}/loop-ab-${report.date.replaceAll(":", "-").slice(0, 19)}.json`,
  json,
);
console.log(
  `\n${lines.join("\n")}\n\nload average ${report.load}; bench/results/loop-ab-latest.json`,
);
