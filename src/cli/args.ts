/**
 * Command-line options of `deno task start`.
 *
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";
import { type LevelName, LOG_LEVELS } from "../log.ts";

/** A named port argument: NAME=PATH or NAME=IFNAME. */
export interface NamedTarget {
  name: string;
  target: string;
}

/** Parsed options. */
export interface CliOptions {
  vhost: NamedTarget[];
  vhostClient: NamedTarget[];
  tap: string[];
  fdbAging: number;
  stats: number;
  logLevel?: LevelName;
  logFormat: "text" | "json";
  help: boolean;
}

/** The --help text. */
export const USAGE = `vswitch: a userspace virtio-net switch (vhost-user guests + host TAP)

Usage: deno task start -- [options]

Ports (repeatable):
  --vhost NAME=SOCKET_PATH          vhost-user port, server mode (we create the socket;
                                    QEMU connects with -chardev socket,path=SOCKET_PATH)
  --vhost-client NAME=SOCKET_PATH   vhost-user port, client mode (QEMU listens with
                                    server=on; we connect and reconnect when it goes away)
  --tap IFNAME                      host TAP port (created if missing, link set up)

Options:
  --fdb-aging SECONDS   FDB entry lifetime without traffic (default 300)
  --stats SECONDS       print a per-port counter table every SECONDS (default 0: off)
  --log-level LEVEL     debug|info|warn|error (default info, or VSWITCH_LOG_LEVEL)
  --log-format FORMAT   text|json (default text)
  --help                this text

Runs until SIGINT or SIGTERM, then removes its sockets, unmaps guest memory
and releases the TAPs it created.`;

function named(flag: string, values: string[]): NamedTarget[] {
  return values.map((v) => {
    const eq = v.indexOf("=");
    if (eq <= 0 || eq === v.length - 1) {
      throw new Error(`Cannot parse ${flag} ${v}: expected NAME=PATH`);
    }
    return { name: v.slice(0, eq), target: v.slice(eq + 1) };
  });
}

function positive(flag: string, v: unknown, dflt: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) {
    throw new Error(`Cannot parse ${flag} ${v}: expected seconds ≥ 0`);
  }
  return n;
}

/** Parses argv; throws with a readable message on bad input. */
export function parseCli(argv: string[]): CliOptions {
  // `deno task start -- --vhost …` hands the "--" through: it separates the task's
  // arguments, it is not the end of ours.
  if (argv[0] === "--") argv = argv.slice(1);
  const a = parseArgs(argv, {
    string: ["vhost", "vhost-client", "tap", "fdb-aging", "stats", "log-level", "log-format"],
    boolean: ["help"],
    collect: ["vhost", "vhost-client", "tap"],
    unknown: (arg: string) => {
      throw new Error(`Cannot parse ${arg}: unknown option (see --help)`);
    },
  });
  const level = a["log-level"];
  if (level !== undefined && !(LOG_LEVELS as readonly string[]).includes(level)) {
    throw new Error(`Cannot parse --log-level ${level}: expected ${LOG_LEVELS.join("|")}`);
  }
  const format = a["log-format"] ?? "text";
  if (format !== "text" && format !== "json") {
    throw new Error(`Cannot parse --log-format ${format}: expected text|json`);
  }
  const opts: CliOptions = {
    vhost: named("--vhost", a.vhost as string[]),
    vhostClient: named("--vhost-client", a["vhost-client"] as string[]),
    tap: a.tap as string[],
    fdbAging: positive("--fdb-aging", a["fdb-aging"], 300),
    stats: positive("--stats", a.stats, 0),
    logLevel: level as LevelName | undefined,
    logFormat: format,
    help: a.help as boolean,
  };
  const names = [
    ...opts.vhost.map((p) => p.name),
    ...opts.vhostClient.map((p) => p.name),
    ...opts.tap,
  ];
  const dup = names.find((n, i) => names.indexOf(n) !== i);
  if (dup) throw new Error(`Cannot use port name ${dup} twice`);
  return opts;
}
