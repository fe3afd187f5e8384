/**
 * Plumbing every fuzz target shares: how a target is run (options,
 * outcome, the fast-check parameters, the evaluation heartbeat), its
 * coverage counters, sizes and the u32 arbitrary, the escape trap, the
 * capture of error-level logs, and input tracing.
 *
 * @module
 */

import fc from "fast-check";
import { configure, type LogRecord } from "@logtape/logtape";

// ---------------------------------------------------------------------------
// Running targets
// ---------------------------------------------------------------------------

/** How to run one target. */
export interface RunOptions {
  /** fast-check seed (printed on failure; replays the same inputs). */
  seed: number;
  /** Runs (generated inputs) before declaring success. */
  numRuns: number;
  /** fast-check replay path from a failure report ("12:3:0"). */
  path?: string;
  /** Called before every evaluation of the property (watchdog heartbeat). */
  onEval?: (failedBefore: boolean) => void;
}

/** What a target run produced. */
export interface TargetOutcome {
  details: fc.RunDetails<unknown>;
  /** Wall time of the run, setup included. */
  ms: number;
  /** Property evaluations (runs + shrinking steps). */
  evals: number;
  /** Coverage counters (how often each outcome was reached), for the summary. */
  stats: Record<string, number>;
}

/** Coverage counters of the target being run. */
let stats: Record<string, number> = {};

export function count(key: string, n = 1): void {
  stats[key] = (stats[key] ?? 0) + n;
}

export function resetStats(): Record<string, number> {
  stats = {};
  return stats;
}

export function params(o: RunOptions): fc.Parameters<unknown> {
  if (o.path === undefined) return { seed: o.seed, numRuns: o.numRuns };
  // Replaying a path: run just that input (its first segment is the run index)
  // and stop at the recorded failure instead of shrinking again.
  const run = Number(o.path.split(":")[0]);
  return { seed: o.seed, numRuns: run + 1, path: o.path, endOnFailure: true };
}

/** Wraps a predicate so the heartbeat sees each evaluation. */
export function counted<T>(
  o: RunOptions,
  state: { evals: number; failed: boolean },
  f: (v: T) => Promise<void>,
) {
  return async (v: T): Promise<void> => {
    state.evals++;
    o.onEval?.(state.failed);
    try {
      await f(v);
    } catch (e) {
      state.failed = true;
      throw e;
    }
  };
}

// ---------------------------------------------------------------------------
// Escape traps, error logs and tracing (shared)
// ---------------------------------------------------------------------------

/** unhandledrejection / error listeners: anything that escapes is recorded, not fatal. */
export class EscapeTrap {
  readonly seen: string[] = [];
  readonly #rej = (e: PromiseRejectionEvent) => {
    e.preventDefault();
    this.seen.push(`unhandled rejection: ${describe(e.reason)}`);
  };
  readonly #err = (e: ErrorEvent) => {
    e.preventDefault();
    this.seen.push(`uncaught error: ${describe(e.error ?? e.message)}`);
  };

  install(): void {
    globalThis.addEventListener("unhandledrejection", this.#rej);
    globalThis.addEventListener("error", this.#err);
  }

  uninstall(): void {
    globalThis.removeEventListener("unhandledrejection", this.#rej);
    globalThis.removeEventListener("error", this.#err);
  }

  take(): string[] {
    return this.seen.splice(0);
  }
}

export function describe(e: unknown): string {
  return e instanceof Error ? (e.stack ?? e.message) : String(e);
}

/**
 * Error-level log records under "vswitch": the reactor logs a handler that
 * threw, the connection a close that failed — both are bugs the code only
 * survives. Lower levels (the device's refusals) are expected and dropped.
 */
export const errorLogs: string[] = [];

export async function captureErrorLogs(): Promise<void> {
  await configure({
    reset: true,
    sinks: {
      fuzz: (r: LogRecord) => {
        const text = r.message.map((p) => typeof p === "string" ? p : Deno.inspect(p)).join("");
        errorLogs.push(`${r.category.join(".")} ${r.level}: ${text}`);
      },
    },
    loggers: [
      { category: ["vswitch"], lowestLevel: "error", sinks: ["fuzz"] },
      { category: ["logtape", "meta"], lowestLevel: "error", sinks: ["fuzz"] },
    ],
  });
}

export function fail(msg: string): never {
  throw new Error(msg);
}

export const tick = () => new Promise<void>((r) => setTimeout(r, 0));

/**
 * A crash (SIGBUS, SIGSEGV) ends the process before fast-check can report;
 * with tracing on, every input is written to stderr first, synchronously,
 * so the last lines name the culprit (`deno task fuzz --trace`).
 */
export const tracing = { on: false };
const encoder = new TextEncoder();

export function trace(what: () => string): void {
  if (tracing.on) Deno.stderr.writeSync(encoder.encode(what() + "\n"));
}

export function show(v: unknown): string {
  return fc.stringify(v);
}

// ---------------------------------------------------------------------------
// Sizes and u32 values (shared)
// ---------------------------------------------------------------------------

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;
export const TWO32 = 2 ** 32;
export const U32_MAX = 0xffff_ffff;
export const u32Arb = fc.integer({ min: 0, max: U32_MAX });
