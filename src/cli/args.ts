/**
 * Options of `vswitch run` (also what `deno task start -- …` takes).
 *
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";
import { type LevelName, LOG_LEVELS } from "../log.ts";
import { parseOffloads } from "../control/controller.ts";
import { UserError } from "../control/errors.ts";
import { parseListen } from "../control/config.ts";

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
  /** Offloads per port name (absent: all). */
  offloads: Map<string, string[]>;
  /** The config file (--config). */
  config?: string;
  /** The control socket (--control; "none" turns the API off). */
  control?: string;
  /** The metrics listen address (--metrics HOST:PORT). */
  metrics?: string;
  /** FDB aging from --fdb-aging, if given. */
  fdbAgingSet: boolean;
  fdbAging: number;
  stats: number;
  logLevel?: LevelName;
  logFormat: "text" | "json";
  help: boolean;
}

/** The --help text of `vswitch run`. */
export const USAGE = `vswitch run: runs the switch (vhost-user guests + host TAPs)

Usage: vswitch run [--config FILE] [options]
       (without compiling: deno task vswitch run …, or deno task start -- [options])

Ports (repeatable; more can be added at runtime with "vswitch port add"):
  --vhost NAME=SOCKET_PATH          vhost-user port, server mode (we create the socket;
                                    QEMU connects with -chardev socket,path=SOCKET_PATH)
  --vhost-client NAME=SOCKET_PATH   vhost-user port, client mode (QEMU listens with
                                    server=on; we connect and reconnect when it goes away)
  --tap IFNAME                      host TAP port (created if missing, link set up)
  --offloads NAME=LIST              offloads port NAME offers: csum,tso4,tso6,ecn,uso
                                    (comma-separated), all (default) or none

Options:
  --config FILE         declarative config (TOML: ports, offloads, FDB aging, metrics,
                        control socket); "vswitch reload" or SIGHUP re-reads it
  --control PATH        control API socket (default ${"$"}VSWITCH_CONTROL, else
                        /run/vswitch.sock as root, else ${"$"}XDG_RUNTIME_DIR or /tmp/vswitch-UID.sock);
                        "none": no control API
  --metrics HOST:PORT   Prometheus metrics at http://HOST:PORT/metrics (HOST default 127.0.0.1)
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
      throw new UserError(
        `Cannot parse ${flag} ${v}: expected NAME=${flag === "--offloads" ? "LIST" : "PATH"}`,
      );
    }
    return { name: v.slice(0, eq), target: v.slice(eq + 1) };
  });
}

function positive(flag: string, v: unknown, dflt: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) {
    throw new UserError(`Cannot parse ${flag} ${v}: expected seconds ≥ 0`);
  }
  return n;
}

/** Parses argv; throws with a readable message on bad input. */
export function parseCli(argv: string[]): CliOptions {
  // `deno task start -- --vhost …` hands the "--" through: it separates the task's
  // arguments, it is not the end of ours.
  if (argv[0] === "--") argv = argv.slice(1);
  const a = parseArgs(argv, {
    string: [
      "vhost",
      "vhost-client",
      "tap",
      "offloads",
      "config",
      "control",
      "metrics",
      "fdb-aging",
      "stats",
      "log-level",
      "log-format",
    ],
    boolean: ["help"],
    collect: ["vhost", "vhost-client", "tap", "offloads"],
    unknown: (arg: string) => {
      throw new UserError(`Cannot parse ${arg}: unknown option (see vswitch run --help)`);
    },
  });
  const level = a["log-level"];
  if (level !== undefined && !(LOG_LEVELS as readonly string[]).includes(level)) {
    throw new UserError(`Cannot parse --log-level ${level}: expected ${LOG_LEVELS.join("|")}`);
  }
  const format = a["log-format"] ?? "text";
  if (format !== "text" && format !== "json") {
    throw new UserError(`Cannot parse --log-format ${format}: expected text|json`);
  }
  const opts: CliOptions = {
    vhost: named("--vhost", a.vhost as string[]),
    vhostClient: named("--vhost-client", a["vhost-client"] as string[]),
    tap: a.tap as string[],
    offloads: new Map(),
    fdbAgingSet: a["fdb-aging"] !== undefined,
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
  if (dup) throw new UserError(`Cannot use port name ${dup} twice: give each port its own name`);
  for (const { name, target } of named("--offloads", a.offloads as string[])) {
    if (!names.includes(name)) {
      throw new UserError(
        `Cannot set --offloads for ${name}: no port of that name on the command line`,
      );
    }
    opts.offloads.set(name, parseOffloads(target));
  }
  if (a.config !== undefined) opts.config = a.config as string;
  if (a.control !== undefined) opts.control = a.control as string;
  if (a.metrics !== undefined) {
    parseListen(a.metrics as string);
    opts.metrics = a.metrics as string;
  }
  return opts;
}
