/**
 * `deno task start`: the switch's command line. The switch core lands with
 * the end-to-end issue; this entry point parses nothing yet.
 *
 * @module
 */

import { logger, setupLogging } from "../log.ts";

await setupLogging();
logger("cli").info`vswitch ${Deno.args.join(" ")}: the switch core is not built yet`;
