/**
 * What the test machine offers, and loud SKIPPED lines when it offers too
 * little. In CI (CI=true) nothing may be skipped: a missing capability fails.
 *
 * @module
 */

import { fdCount } from "./procfs.ts";

/** True when running as root. */
export function isRoot(): boolean {
  return Deno.uid() === 0;
}

/** True under CI, where every test must run. */
export function inCi(): boolean {
  return Deno.env.get("CI") === "true";
}

/** True when `cmd` is on PATH. */
export function hasCommand(cmd: string): boolean {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    try {
      if (Deno.statSync(`${dir}/${cmd}`).isFile) return true;
    } catch { /* not here */ }
  }
  return false;
}

/**
 * Returns true if the test may run. Otherwise prints a loud SKIPPED line
 * with the reason, or throws under CI where skipping is not allowed.
 */
export function requireOrSkip(name: string, missing: string | undefined): boolean {
  if (missing === undefined) return true;
  if (inCi()) throw new Error(`Cannot run ${name} in CI: ${missing}`);
  console.log(`\n*** SKIPPED: ${name}: ${missing} ***\n`);
  return false;
}

/** The reason root-only tests cannot run here, or undefined. */
export function needRoot(): string | undefined {
  return isRoot() ? undefined : "needs root";
}

/** Runs a command, throwing with its output if it fails; returns stdout. */
export async function sh(cmd: string, ...args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    const err = new TextDecoder().decode(out.stderr);
    throw new Error(`Cannot run ${cmd} ${args.join(" ")}: exit ${out.code}: ${err.trim()}`);
  }
  return text;
}

/** Number of open fds of this process. */
export function openFdCount(): number {
  return fdCount("self");
}

/** A short unique suffix for names (namespaces, TAPs, sockets). */
export function uniqueSuffix(): string {
  return `${Deno.pid % 10000}${Math.floor(Math.random() * 1000)}`;
}
