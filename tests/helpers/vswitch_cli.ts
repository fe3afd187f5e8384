/**
 * The `vswitch` CLI as a user runs it: the compiled binary when
 * `deno task compile` built one (.work/bin/vswitch), else the script
 * through the same deno binary (`deno run -A src/cli/main.ts`).
 *
 * @module
 */

import { v8FlagsArg } from "../../src/switch/v8_flags.ts";

const MAIN = new URL("../../src/cli/main.ts", import.meta.url).pathname;
const BINARY = new URL("../../.work/bin/vswitch", import.meta.url).pathname;

/** The command line that runs `vswitch`. */
export function vswitchCommand(): string[] {
  try {
    if (Deno.statSync(BINARY).isFile) return [BINARY];
  } catch { /* not compiled */ }
  return [Deno.execPath(), "run", "-A", v8FlagsArg(), MAIN];
}

/** What one `vswitch` run printed. */
export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `vswitch ARGS` to completion. */
export async function vswitch(...args: string[]): Promise<CliResult> {
  const [cmd, ...pre] = vswitchCommand();
  const out = await new Deno.Command(cmd, {
    args: [...pre, ...args],
    env: { DENO_NO_UPDATE_CHECK: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Runs `vswitch ARGS`, throwing with its output unless it exits 0; returns stdout. */
export async function vswitchOk(...args: string[]): Promise<string> {
  const r = await vswitch(...args);
  if (r.code !== 0) {
    throw new Error(`vswitch ${args.join(" ")} exited ${r.code}:\n${r.stdout}${r.stderr}`);
  }
  return r.stdout;
}
