/**
 * `vswitch run`: starts the switch with the ports of the command line and
 * the config file, the control API and (optionally) the metrics
 * endpoint, and runs until SIGINT/SIGTERM. SIGHUP reloads the config.
 *
 * @module
 */

import { type CliOptions, parseCli, USAGE } from "../args.ts";
import { formatStats } from "../stats_table.ts";
import { logger, setupLogging } from "../../log.ts";
import { installProcessGuards } from "../guards.ts";
import { Switch } from "../../switch/switch.ts";
import { checkSpec, Controller, describeError, type PortSpec } from "../../control/controller.ts";
import { type Config, loadConfig, reconcile } from "../../control/config.ts";
import { ControlServer, defaultControlPath } from "../../control/server.ts";
import { MetricsServer } from "../../control/metrics.ts";

/** The port specs the command line asks for. */
export function cliSpecs(o: CliOptions): PortSpec[] {
  const off = (name: string) => {
    const list = o.offloads.get(name);
    return list === undefined ? {} : { offloads: list };
  };
  return [
    ...o.tap.map((t): PortSpec => ({ name: t, type: "tap", ifname: t, ...off(t) })),
    ...o.vhost.map((v): PortSpec => ({
      name: v.name,
      type: "vhost-server",
      path: v.target,
      ...off(v.name),
    })),
    ...o.vhostClient.map((v): PortSpec => ({
      name: v.name,
      type: "vhost-client",
      path: v.target,
      ...off(v.name),
    })),
  ];
}

/** Runs the switch; resolves only on a startup failure (then the process exits). */
export async function run(argv: string[]): Promise<number> {
  const opts = parseCli(argv);
  if (opts.help) {
    console.log(USAGE);
    return 0;
  }
  let config: Config | undefined;
  if (opts.config) config = await loadConfig(opts.config);
  const specs = cliSpecs(opts);
  // Every port is checked before anything starts: a mistake is one line, nothing half-made.
  const all: PortSpec[] = [];
  for (const s of [...(config?.ports ?? []), ...specs]) {
    checkSpec(s, all);
    all.push(s);
  }
  await setupLogging({ level: opts.logLevel, format: opts.logFormat });
  const log = logger("cli");
  // A stray rejection or exception anywhere must not end the process serving every port.
  installProcessGuards(log);

  const aging = opts.fdbAgingSet ? opts.fdbAging : config?.fdbAging ?? opts.fdbAging;
  const sw = await Switch.create({ fdbAgingSeconds: aging });
  sw.onFatal = () => Deno.exit(1); // already logged; a switch that cannot forward must not linger
  const ctl = new Controller(sw);
  let metrics: MetricsServer | undefined;
  let control: ControlServer | undefined;
  const shutdown = async () => {
    await control?.close().catch(() => {});
    await metrics?.close().catch(() => {});
    ctl.close();
    await sw.close();
  };
  try {
    for (const s of config?.ports ?? []) await ctl.add(s, "config");
    for (const s of specs) await ctl.add(s, "cli");
    const listen = opts.metrics ?? config?.metrics;
    if (listen) metrics = await MetricsServer.start(listen, ctl);
  } catch (e) {
    await shutdown();
    throw e;
  }

  const setMetrics = async (listen: string | undefined) => {
    await metrics?.close();
    metrics = undefined;
    if (listen) metrics = await MetricsServer.start(listen, ctl);
  };
  const reload = opts.config
    ? async () => {
      const next = await loadConfig(opts.config!);
      const result = await reconcile(ctl, config, next, { setMetrics });
      config = next;
      return result;
    }
    : undefined;

  const controlPath = opts.control ?? config?.control ?? defaultControlPath();
  if (controlPath !== "none") {
    try {
      control = await ControlServer.listen(controlPath, ctl, {
        reload,
        info: () => ({
          config: opts.config ?? null,
          metrics: metrics?.listen ?? null,
          copyWindow: sw.copyWindow,
        }),
      });
    } catch (e) {
      if (opts.control !== undefined || config?.control !== undefined) {
        await shutdown();
        throw e;
      }
      // The default socket is a convenience: a second switch on the machine still runs.
      log.warn`No control API: ${describeError(e)}`;
    }
  }

  let timer: ReturnType<typeof setInterval> | undefined;
  if (opts.stats > 0) {
    timer = setInterval(() => console.log(`\n${formatStats(sw.stats())}`), opts.stats * 1000);
  }

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info`${signal}: stopping`;
    clearInterval(timer);
    await shutdown();
    log.info`Stopped`;
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", () => stop("SIGINT"));
  Deno.addSignalListener("SIGTERM", () => stop("SIGTERM"));
  Deno.addSignalListener("SIGHUP", () => {
    if (!reload) {
      log.warn`SIGHUP: started without --config, nothing to reload`;
      return;
    }
    reload().then(
      (r) =>
        log.info`SIGHUP reload: added ${r.added.join(",") || "-"}, removed ${
          r.removed.join(",") || "-"
        }, changed ${r.changed.join(",") || "-"}`,
      (e) => log.error`SIGHUP reload refused: ${describeError(e)}`,
    );
  });

  const names = sw.stats().map((p) => `${p.name} (${p.type} ${p.target})`).join(", ");
  if (sw.ports().length === 0) {
    const restart = "start with --vhost NAME=SOCKET_PATH, --tap IFNAME or --config FILE";
    const how = control
      ? `add one with vswitch port add vhost NAME SOCKET_PATH --control ${control.path} (or ${restart})`
      : `${restart} (the control API is off, so none can be added now)`;
    log.warn`No ports yet: ${how}`;
  }
  log.info`Ready: ${names || "no ports"}; control ${control?.path ?? "off"}${
    metrics ? `; metrics http://${metrics.listen}/metrics` : ""
  }`;
  return await new Promise<number>(() => {}); // runs until a signal
}
