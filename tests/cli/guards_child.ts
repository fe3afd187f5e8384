/**
 * A process with the CLI's guards installed that then does what a bug
 * would: rejects a promise nobody awaits and throws from a timer.
 */
import { logger, setupLogging } from "../../src/log.ts";
import { caught, installProcessGuards } from "../../src/cli/guards.ts";

await setupLogging({ level: "info" });
installProcessGuards(logger("guards-test"));
Promise.reject(new Error("stray rejection"));
setTimeout(() => {
  throw new Error("thrown in a timer");
}, 0);
setTimeout(() => console.log(JSON.stringify({ alive: true, ...caught })), 200);
