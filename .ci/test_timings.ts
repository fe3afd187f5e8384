/**
 * Prints where a test run spent its time: the slowest test files and the
 * slowest tests, from the JUnit report `deno task test` writes
 * (.work/test-junit.xml), so a file that grows slow shows before CI nears
 * its 30-minute bound. Run it by hand after a test run: `deno task timings`.
 * (CI does not: `.ci/test_summary.ts` must print the last line of a run.)
 *
 * Usage: deno run --allow-read .ci/test_timings.ts [JUNIT_XML] [TOP]
 *
 * A file's time is the sum of its top-level tests' times (steps are part
 * of their test); module loading and type checking are not in it.
 *
 * @module
 */

import { parseJunit } from "./junit.ts";

const path = Deno.args[0] ?? ".work/test-junit.xml";
const top = Number(Deno.args[1] ?? 10);

let xml: string;
try {
  xml = await Deno.readTextFile(path);
} catch (e) {
  console.log(`== No test timings: cannot read ${path}: ${(e as Error).message}`);
  Deno.exit(0);
}

const tests = parseJunit(xml).filter((c) => !c.step);

const files = new Map<string, { secs: number; tests: number; failed: number }>();
for (const t of tests) {
  const f = files.get(t.file) ?? { secs: 0, tests: 0, failed: 0 };
  f.secs += t.secs;
  f.tests++;
  if (t.failed) f.failed++;
  files.set(t.file, f);
}

const fmt = (s: number) => {
  const m = Math.floor(s / 60);
  return m > 0 ? `${m}m${(s % 60).toFixed(0).padStart(2, "0")}s` : `${s.toFixed(1)}s`;
};
const total = tests.reduce((s, t) => s + t.secs, 0);
const byTime = [...files].sort((a, b) => b[1].secs - a[1].secs);

console.log(
  `\n== Test timings (${path}): ${tests.length} tests in ${files.size} files, ${
    fmt(total)
  } in tests`,
);
console.log(`== Slowest ${Math.min(top, byTime.length)} test files:`);
for (const [file, f] of byTime.slice(0, top)) {
  const share = total > 0 ? (100 * f.secs / total).toFixed(0) : "0";
  const failed = f.failed ? `, ${f.failed} FAILED` : "";
  console.log(
    `  ${fmt(f.secs).padStart(7)}  ${share.padStart(3)}%  ${file} (${f.tests} tests${failed})`,
  );
}
console.log(`== Slowest 5 tests:`);
for (const t of [...tests].sort((a, b) => b.secs - a.secs).slice(0, 5)) {
  console.log(`  ${fmt(t.secs).padStart(7)}  ${t.file}: ${t.name}`);
}
