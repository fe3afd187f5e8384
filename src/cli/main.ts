/**
 * `vswitch COMMAND …`: one CLI for running and operating the switch
 * (`deno task compile` builds it into one binary; `deno task vswitch …`
 * runs it without compiling). Arguments that start with an option and no
 * command mean `run` (what `deno task start -- [options]` passes).
 *
 * A user's mistake (UserError) prints one line saying what to do and
 * exits 2; any other failure prints one line too and exits 1. Set
 * VSWITCH_DEBUG=1 for the stack.
 *
 * @module
 */

import { run } from "./commands/run.ts";
import { REMOTE } from "./commands/remote.ts";
import { MAIN } from "./usage.ts";
import { UserError } from "../control/errors.ts";
import { describeError } from "../control/controller.ts";
import { VERSION } from "../version.ts";

async function main(argv: string[]): Promise<number> {
  // `deno task … -- args` hands the "--" through: it separates the task's arguments.
  if (argv[0] === "--") argv = argv.slice(1);
  const [cmd, ...rest] = argv;
  if (cmd === undefined) {
    console.error(MAIN);
    return 2;
  }
  if (cmd === "--help" || cmd === "-h" || cmd === "help") {
    console.log(MAIN);
    return 0;
  }
  if (cmd === "--version" || cmd === "version") {
    console.log(`vswitch ${VERSION} (deno ${Deno.version.deno})`);
    return 0;
  }
  if (cmd === "run") return await run(rest);
  if (cmd.startsWith("-")) return await run(argv);
  const f = REMOTE[cmd];
  if (!f) {
    throw new UserError(
      `Unknown command ${cmd}: use run, ports, port, fdb, stats, capture, events or reload (vswitch --help)`,
    );
  }
  return await f(rest);
}

try {
  Deno.exit(await main(Deno.args));
} catch (e) {
  if (Deno.env.get("VSWITCH_DEBUG")) console.error(e);
  console.error(`vswitch: ${describeError(e)}`);
  Deno.exit(e instanceof UserError ? 2 : 1);
}
