/**
 * The `--help` texts of `vswitch` and each subcommand (`vswitch run`'s is
 * args.ts USAGE).
 *
 * @module
 */

import { USAGE as RUN } from "./args.ts";

const CONTROL = `  --control PATH   the switch's control socket (default $VSWITCH_CONTROL, else
                   /run/vswitch.sock as root, else $XDG_RUNTIME_DIR or /tmp/vswitch-UID.sock)`;

/** `vswitch --help`. */
export const MAIN = `vswitch: a userspace virtio-net switch (vhost-user guests + host TAPs)

Usage: vswitch COMMAND [options]     (without compiling: deno task vswitch COMMAND …)

Commands:
  run                 run the switch (ports from options or --config FILE)
  ports               list ports: type, state, queues, MTU, offloads, negotiated features
  port add|del|show   add a port at runtime, remove one (releasing everything), show one
  fdb [--flush]       show or flush the MAC table (whole or --port NAME)
  stats [--watch]     per-port rates and counters, redrawn in place with --watch
  capture PORT FILE   capture a port's frames to a pcapng file
  events              follow port events (connected, disconnected, broken, added, removed)
  reload              re-read the config file and reconcile the ports

Every command takes --help. Commands other than run talk to a running switch:
${CONTROL}`;

/** Help per subcommand. */
export const HELP: Record<string, string> = {
  run: RUN,
  ports: `Usage: vswitch ports [--json] [--control PATH]

Lists the ports: name, type, state (connected, listening, connecting, broken, up),
socket path or interface, MTU, queues (size, running), offloads, negotiated features.
  --json           the API's full answer (counters, rates, protocol features)
${CONTROL}`,
  port: `Usage: vswitch port add TYPE NAME [TARGET] [--offloads LIST] [--control PATH]
       vswitch port del NAME
       vswitch port show NAME

  add vhost NAME SOCKET_PATH          vhost-user port, server mode (QEMU connects)
  add vhost-client NAME SOCKET_PATH   vhost-user port, client mode (QEMU listens)
  add tap NAME [IFNAME]               host TAP (IFNAME defaults to NAME)
  --offloads LIST    csum,tso4,tso6,ecn,uso (comma-separated), all (default) or none
  del NAME           removes the port: socket, guest memory, fds, TAP released
  show NAME          one port as JSON
${CONTROL}`,
  fdb: `Usage: vswitch fdb [--port NAME] [--flush] [--json] [--control PATH]

Shows the learned MAC addresses (MAC, port, seconds since last seen).
  --port NAME      only the entries of that port
  --flush          forget the entries (of --port NAME, or all)
${CONTROL}`,
  stats: `Usage: vswitch stats [--watch] [--interval SECONDS] [--json] [--control PATH]

Per-port rates (packets and bits per second over the last second) and counters.
  --watch          keep printing; on a terminal the table is redrawn in place
  --interval S     seconds between updates with --watch (default 1)
${CONTROL}`,
  capture: `Usage: vswitch capture PORT FILE [--count N] [--direction rx|tx|both] [--seconds S]

Captures PORT's frames into FILE (pcapng, opens in Wireshark and tshark). The switch
writes the file, so FILE is a path on the switch's machine. Each packet's flags say
its direction (inbound = received from the port, outbound = sent to it) and its
comment holds its virtio-net header. Stops after N frames, S seconds or Ctrl-C.
  --direction D    rx (from the port), tx (to the port) or both (default)
${CONTROL}`,
  events: `Usage: vswitch events [--json] [--control PATH]

Follows port events until Ctrl-C: added, removed, connected, disconnected and broken,
with the reason. --json prints the API's JSON lines.
${CONTROL}`,
  reload: `Usage: vswitch reload [--json] [--control PATH]

Re-reads the switch's --config file and reconciles: new ports added, removed ones
released, changed ones re-created, unchanged ones untouched. An invalid file is
refused whole and nothing changes. SIGHUP to the switch does the same.
${CONTROL}`,
};
