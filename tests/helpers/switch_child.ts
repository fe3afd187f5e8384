/**
 * The switch as a separate process for hostile-input tests: what a bad
 * peer does to it cannot take the test runner down with it, and the test
 * can read its /proc/<pid>/fd and /proc/<pid>/maps. Embeds the library,
 * logs JSON lines, and answers "stats" on stdin with one JSON line on
 * stdout, and "mem" with the heap figures after a full GC (the control API
 * is a later issue; this is the test's window).
 *
 * Usage: deno run -A switch_child.ts NAME=SOCKET ...
 *
 * @module
 */

import { Switch } from "../../mod.ts";
import { logger, setupLogging } from "../../src/log.ts";
import { installProcessGuards } from "../../src/cli/guards.ts";

await setupLogging({ level: "info", format: "json" });
installProcessGuards(logger("child"));
const sw = await Switch.create();
for (const arg of Deno.args) {
  const [name, path] = arg.split("=");
  await sw.addVhostServer(name, path);
}
Deno.addSignalListener("SIGTERM", async () => {
  await sw.close();
  Deno.exit(0);
});
console.log(JSON.stringify({ ready: true }));

const enc = new TextEncoder();
let pending = "";
for await (const chunk of Deno.stdin.readable) {
  pending += new TextDecoder().decode(chunk);
  let nl;
  while ((nl = pending.indexOf("\n")) >= 0) {
    const line = pending.slice(0, nl).trim();
    pending = pending.slice(nl + 1);
    if (line === "stats") {
      const out = JSON.stringify({ stats: sw.stats(), rounds: sw.rounds });
      await Deno.stdout.write(enc.encode(out + "\n"));
    } else if (line === "mem") {
      // The control plane's heap after a full GC (the child runs with --expose-gc).
      (globalThis as unknown as { gc?: () => void }).gc?.();
      const out = JSON.stringify({ mem: Deno.memoryUsage() });
      await Deno.stdout.write(enc.encode(out + "\n"));
    }
  }
}
await sw.close();
