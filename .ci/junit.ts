/**
 * Reads the JUnit report `deno test --junit-path` writes, for the two CI
 * tools beside this file: the closing summary (`test_summary.ts`) and the
 * timing table (`test_timings.ts`). Parsed with fast-xml-parser.
 *
 * Deno reports a test's steps as test cases of their own, named
 * "parent > step"; they are told apart here so that counts and times are
 * per test, as the runner's own summary gives them.
 *
 * @module
 */

import { XMLParser } from "fast-xml-parser";

/** One top-level test, or one step. */
export interface JunitCase {
  name: string;
  /** The test file, without the leading "./". */
  file: string;
  secs: number;
  failed: boolean;
  skipped: boolean;
  step: boolean;
}

interface RawCase {
  name?: string;
  classname?: string;
  time?: string;
  failure?: unknown;
  error?: unknown;
  skipped?: unknown;
}

/** Parses a report's text into its cases, in report order. */
export function parseJunit(xml: string): JunitCase[] {
  const parser = new XMLParser({
    ignoreAttributes: false,
    attributeNamePrefix: "",
    isArray: (tag) => tag === "testsuite" || tag === "testcase",
  });
  const doc = parser.parse(xml);
  const suites: { testcase?: RawCase[] }[] = doc?.testsuites?.testsuite ?? [];
  const raw: { file: string; c: RawCase }[] = [];
  for (const s of suites) {
    for (const c of s.testcase ?? []) {
      raw.push({ file: String(c.classname ?? "").replace(/^\.\//, ""), c });
    }
  }
  const names = new Set(raw.map(({ file, c }) => `${file}\u0000${c.name}`));
  // "a > b" is a step when "a" (or "a > …" above it) is a case of the same
  // file; a test whose own name contains " > " is not.
  const isStep = (file: string, name: string) => {
    const parts = name.split(" > ");
    for (let i = 1; i < parts.length; i++) {
      if (names.has(`${file}\u0000${parts.slice(0, i).join(" > ")}`)) return true;
    }
    return false;
  };
  return raw.map(({ file, c }) => {
    const name = String(c.name ?? "");
    return {
      name,
      file,
      secs: Number(c.time ?? 0),
      failed: c.failure !== undefined || c.error !== undefined,
      skipped: c.skipped !== undefined,
      step: isStep(file, name),
    };
  });
}
