/**
 * The fuzz targets of tests/fuzz/targets.ts as tests: a bounded run of
 * each with a fixed seed (the same inputs on every machine, so CI is
 * reproducible), and one short run of every target with a random seed that
 * is printed, so new inputs keep being tried. A failure message carries
 * fast-check's report and the `deno task fuzz` command that replays it.
 *
 * The whole file takes about half a minute on a 2-core machine.
 */
import { failureReport, TARGET_NAMES, TARGETS } from "./targets.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

/** The CI seed. Change it only on purpose: it selects every input below. */
const FIXED_SEED = 20_240_601;

for (const name of TARGET_NAMES) {
  const t = TARGETS[name];
  Deno.test(`fuzz ${name}: ${t.title} (${t.testRuns} runs, seed ${FIXED_SEED})`, opts, async () => {
    const outcome = await t.run({ seed: FIXED_SEED, numRuns: t.testRuns });
    if (outcome.details.failed) throw new Error(failureReport(name, outcome));
  });
}

Deno.test("fuzz: every target, a few runs with a random seed", opts, async () => {
  const seed = (Math.random() * 0x8000_0000) | 0;
  console.log(`random-seed fuzz run: seed ${seed} (replay: deno task fuzz --seed ${seed})`);
  for (const name of TARGET_NAMES) {
    const t = TARGETS[name];
    const outcome = await t.run({ seed, numRuns: Math.max(20, Math.floor(t.testRuns / 10)) });
    if (outcome.details.failed) throw new Error(failureReport(name, outcome));
  }
});
