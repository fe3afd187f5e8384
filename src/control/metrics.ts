/**
 * Prometheus metrics on `--metrics HOST:PORT` (default host 127.0.0.1),
 * text exposition format, made with prom-client (npm, runs under Deno's
 * npm support). Values are read from the dataplane's shared counters at
 * scrape time, so the data path does nothing for metrics. Names and labels
 * are listed in the README ("Metrics").
 *
 * @module
 */

import client from "prom-client";
import { logger } from "../log.ts";
import { VERSION } from "../version.ts";
import { COUNTER_NAMES } from "../switch/counters.ts";
import { type Controller, describeError } from "./controller.ts";
import { parseListen } from "./config.ts";
import { UserError } from "./errors.ts";

const log = logger("metrics");

/** "dropNoBuffer" → "no_buffer". */
export function dropReason(counter: string): string {
  return counter.slice(4).replace(/[A-Z]/g, (c, i) => (i ? "_" : "") + c.toLowerCase());
}

/** The `type` label: "vhost" for both vhost-user modes, else the port type. */
function typeLabel(t: string): string {
  return t.startsWith("vhost") ? "vhost" : t;
}

/** "rxPackets" → "rx_packets". */
function snake(name: string): string {
  return name.replace(/[A-Z]/g, (c) => "_" + c.toLowerCase());
}

/** Help texts of the per-port counters; a counter added later is exported with a plain help. */
const HELP: Record<string, string> = {
  rxPackets: "Frames the switch received from the port (the guest's transmit)",
  rxBytes: "Bytes the switch received from the port",
  txPackets: "Frames the switch sent to the port (the guest's receive)",
  txBytes: "Bytes the switch sent to the port",
  interrupts: "Guest interrupts sent (call eventfd writes)",
  wakeups: "Kicks and TAP wake-ups that woke the dataplane",
  queueBroken: "Times the dataplane stopped the port after a ring fault",
};

/** Builds the registry for a controller. */
export function createRegistry(ctl: Controller): client.Registry {
  const reg = new client.Registry();
  const labels = ["port", "type"];
  const rows = () =>
    ctl.sw.stats().map((s) => ({ s, l: { port: s.name, type: typeLabel(s.type) } }));
  // Every counter that is not a drop: vswitch_port_<snake_case>_total.
  for (const key of COUNTER_NAMES.filter((n) => !n.startsWith("drop"))) {
    new client.Counter({
      name: `vswitch_port_${snake(key)}_total`,
      help: HELP[key] ?? `Per-port counter ${key} (see the README)`,
      labelNames: labels,
      registers: [reg],
      collect() {
        this.reset();
        for (const { s, l } of rows()) this.inc(l, s.counters[key]);
      },
    });
  }
  const drops = COUNTER_NAMES.filter((n) => n.startsWith("drop"));
  new client.Counter({
    name: "vswitch_port_drops_total",
    help: "Frames dropped, by reason (see the README's counter list)",
    labelNames: [...labels, "reason"],
    registers: [reg],
    collect() {
      this.reset();
      for (const { s, l } of rows()) {
        for (const d of drops) this.inc({ ...l, reason: dropReason(d) }, s.counters[d]);
      }
    },
  });
  new client.Counter({
    name: "vswitch_port_capture_dropped_total",
    help: "Frames a capture could not keep (the ring was full; the dataplane never waits)",
    labelNames: labels,
    registers: [reg],
    collect() {
      this.reset();
      for (const p of ctl.sw.ports()) {
        this.inc({ port: p.name, type: typeLabel(p.type) }, ctl.sw.capture.dropped(p.id));
      }
    },
  });
  new client.Gauge({
    name: "vswitch_port_up",
    help: "1 if the port has a working frontend (a TAP: open), else 0",
    labelNames: labels,
    registers: [reg],
    collect() {
      this.reset();
      for (const p of ctl.sw.ports()) {
        const up = p.connected && !ctl.broken(p.name);
        this.set({ port: p.name, type: typeLabel(p.type) }, up ? 1 : 0);
      }
    },
  });
  new client.Gauge({
    name: "vswitch_ports",
    help: "Ports configured",
    registers: [reg],
    collect() {
      this.set(ctl.sw.ports().length);
    },
  });
  new client.Gauge({
    name: "vswitch_ports_up",
    help: "Ports with a working frontend",
    registers: [reg],
    collect() {
      this.set(ctl.sw.ports().filter((p) => p.connected && !ctl.broken(p.name)).length);
    },
  });
  new client.Gauge({
    name: "vswitch_fdb_entries",
    help: "MAC addresses in the forwarding database",
    registers: [reg],
    async collect() {
      try {
        this.set((await ctl.sw.fdb()).length);
      } catch { /* dataplane gone: keep the last value */ }
    },
  });
  new client.Counter({
    name: "vswitch_dataplane_rounds_total",
    help: "Polling rounds the dataplane worker ran (liveness)",
    registers: [reg],
    collect() {
      this.reset();
      this.inc(ctl.sw.rounds);
    },
  });
  new client.Gauge({
    name: "vswitch_uptime_seconds",
    help: "Seconds since the switch started",
    registers: [reg],
    collect() {
      this.set((Date.now() - ctl.started) / 1000);
    },
  });
  const info = new client.Gauge({
    name: "vswitch_build_info",
    help: "Always 1; the labels say which build runs",
    labelNames: ["version", "deno", "v8", "typescript"],
    registers: [reg],
  });
  info.set({
    version: VERSION,
    deno: Deno.version.deno,
    v8: Deno.version.v8,
    typescript: Deno.version.typescript,
  }, 1);
  return reg;
}

/** The metrics HTTP endpoint (`GET /metrics`). */
export class MetricsServer {
  readonly #server: Deno.HttpServer<Deno.NetAddr>;

  private constructor(server: Deno.HttpServer<Deno.NetAddr>, readonly listen: string) {
    this.#server = server;
  }

  /** Serves `GET /metrics` on HOST:PORT; throws a UserError if it cannot bind. */
  static async start(listen: string, ctl: Controller): Promise<MetricsServer> {
    const [hostname, port] = parseListen(listen);
    const reg = createRegistry(ctl);
    let server: Deno.HttpServer<Deno.NetAddr>;
    let bound = "";
    try {
      server = Deno.serve({
        hostname,
        port,
        onListen: (a) => (bound = `${a.hostname}:${a.port}`),
        onError: (e) => {
          log.error`Metrics error: ${describeError(e)}`;
          return new Response("internal error\n", { status: 500 });
        },
      }, async (req) => {
        const path = new URL(req.url).pathname;
        if (path !== "/metrics") return new Response("see /metrics\n", { status: 404 });
        return new Response(await reg.metrics(), { headers: { "content-type": reg.contentType } });
      });
    } catch (e) {
      throw new UserError(
        `Cannot serve metrics on ${listen}: ${describeError(e)} (pick another --metrics HOST:PORT)`,
        { cause: e },
      );
    }
    await Promise.resolve();
    log.info`Metrics on http://${bound || listen}/metrics`;
    return new MetricsServer(server, bound || listen);
  }

  /** Stops serving. */
  async close(): Promise<void> {
    await this.#server.shutdown();
  }
}
