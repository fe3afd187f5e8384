import { assertEquals } from "@std/assert";
import { parseJunit } from "../../.ci/junit.ts";

// The shape `deno test --junit-path` writes (Deno 2.9.6): a failed step
// fails its parent too; steps are cases named "parent > step".
const REPORT = `<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="deno test" tests="7" failures="3" errors="0" time="0.014">
    <testsuite name="./tests/a_test.ts" tests="7" disabled="1" errors="0" failures="3">
        <testcase name="one" classname="./tests/a_test.ts" time="0.250" line="1" col="6">
        </testcase>
        <testcase name="ign" classname="./tests/a_test.ts" time="0.000" line="2" col="6">
            <skipped/>
        </testcase>
        <testcase name="fails" classname="./tests/a_test.ts" time="0.002" line="3" col="6">
            <failure message="Uncaught Error: x">Error: x &amp; &lt;more&gt;</failure>
        </testcase>
        <testcase name="steps" classname="./tests/a_test.ts" time="1.500" line="4" col="6">
            <failure message="1 test step failed">1 test step failed.</failure>
        </testcase>
        <testcase name="steps &gt; s1" classname="./tests/a_test.ts" time="0.001" line="4" col="43">
        </testcase>
        <testcase name="steps &gt; s2" classname="./tests/a_test.ts" time="0.001" line="4" col="73">
            <failure message="Uncaught Error: y">Error: y</failure>
        </testcase>
        <testcase name="a &gt; b, not a step" classname="./tests/a_test.ts" time="0.001" line="9" col="6">
        </testcase>
    </testsuite>
</testsuites>`;

Deno.test("the JUnit reader tells tests from steps, failures and skips", () => {
  const cases = parseJunit(REPORT);
  assertEquals(cases.map((c) => c.name), [
    "one",
    "ign",
    "fails",
    "steps",
    "steps > s1",
    "steps > s2",
    "a > b, not a step",
  ]);
  assertEquals(cases.map((c) => c.step), [false, false, false, false, true, true, false]);
  assertEquals(cases.map((c) => c.failed), [false, false, true, true, false, true, false]);
  assertEquals(cases.map((c) => c.skipped), [false, true, false, false, false, false, false]);
  assertEquals(cases[0].file, "tests/a_test.ts");
  assertEquals(cases[3].secs, 1.5);
});

Deno.test("the closing line: counted from the report, exit status kept", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vswitch-junit-" });
  try {
    const report = `${dir}/report.xml`;
    await Deno.writeTextFile(report, REPORT);
    const run = async (path: string, status: string) => {
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "--allow-read", ".ci/test_summary.ts", path, status],
        stdout: "piped",
        stderr: "null",
      }).output();
      const lines = new TextDecoder().decode(out.stdout).trimEnd().split("\n");
      return { code: out.code, last: lines[lines.length - 1] };
    };
    assertEquals(await run(report, "1"), { code: 1, last: "tests: 2 passed, 2 failed, 1 skipped" });
    // A report that names failures fails the run even if the status said 0.
    assertEquals((await run(report, "0")).code, 1);
    assertEquals(await run(`${dir}/missing.xml`, "0"), {
      code: 1,
      last: "tests: 0 passed, 0 failed",
    });
    const passing = REPORT.replace(/<failure[^>]*>[^<]*<\/failure>/g, "");
    await Deno.writeTextFile(report, passing);
    assertEquals(await run(report, "0"), { code: 0, last: "tests: 4 passed, 0 failed, 1 skipped" });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
