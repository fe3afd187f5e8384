/**
 * `deno task start -- [options]`: runs the switch until SIGINT/SIGTERM.
 *
 * @module
 */

import { parseCli, USAGE } from "./args.ts";
import { formatStats } from "./stats_table.ts";
import { logger, setupLogging } from "../log.ts";
import { installProcessGuards } from "./guards.ts";
import { Switch } from "../switch/switch.ts";

let opts;
try {
  opts = parseCli(Deno.args);
} catch (e) {
  console.error(`${(e as Error).message}\n\n${USAGE}`);
  Deno.exit(2);
}
if (opts.help) {
  console.log(USAGE);
  Deno.exit(0);
}
await setupLogging({ level: opts.logLevel, format: opts.logFormat });
const log = logger("cli");

// A stray rejection or exception anywhere must not end the process serving every port.
installProcessGuards(log);

const sw = await Switch.create({ fdbAgingSeconds: opts.fdbAging });
sw.onFatal = () => Deno.exit(1); // already logged; a switch that cannot forward must not linger
try {
  for (const t of opts.tap) await sw.addTap(t);
  for (const v of opts.vhost) await sw.addVhostServer(v.name, v.target);
  for (const v of opts.vhostClient) await sw.addVhostClient(v.name, v.target);
} catch (e) {
  log.error`${(e as Error).message}: ${(e as Error).cause ?? ""}`;
  await sw.close();
  Deno.exit(1);
}

let timer: ReturnType<typeof setInterval> | undefined;
if (opts.stats > 0) {
  timer = setInterval(() => console.log(`\n${formatStats(sw.stats())}`), opts.stats * 1000);
}

let stopping = false;
async function stop(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  log.info`${signal}: stopping`;
  clearInterval(timer);
  await sw.close();
  log.info`Stopped`;
  Deno.exit(0);
}
Deno.addSignalListener("SIGINT", () => stop("SIGINT"));
Deno.addSignalListener("SIGTERM", () => stop("SIGTERM"));

const names = sw.stats().map((p) => `${p.name} (${p.type} ${p.target})`).join(", ");
log.info`Ready: ${names || "no ports"}`;
