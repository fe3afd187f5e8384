/**
 * Logging with LogTape (npm `@logtape/logtape`). Deno's `@std/log` was
 * removed from the standard library in 2025 and is on no registry we reach;
 * LogTape is typed, has no dependencies and is made for Deno.
 *
 * Categories: `["vswitch"]`, `["vswitch", "vhost", <port>]`,
 * `["vswitch", "switch"]`, `["vswitch", "tap", <port>]`. Nothing logs per
 * frame: the data path counts, the control path logs.
 *
 * @module
 */

import {
  configure,
  getConsoleSink,
  getJsonLinesFormatter,
  getLogger,
  getTextFormatter,
  type Logger,
  type LogLevel,
  reset,
} from "@logtape/logtape";

/** Levels accepted by `--log-level` and `VSWITCH_LOG_LEVEL`. */
export const LOG_LEVELS = ["debug", "info", "warn", "error"] as const;

/** One of LOG_LEVELS. */
export type LevelName = typeof LOG_LEVELS[number];

/** Options for `setupLogging`. */
export interface LogOptions {
  /** Lowest level printed; default from VSWITCH_LOG_LEVEL, else "info". */
  level?: LevelName;
  /** "text" (default) or "json" (one JSON object per line). */
  format?: "text" | "json";
}

function toLogTape(level: LevelName): LogLevel {
  return level === "warn" ? "warning" : level;
}

/** The level from VSWITCH_LOG_LEVEL, if it names one. */
export function levelFromEnv(): LevelName | undefined {
  const v = Deno.env.get("VSWITCH_LOG_LEVEL");
  return (LOG_LEVELS as readonly string[]).includes(v ?? "") ? v as LevelName : undefined;
}

/** Configures LogTape once for the process (replacing any earlier setup). */
export async function setupLogging(options: LogOptions = {}): Promise<void> {
  const level = options.level ?? levelFromEnv() ?? "info";
  const formatter = options.format === "json"
    ? getJsonLinesFormatter()
    : getTextFormatter({ value: "bare" });
  await reset();
  await configure({
    sinks: { console: getConsoleSink({ formatter }) },
    loggers: [
      { category: ["vswitch"], lowestLevel: toLogTape(level), sinks: ["console"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["console"] },
    ],
  });
}

/** A logger under the `vswitch` category. */
export function logger(...category: string[]): Logger {
  return getLogger(["vswitch", ...category]);
}
export type { Logger } from "@logtape/logtape";
