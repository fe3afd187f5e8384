/**
 * The operator's view of a running switch: ports described by specs
 * (what the user asked for, with where it came from), their state
 * (connected, broken), rates sampled once a second, and the checks that
 * turn a user's mistake into one clear sentence before anything changes.
 * The control API, the metrics endpoint and config reloads all go
 * through here.
 *
 * @module
 */

import { logger } from "../log.ts";
import type { PortOptions, PortStats, Switch, SwitchEvent } from "../switch/switch.ts";
import type { OffloadName } from "../virtio/features.ts";
import { VhostPort } from "../switch/ports.ts";
import { featureNames, OFFLOAD_NAMES } from "../virtio/features.ts";
import { ProtocolFeature } from "../vhost_user/protocol.ts";
import { UserError } from "./errors.ts";

const log = logger("control");

/** Offload names for `--offloads` and the config file (the switch's own list). */
export { OFFLOAD_NAMES };

/** Port types. */
export const PORT_TYPES = ["vhost-server", "vhost-client", "tap"] as const;

/** What a port should be. */
export interface PortSpec {
  /** Name: letters, digits, `_`, `-`, `.`; at most 32. */
  name: string;
  type: typeof PORT_TYPES[number];
  /** vhost-user socket path (vhost types). */
  path?: string;
  /** Interface name (tap; default: the port name). */
  ifname?: string;
  /** Offloads offered (default: all; [] none). */
  offloads?: string[];
}

/** Where a port came from: reload only reconciles ports the config file made. */
export type PortOrigin = "config" | "cli" | "api";

/** Rates over the last sampling second. */
export interface Rates {
  rxPps: number;
  txPps: number;
  rxBitsPerSec: number;
  txBitsPerSec: number;
}

/** A port as `GET /v1/ports` shows it. */
export interface PortInfo {
  name: string;
  type: string;
  target: string;
  origin: PortOrigin;
  /** "connected", "listening" (server, no frontend), "connecting" (client), "broken", "up" (tap). */
  state: string;
  connected: boolean;
  mtu: number;
  /** Offloads the port's options allow. */
  offloads: string[];
  /** What it negotiated: a guest's virtio features, a TAP's TUNSETOFFLOAD flags. */
  negotiated: string[];
  features: string[];
  protocolFeatures: string[];
  queues: { index: number; name: string; size: number; enabled: boolean; running: boolean }[];
  connections?: number;
  counters: PortStats["counters"];
  rates: Rates;
  capture: string | null;
}

const NAME_RE = /^[A-Za-z0-9_.-]{1,32}$/;

/** Parses an offload list: "all", "none", or names separated by commas. */
export function parseOffloads(text: string): string[] {
  const t = text.trim();
  if (t === "all") return [...OFFLOAD_NAMES];
  if (t === "none" || t === "") return [];
  const names = t.split(",").map((s) => s.trim());
  for (const n of names) checkOffload(n);
  return [...new Set(names)];
}

function checkOffload(n: string): void {
  if (!(OFFLOAD_NAMES as readonly string[]).includes(n)) {
    throw new UserError(
      `Unknown offload "${n}": use ${OFFLOAD_NAMES.join(", ")}, "all" or "none"`,
    );
  }
}

function dirname(path: string): string {
  const i = path.lastIndexOf("/");
  return i < 0 ? "." : i === 0 ? "/" : path.slice(0, i);
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** The target a spec names (socket path or interface). */
export function specTarget(s: PortSpec): string {
  return s.type === "tap" ? (s.ifname ?? s.name) : s.path ?? "";
}

/** Two specs ask for the same port. */
export function sameSpec(a: PortSpec, b: PortSpec): boolean {
  const off = (s: PortSpec) => (s.offloads ?? [...OFFLOAD_NAMES]).slice().sort().join(",");
  return a.name === b.name && a.type === b.type && specTarget(a) === specTarget(b) &&
    off(a) === off(b);
}

/**
 * Checks a spec on its own (shape, names, paths on this machine); throws a
 * UserError saying what to change. `others` are the specs it must not clash with.
 */
export function checkSpec(s: PortSpec, others: PortSpec[]): void {
  if (typeof s !== "object" || s === null) throw new UserError("A port must be an object");
  if (typeof s.name !== "string" || !NAME_RE.test(s.name)) {
    throw new UserError(
      `Port name ${JSON.stringify(s.name)} is not valid: use 1-32 letters, digits, "_", "-" or "."`,
    );
  }
  if (!(PORT_TYPES as readonly string[]).includes(s.type)) {
    throw new UserError(
      `Port ${s.name}: type ${JSON.stringify(s.type)} is not one of ${PORT_TYPES.join(", ")}`,
    );
  }
  if (s.offloads !== undefined) {
    if (!Array.isArray(s.offloads)) {
      throw new UserError(`Port ${s.name}: offloads must be a list such as ["csum", "tso4"]`);
    }
    for (const o of s.offloads) checkOffload(o);
  }
  if (s.type === "tap") {
    const ifname = s.ifname ?? s.name;
    if (typeof ifname !== "string" || ifname.length < 1 || ifname.length > 15) {
      throw new UserError(`Port ${s.name}: interface name must be 1-15 characters`);
    }
  } else {
    if (typeof s.path !== "string" || s.path === "") {
      throw new UserError(`Port ${s.name}: a vhost-user port needs a socket path`);
    }
    const dir = dirname(s.path);
    if (!exists(dir)) {
      throw new UserError(
        `Cannot use socket path ${s.path} for port ${s.name}: directory ${dir} does not exist (create it or pick another path)`,
      );
    }
  }
  for (const o of others) {
    if (o.name === s.name) {
      throw new UserError(
        `Port name ${s.name} is already in use: pick another name, or remove it first (vswitch port del ${s.name})`,
      );
    }
    if (o.type !== "tap" && s.type !== "tap" && o.path === s.path) {
      throw new UserError(
        `Socket path ${s.path} is already used by port ${o.name}: give port ${s.name} its own path`,
      );
    }
    if (o.type === "tap" && s.type === "tap" && specTarget(o) === specTarget(s)) {
      throw new UserError(
        `Interface ${
          specTarget(s)
        } is already used by port ${o.name}: give port ${s.name} its own interface`,
      );
    }
  }
}

function protocolNames(f: bigint): string[] {
  return Object.entries(ProtocolFeature).filter(([, b]) => (f & (1n << BigInt(b))) !== 0n).map((
    [n],
  ) => n);
}

/** The switch as the operator sees it. */
export class Controller {
  readonly #specs = new Map<string, { spec: PortSpec; origin: PortOrigin }>();
  readonly #broken = new Set<string>();
  #prev = new Map<string, { t: number; c: PortStats["counters"] }>();
  #rates = new Map<string, Rates>();
  readonly #timer: ReturnType<typeof setInterval>;
  readonly #unsubscribe: () => void;
  /** When the controller started (uptime). */
  readonly started = Date.now();

  constructor(readonly sw: Switch) {
    this.#unsubscribe = sw.subscribe((e: SwitchEvent) => {
      if (e.type === "broken") this.#broken.add(e.port);
      if (e.type === "connected" || e.type === "removed") this.#broken.delete(e.port);
    });
    this.#timer = setInterval(() => this.#sample(), 1000);
    Deno.unrefTimer(this.#timer);
  }

  /** Specs of every port, with their origin. */
  specs(): { spec: PortSpec; origin: PortOrigin }[] {
    return [...this.#specs.values()];
  }

  /** Adds a port after checking the spec; throws a UserError on a mistake. */
  async add(spec: PortSpec, origin: PortOrigin): Promise<PortInfo> {
    checkSpec(spec, [...this.#specs.values()].map((s) => s.spec));
    const s: PortSpec = { ...spec };
    if (s.offloads !== undefined) s.offloads = [...new Set(s.offloads)];
    const options: PortOptions = s.offloads === undefined
      ? {}
      : { offloads: s.offloads as OffloadName[] };
    try {
      if (s.type === "vhost-server") await this.sw.addVhostServer(s.name, s.path!, options);
      else if (s.type === "vhost-client") await this.sw.addVhostClient(s.name, s.path!, options);
      else await this.sw.addTap(s.name, s.ifname ?? s.name, options);
    } catch (e) {
      throw new UserError(`${describeError(e)}`, { cause: e });
    }
    this.#specs.set(s.name, { spec: s, origin });
    log.info`Port ${s.name} added (${s.type} ${specTarget(s)}, from ${origin})`;
    return this.info(s.name);
  }

  /** Removes a port; throws a UserError when there is none of that name. */
  async remove(name: string): Promise<void> {
    if (!this.sw.port(name)) throw this.#unknown(name);
    await this.sw.removePort(name);
    this.#specs.delete(name);
    this.#prev.delete(name);
    this.#rates.delete(name);
    log.info`Port ${name} removed`;
  }

  #unknown(name: string): UserError {
    const names = this.sw.ports().map((p) => p.name);
    return new UserError(
      `No port named ${name}: ${
        names.length ? `the ports are ${names.join(", ")}` : "the switch has no ports"
      } (see vswitch ports)`,
    );
  }

  /** Throws a UserError unless a port of that name exists. */
  need(name: string): void {
    if (!this.sw.port(name)) throw this.#unknown(name);
  }

  /** One port's info. */
  info(name: string): PortInfo {
    const p = this.sw.port(name);
    if (!p) throw this.#unknown(name);
    const stats = this.sw.stats().find((s) => s.name === name)!;
    const entry = this.#specs.get(name);
    const vhost = p instanceof VhostPort ? p : null;
    const broken = this.#broken.has(name);
    const state = broken
      ? "broken"
      : p.type === "tap"
      ? "up"
      : p.connected
      ? "connected"
      : p.type === "vhost-client"
      ? "connecting"
      : "listening";
    const info: PortInfo = {
      name,
      type: p.type,
      target: p.target,
      origin: entry?.origin ?? "api",
      state,
      connected: p.connected && !broken,
      mtu: p.mtu,
      offloads: stats.offloads,
      negotiated: stats.negotiated,
      features: vhost && p.connected ? featureNames(vhost.device.features) : [],
      protocolFeatures: vhost && p.connected ? protocolNames(vhost.device.protocolFeatures) : [],
      queues: vhost
        ? vhost.device.rings.map((r, i) => ({
          index: i,
          name: i % 2 === 0 ? "rx" : "tx",
          size: r.size,
          enabled: r.enabled,
          running: r.running,
        }))
        : [],
      counters: stats.counters,
      rates: this.#rates.get(name) ?? { rxPps: 0, txPps: 0, rxBitsPerSec: 0, txBitsPerSec: 0 },
      capture: this.sw.capture.running(p.id) ? this.sw.capture.statusOf(name)!.file : null,
    };
    if (vhost) info.connections = vhost.connections;
    return info;
  }

  /** Every port's info. */
  list(): PortInfo[] {
    return this.sw.ports().map((p) => this.info(p.name));
  }

  /** Whether the dataplane stopped this port after a fault (until it reconnects). */
  broken(name: string): boolean {
    return this.#broken.has(name);
  }

  #sample(): void {
    const now = performance.now();
    const next = new Map<string, { t: number; c: PortStats["counters"] }>();
    for (const s of this.sw.stats()) {
      const prev = this.#prev.get(s.name);
      if (prev) {
        const dt = (now - prev.t) / 1000;
        this.#rates.set(s.name, {
          rxPps: Math.round((s.counters.rxPackets - prev.c.rxPackets) / dt),
          txPps: Math.round((s.counters.txPackets - prev.c.txPackets) / dt),
          rxBitsPerSec: Math.round((s.counters.rxBytes - prev.c.rxBytes) * 8 / dt),
          txBitsPerSec: Math.round((s.counters.txBytes - prev.c.txBytes) * 8 / dt),
        });
      }
      next.set(s.name, { t: now, c: s.counters });
    }
    this.#prev = next;
  }

  /** Stops the sampler. */
  close(): void {
    clearInterval(this.#timer);
    this.#unsubscribe();
  }
}

/** An error and its causes in one line ("A: B: C"), without stacks. */
export function describeError(e: unknown): string {
  const parts: string[] = [];
  let cur: unknown = e;
  for (let i = 0; cur !== undefined && cur !== null && i < 5; i++) {
    const msg = cur instanceof Error ? cur.message : String(cur);
    if (!parts.some((p) => p.includes(msg))) parts.push(msg);
    cur = cur instanceof Error ? cur.cause : undefined;
  }
  return parts.join(": ");
}
