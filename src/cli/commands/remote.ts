/**
 * The subcommands that drive a running switch over its control socket:
 * `ports`, `port add|del`, `fdb`, `stats`, `capture`, `events`, `reload`.
 *
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";
import { ControlClient } from "../../control/client.ts";
import { defaultControlPath } from "../../control/server.ts";
import { parseOffloads, type PortInfo, type PortSpec } from "../../control/controller.ts";
import { UserError } from "../../control/errors.ts";
import type { CaptureStatus } from "../../switch/capture.ts";
import type { ReloadResult } from "../../control/server.ts";
import { HELP } from "../usage.ts";

const enc = new TextEncoder();

function out(text: string): void {
  Deno.stdout.writeSync(enc.encode(text + "\n"));
}

interface Parsed {
  _: string[];
  control?: string;
  help?: boolean;
  json?: boolean;
  [k: string]: unknown;
}

function parse(
  cmd: string,
  argv: string[],
  spec: { string?: string[]; boolean?: string[] },
): Parsed {
  return parseArgs(argv, {
    string: ["control", ...(spec.string ?? [])],
    boolean: ["help", "json", ...(spec.boolean ?? [])],
    unknown: (arg: string) => {
      if (arg.startsWith("-")) {
        throw new UserError(`Cannot parse ${arg}: unknown option of vswitch ${cmd} (see --help)`);
      }
      return true;
    },
  }) as unknown as Parsed;
}

function client(a: Parsed): ControlClient {
  return new ControlClient(a.control ?? defaultControlPath());
}

function positional(a: Parsed, cmd: string, n: number, names: string): string[] {
  const p = a._.map(String);
  if (p.length < n) {
    throw new UserError(`vswitch ${cmd} needs ${names} (see vswitch ${cmd} --help)`);
  }
  return p;
}

function table(head: string[], rows: string[][], right = new Set<number>()): string {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) =>
    r.map((c, i) => (right.has(i) ? c.padStart(w[i]) : c.padEnd(w[i]))).join("  ").trimEnd();
  return [line(head), ...rows.map(line)].join("\n");
}

function si(n: number, unit = ""): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}G${unit}`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M${unit}`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}k${unit}`;
  return `${n}${unit}`;
}

function drops(p: PortInfo): number {
  return Object.entries(p.counters).filter(([k]) => k.startsWith("drop")).reduce(
    (s, [, v]) => s + v,
    0,
  );
}

/** `vswitch ports` */
async function ports(argv: string[]): Promise<number> {
  const a = parse("ports", argv, {});
  if (a.help) return help("ports");
  const c = client(a);
  try {
    const list = await c.request<PortInfo[]>("GET", "/v1/ports");
    if (a.json) return out(JSON.stringify(list, null, 2)), 0;
    if (list.length === 0) {
      out("No ports. Add one: vswitch port add vhost NAME SOCKET_PATH (or tap NAME [IFNAME])");
      return 0;
    }
    out(table(
      ["name", "type", "state", "target", "mtu", "queues", "offloads", "negotiated"],
      list.map((p) => [
        p.name,
        p.type,
        p.state,
        p.target,
        String(p.mtu),
        p.queues.map((q) => `${q.name}:${q.size}${q.running ? "" : "(off)"}`).join(" ") || "-",
        p.offloads.join(",") || "none",
        (p.negotiated.length ? p.negotiated : p.features).join(",") || "-",
      ]),
    ));
    return 0;
  } finally {
    c.close();
  }
}

/** `vswitch port add|del` */
async function port(argv: string[]): Promise<number> {
  const a = parse("port", argv, { string: ["offloads"] });
  const [verb, ...rest] = a._.map(String);
  if (a.help || verb === undefined) return help("port", verb === undefined && !a.help ? 2 : 0);
  const c = client(a);
  try {
    if (verb === "add") {
      const [type, name, target] = rest;
      if (!type || !name) {
        throw new UserError(
          "vswitch port add needs TYPE NAME [TARGET], e.g. vswitch port add vhost vm3 /run/vm3.sock",
        );
      }
      const t = type === "vhost" ? "vhost-server" : type;
      if (!["vhost-server", "vhost-client", "tap"].includes(t)) {
        throw new UserError(`Port type ${type}: use vhost (server mode), vhost-client or tap`);
      }
      const spec: PortSpec = { name, type: t as PortSpec["type"] };
      if (t === "tap") spec.ifname = target ?? name;
      else {
        if (!target) {
          throw new UserError(
            `A ${t} port needs a socket path: vswitch port add ${type} ${name} PATH`,
          );
        }
        spec.path = target.startsWith("/") ? target : `${Deno.cwd()}/${target}`;
      }
      if (a.offloads !== undefined) spec.offloads = parseOffloads(String(a.offloads));
      const p = await c.request<PortInfo>("POST", "/v1/ports", spec);
      out(`Added port ${p.name} (${p.type} ${p.target}): ${p.state}`);
      return 0;
    }
    if (verb === "del" || verb === "rm" || verb === "remove") {
      const [name] = rest;
      if (!name) throw new UserError("vswitch port del needs the port's NAME");
      await c.request("DELETE", `/v1/ports/${encodeURIComponent(name)}`);
      out(`Removed port ${name}`);
      return 0;
    }
    if (verb === "show") {
      const [name] = rest;
      if (!name) throw new UserError("vswitch port show needs the port's NAME");
      out(JSON.stringify(await c.request("GET", `/v1/ports/${encodeURIComponent(name)}`), null, 2));
      return 0;
    }
    throw new UserError(`Unknown port command ${verb}: use add, del or show`);
  } finally {
    c.close();
  }
}

/** `vswitch fdb [--port NAME] [--flush]` */
async function fdb(argv: string[]): Promise<number> {
  const a = parse("fdb", argv, { string: ["port"], boolean: ["flush"] });
  if (a.help) return help("fdb");
  const c = client(a);
  const q = a.port ? `?port=${encodeURIComponent(String(a.port))}` : "";
  try {
    if (a.flush) {
      const r = await c.request<{ flushed: number }>("DELETE", `/v1/fdb${q}`);
      out(
        `Flushed ${r.flushed} entr${r.flushed === 1 ? "y" : "ies"}${
          a.port ? ` of port ${a.port}` : ""
        }`,
      );
      return 0;
    }
    const rows = await c.request<{ mac: string; port: string; ageSeconds: number }[]>(
      "GET",
      `/v1/fdb${q}`,
    );
    if (a.json) return out(JSON.stringify(rows, null, 2)), 0;
    rows.sort((x, y) => x.port.localeCompare(y.port) || x.mac.localeCompare(y.mac));
    out(
      table(
        ["mac", "port", "age"],
        rows.map((r) => [r.mac, r.port, `${r.ageSeconds}s`]),
        new Set([2]),
      ),
    );
    return 0;
  } finally {
    c.close();
  }
}

/** The `vswitch stats` table. */
export function statsTable(list: PortInfo[]): string {
  return table(
    [
      "port",
      "type",
      "state",
      "rx pps",
      "rx bit/s",
      "tx pps",
      "tx bit/s",
      "rx pkts",
      "tx pkts",
      "drops",
      "irqs",
    ],
    list.map((p) => [
      p.name,
      p.type,
      p.state,
      si(p.rates.rxPps),
      si(p.rates.rxBitsPerSec),
      si(p.rates.txPps),
      si(p.rates.txBitsPerSec),
      String(p.counters.rxPackets),
      String(p.counters.txPackets),
      String(drops(p)),
      String(p.counters.interrupts),
    ]),
    new Set([3, 4, 5, 6, 7, 8, 9, 10]),
  );
}

/** `vswitch stats [--watch] [--interval S]` */
async function stats(argv: string[]): Promise<number> {
  const a = parse("stats", argv, { string: ["interval"], boolean: ["watch"] });
  if (a.help) return help("stats");
  const interval = Number(a.interval ?? 1);
  if (!(interval > 0)) throw new UserError(`Cannot use --interval ${a.interval}: seconds > 0`);
  const c = client(a);
  const tty = Deno.stdout.isTerminal();
  try {
    for (let lines = 0;;) {
      const list = await c.request<PortInfo[]>("GET", "/v1/ports");
      const text = a.json ? JSON.stringify(list) : statsTable(list);
      // On a terminal, redraw in place: cursor up over the previous table, clear to the end.
      if (a.watch && tty && lines > 0) Deno.stdout.writeSync(enc.encode(`\x1b[${lines}A\x1b[J`));
      out(text);
      lines = text.split("\n").length;
      if (!a.watch) return 0;
      if (!tty && !a.json) out("");
      await new Promise((r) => setTimeout(r, interval * 1000));
    }
  } finally {
    c.close();
  }
}

/** `vswitch capture PORT FILE [--count N] [--direction D] [--seconds S]` */
async function capture(argv: string[]): Promise<number> {
  const a = parse("capture", argv, { string: ["count", "direction", "seconds"] });
  if (a.help) return help("capture");
  const [portName, fileArg] = positional(a, "capture", 2, "PORT FILE");
  const file = fileArg.startsWith("/") ? fileArg : `${Deno.cwd()}/${fileArg}`;
  const body: Record<string, unknown> = { file, direction: a.direction ?? "both" };
  if (a.count !== undefined) body.count = Number(a.count);
  const seconds = a.seconds === undefined ? undefined : Number(a.seconds);
  if (seconds !== undefined && !(seconds > 0)) {
    throw new UserError(`Cannot use --seconds ${a.seconds}: a number of seconds > 0`);
  }
  const c = client(a);
  const path = `/v1/ports/${encodeURIComponent(portName)}/capture`;
  try {
    await c.request<CaptureStatus>("POST", path, body);
    Deno.stderr.writeSync(enc.encode(`Capturing on ${portName} to ${file} (Ctrl-C stops)\n`));
    let stop = false;
    const onSig = () => (stop = true);
    Deno.addSignalListener("SIGINT", onSig);
    Deno.addSignalListener("SIGTERM", onSig);
    const until = seconds === undefined ? Infinity : Date.now() + seconds * 1000;
    let s: CaptureStatus;
    try {
      for (;;) {
        s = await c.request<CaptureStatus>("GET", path);
        if (s.state === "done") break;
        if (stop || Date.now() >= until) {
          s = await c.request<CaptureStatus>("DELETE", path);
          break;
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    } finally {
      Deno.removeSignalListener("SIGINT", onSig);
      Deno.removeSignalListener("SIGTERM", onSig);
    }
    out(`${s.written} frames captured to ${s.file}, ${s.dropped} dropped (the ring was full)`);
    return 0;
  } finally {
    c.close();
  }
}

function eventLine(e: Record<string, string>): string {
  return `${e.time}  ${e.port ?? "-"}  ${e.type}${e.reason ? `: ${e.reason}` : ""}`;
}

/** `vswitch events [--json]` */
async function events(argv: string[]): Promise<number> {
  const a = parse("events", argv, {});
  if (a.help) return help("events");
  const c = client(a);
  const abort = new AbortController();
  const onSig = () => abort.abort();
  Deno.addSignalListener("SIGINT", onSig);
  try {
    await c.follow("/v1/events", (v) => {
      const e = v as Record<string, string>;
      if (e.type === "hello" && !a.json) return;
      out(a.json ? JSON.stringify(e) : eventLine(e));
    }, abort.signal);
    return 0;
  } finally {
    Deno.removeSignalListener("SIGINT", onSig);
    c.close();
  }
}

/** `vswitch reload` */
async function reload(argv: string[]): Promise<number> {
  const a = parse("reload", argv, {});
  if (a.help) return help("reload");
  const c = client(a);
  try {
    const r = await c.request<ReloadResult>("POST", "/v1/reload");
    if (a.json) return out(JSON.stringify(r, null, 2)), 0;
    const f = (l: string[]) => (l.length ? l.join(", ") : "-");
    out(
      `Reloaded: added ${f(r.added)}; removed ${f(r.removed)}; changed ${f(r.changed)}; unchanged ${
        f(r.unchanged)
      }`,
    );
    for (const n of r.notes) out(`Note: ${n}`);
    return 0;
  } finally {
    c.close();
  }
}

function help(cmd: string, code = 0): number {
  (code === 0 ? console.log : console.error)(HELP[cmd]);
  return code;
}

/** The remote subcommands by name. */
export const REMOTE: Record<string, (argv: string[]) => Promise<number>> = {
  ports,
  port,
  fdb,
  stats,
  capture,
  events,
  reload,
};
