/**
 * Process-wide safety nets for a program that serves several guests
 * (CHECKLIST item 33). In Deno an unhandled promise rejection or an
 * uncaught exception in a callback ends the whole process, and with it
 * every port. Each port already catches its own faults (a connection
 * closes, a dataplane port stops); these handlers are the last line: they
 * log the stray error once and keep the process up.
 *
 * The library (`mod.ts`) does not install them: an embedding program owns
 * its global handlers. The CLI does.
 *
 * @module
 */

import type { Logger } from "../log.ts";

/** How many stray errors the guards have caught (tests, stats). */
export const caught = { rejections: 0, exceptions: 0 };

/**
 * Installs `unhandledrejection` and `error` listeners that log the error
 * with `log` and prevent the default (ending the process).
 */
export function installProcessGuards(log: Logger): void {
  globalThis.addEventListener("unhandledrejection", (e) => {
    e.preventDefault();
    caught.rejections++;
    log.error`Unhandled rejection (the process stays up): ${describe(e.reason)}`;
  });
  globalThis.addEventListener("error", (e) => {
    e.preventDefault();
    caught.exceptions++;
    log.error`Uncaught exception (the process stays up): ${describe(e.error ?? e.message)}`;
  });
}

function describe(err: unknown): string {
  return err instanceof Error ? (err.stack ?? err.message) : String(err);
}
