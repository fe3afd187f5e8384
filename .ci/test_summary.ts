/**
 * The last line of `deno task test`: "tests: N passed, N failed" (and
 * ", N skipped" when some were ignored), alone on its line, counted from
 * the JUnit report. CI reads a run's closing line to tell a run that
 * tested from one that tested nothing, and Deno's own summary
 * ("ok | N passed (M steps) | N failed") is not a form it reads. Even with
 * this line last, three landings in a row were still taken for runs that
 * tested nothing, so the task also runs `deno test --reporter=dot`: the
 * default reporter's 40 KB of "running N tests from …" and "… ok" lines
 * resemble other runners' output, and pass any cut CI makes of a long log.
 * Failures still print in full (the dot reporter lists them at the end),
 * and the failed tests are named again here, just above the closing line.
 *
 * Usage: deno run --allow-read .ci/test_summary.ts REPORT STATUS
 *   REPORT  the JUnit file `deno test` wrote (the task deletes it first,
 *           so a stale one from an earlier run is never counted)
 *   STATUS  the exit status of `deno test` (or of the preparation that
 *           stopped it), which this script exits with; it exits 1 when
 *           the status is 0 but the report is missing or names a failure
 *
 * @module
 */

import { parseJunit } from "./junit.ts";

const [path = ".work/test-junit.xml", statusArg = "0"] = Deno.args;
const status = Number(statusArg) || 0;

let xml: string | undefined;
try {
  xml = await Deno.readTextFile(path);
} catch (e) {
  console.log(`== no test report at ${path} (${(e as Error).message}): the tests did not run`);
}
if (xml === undefined) {
  console.log("tests: 0 passed, 0 failed");
  Deno.exit(status || 1);
}

const cases = parseJunit(xml);
const tests = cases.filter((c) => !c.step);
const steps = cases.length - tests.length;
const failed = tests.filter((c) => c.failed).length;
const skipped = tests.filter((c) => c.skipped).length;
const passed = tests.length - failed - skipped;

for (const t of tests.filter((c) => c.failed)) console.log(`== FAILED ${t.file} > ${t.name}`);
console.log(
  `== JUnit report ${path}: ${
    new Set(tests.map((t) => t.file)).size
  } files, ${steps} steps; deno test exited ${status}`,
);
console.log(`tests: ${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ""}`);
Deno.exit(status !== 0 ? status : failed > 0 || tests.length === 0 ? 1 : 0);
