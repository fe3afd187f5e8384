/**
 * The switch: a dataplane worker, a control-plane reactor for vhost-user
 * sockets, and a registry of named ports. This is the library API that
 * `mod.ts` exports and the CLI drives.
 *
 * @module
 */

import { logger } from "../log.ts";
import { Reactor } from "../vhost_user/reactor.ts";
import { Dataplane } from "./dataplane.ts";
import { missingV8Flags, v8FlagsArg } from "./v8_flags.ts";
import { type CounterName, MAX_PORTS, readCounters } from "./counters.ts";
import type { FdbEntry } from "./fdb.ts";
export type { FdbEntry };
import { CaptureManager } from "./capture.ts";
import { type Port, type PortOptions, TapPort, VhostPort } from "./ports.ts";
import { featureNames } from "../virtio/features.ts";
import type { WindowInfo } from "../virtio/address_window.ts";

/** One line for the log: "chunked, 12 chunks, 66 pair windows" and why pairs are missing. */
export function describeWindow(w: WindowInfo): string {
  const files = w.fromFile > 0 ? `, ${w.fromFile} mappings from hugetlbfs files` : "";
  const shape = w.mode === "chunked"
    ? `chunked, ${w.chunks} chunks, ${w.pairs} pair windows${files}`
    : w.mode === "packed"
    ? `packed, ${w.chunks} ranges in one window${files}`
    : w.mode;
  return w.reason ? `${shape} (${w.reason})` : shape;
}
export type { PortOptions };

const log = logger("switch");

/** Options for `Switch.create`. */
export interface SwitchOptions {
  /** Seconds an FDB entry lives without traffic (default 300). */
  fdbAgingSeconds?: number;
}

/** A port and its counters. */
export interface PortStats {
  /** The port's name. */
  name: string;
  /** "vhost-server", "vhost-client" or "tap". */
  type: string;
  /** Socket path or interface name. */
  target: string;
  /** Whether a frontend is connected (a TAP always is). */
  connected: boolean;
  /** The offloads the port's options allow ("csum", "tso4", …). */
  offloads: string[];
  /**
   * What the port negotiated: a guest's virtio features (VIRTIO 1.2 §5.1.3
   * names, e.g. "CSUM", "GUEST_TSO4"; empty before SET_FEATURES), a TAP's
   * TUNSETOFFLOAD flags ("TUN_F_CSUM", …).
   */
  negotiated: string[];
  /** The counters (see COUNTER_NAMES). */
  counters: Record<CounterName, number>;
}

/** An FDB entry with the port's name. */
export interface FdbRow extends FdbEntry {
  /** The name of the port the MAC was learned on. */
  portName: string;
}

/** Something that happened to a port (the control API streams these). */
export interface SwitchEvent {
  /** ISO 8601 time. */
  time: string;
  /** "added", "removed", "connected", "disconnected" or "broken". */
  type: "added" | "removed" | "connected" | "disconnected" | "broken";
  /** The port's name. */
  port: string;
  /** "vhost-server", "vhost-client" or "tap". */
  portType: string;
  /** Why (disconnected, broken). */
  reason?: string;
}

const TUN_FLAG_NAMES: [number, string][] = [
  [0x01, "TUN_F_CSUM"],
  [0x02, "TUN_F_TSO4"],
  [0x04, "TUN_F_TSO6"],
  [0x08, "TUN_F_TSO_ECN"],
  [0x20, "TUN_F_USO4"],
  [0x40, "TUN_F_USO6"],
];

function tunFlagNames(flags: number): string[] {
  return TUN_FLAG_NAMES.filter(([bit]) => (flags & bit) !== 0).map(([, n]) => n);
}

/** A running switch. */
export class Switch {
  readonly #ports = new Map<string, Port>();
  readonly #dataplane: Dataplane;
  readonly #reactor = new Reactor();
  readonly #listeners = new Set<(e: SwitchEvent) => void>();
  #closed = false;
  /** Packet capture per port (pcapng files). */
  readonly capture: CaptureManager;
  /** Called if the dataplane worker dies: the switch no longer forwards. */
  onFatal: (err: Error) => void = () => {};

  private constructor(dataplane: Dataplane) {
    dataplane.onFatal = (err) => this.onFatal(err);
    this.#dataplane = dataplane;
    this.capture = new CaptureManager(dataplane.capture);
    dataplane.onWindow = (w) => {
      // Copies outside every window take a word loop: slower, never wrong (README "Guest memory size").
      if (w.mode === "fallback" || w.reason !== "") {
        log.warn`Copy windows: ${
          describeWindow(w)
        }; copies they do not cover take the slower word loop`;
      } else log.debug`Copy windows: ${describeWindow(w)}`;
    };
    dataplane.onBroken = (id, reason) => {
      const port = [...this.#ports.values()].find((p) => p.id === id);
      const name = port?.name ?? `#${id}`;
      log.error`Port ${name} stopped after a fault: ${reason}`;
      if (port) this.#emit("broken", port, reason);
      // A vhost port's frontend loses its connection; it may reconnect and start clean.
      if (port instanceof VhostPort) {
        port.disconnect(`dataplane fault: ${reason}`).catch((e) =>
          log.error`Cannot disconnect port ${name}: ${e}`
        );
      }
    };
  }

  /** Starts the dataplane worker. */
  static async create(options: SwitchOptions = {}): Promise<Switch> {
    const aging = (options.fdbAgingSeconds ?? 300) * 1000;
    const missing = missingV8Flags().join(" ");
    if (missing !== "") {
      // Not an error: it forwards the same frames, with more CPU per frame (v8_flags.ts).
      log.warn(
        "Started without the V8 flags the dataplane is tuned for ({missing}); frames cost more " +
          "CPU. Run it through a deno.json task, or add {option}",
        { missing, option: v8FlagsArg() },
      );
    }
    return new Switch(await Dataplane.start(aging));
  }

  #nextId(name: string): number {
    if (this.#closed) throw new Error(`Cannot add port ${name}: switch closed`);
    if (this.#ports.has(name)) throw new Error(`Cannot add port ${name}: name in use`);
    const used = new Set([...this.#ports.values()].map((p) => p.id));
    for (let id = 0; id < MAX_PORTS; id++) if (!used.has(id)) return id;
    throw new Error(`Cannot add port ${name}: ${MAX_PORTS} ports already`);
  }

  /** Calls `listener` for every port event until the returned function is called. */
  subscribe(listener: (e: SwitchEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #emit(type: SwitchEvent["type"], port: Port, reason?: string): void {
    const e: SwitchEvent = {
      time: new Date().toISOString(),
      type,
      port: port.name,
      portType: port.type,
    };
    if (reason !== undefined) e.reason = reason;
    for (const l of this.#listeners) {
      try {
        l(e);
      } catch (err) {
        log.error`Event listener failed: ${err}`;
      }
    }
  }

  // Port events reach the listeners; "added" once the port is open.
  #wire(port: Port): void {
    port.events = (type, reason) => this.#emit(type, port, reason);
  }

  /** Adds a vhost-user port in server mode: creates `path` and waits for a frontend. */
  async addVhostServer(name: string, path: string, options: PortOptions = {}): Promise<VhostPort> {
    const port = new VhostPort(
      this.#nextId(name),
      name,
      this.#dataplane,
      path,
      false,
      this.#reactor,
      options,
    );
    this.#ports.set(name, port);
    this.#wire(port);
    try {
      await port.open();
    } catch (e) {
      this.#ports.delete(name);
      await port.close().catch(() => {});
      throw new Error(`Cannot add vhost-user port ${name} on ${path}`, { cause: e });
    }
    this.#emit("added", port);
    return port;
  }

  /** Adds a vhost-user port in client mode: connects to `path`, reconnecting when it goes away. */
  async addVhostClient(name: string, path: string, options: PortOptions = {}): Promise<VhostPort> {
    const port = new VhostPort(
      this.#nextId(name),
      name,
      this.#dataplane,
      path,
      true,
      this.#reactor,
      options,
    );
    this.#ports.set(name, port);
    this.#wire(port);
    await port.open();
    this.#emit("added", port);
    return port;
  }

  /** Adds a host TAP port (created if missing, link set up). */
  async addTap(name: string, ifname = name, options: PortOptions = {}): Promise<TapPort> {
    const port = new TapPort(this.#nextId(name), name, this.#dataplane, ifname, options);
    this.#ports.set(name, port);
    this.#wire(port);
    try {
      await port.open();
    } catch (e) {
      this.#ports.delete(name);
      throw e;
    }
    this.#emit("added", port);
    return port;
  }

  /** Removes a port, releasing its socket, memory, fds or TAP. */
  async removePort(name: string): Promise<void> {
    const port = this.#ports.get(name);
    if (!port) throw new Error(`Cannot remove port ${name}: no such port`);
    this.#ports.delete(name);
    this.capture.stop(port.id);
    await port.close();
    port.events = null;
    this.#emit("removed", port);
  }

  /** Every port, in the order they were added. */
  ports(): Port[] {
    return [...this.#ports.values()];
  }

  /** Forgets the MACs learned on port `name`, or every MAC; resolves to how many. */
  async flushFdb(name?: string): Promise<number> {
    let id = -1;
    if (name !== undefined) {
      const port = this.#ports.get(name);
      if (!port) throw new Error(`Cannot flush the FDB of port ${name}: no such port`);
      id = port.id;
    }
    return await this.#dataplane.request({ op: "fdbFlush", id });
  }

  /** A port by name. */
  port(name: string): Port | undefined {
    return this.#ports.get(name);
  }

  /** Every port with its counters. */
  stats(): PortStats[] {
    return [...this.#ports.values()].map((p) => ({
      name: p.name,
      type: p.type,
      target: p.target,
      connected: p.connected,
      offloads: p instanceof VhostPort || p instanceof TapPort ? [...p.offloads] : [],
      negotiated: p instanceof VhostPort
        ? featureNames(p.device.features)
        : p instanceof TapPort
        ? tunFlagNames(p.tunFlags)
        : [],
      counters: readCounters(this.#dataplane.counters, p.id),
    }));
  }

  /** The learned MAC addresses. */
  async fdb(): Promise<FdbRow[]> {
    const entries = await this.#dataplane.request({ op: "fdb" });
    const names = new Map([...this.#ports.values()].map((p) => [p.id, p.name]));
    return entries.map((e) => ({ ...e, portName: names.get(e.port) ?? `#${e.port}` }));
  }

  /** Changes the FDB aging time. */
  async setFdbAging(seconds: number): Promise<void> {
    await this.#dataplane.request({ op: "setAging", ms: seconds * 1000 });
  }

  /** The dataplane's copy windows (address_window.ts), as its worker last reported them. */
  get copyWindow(): WindowInfo {
    return this.#dataplane.window;
  }

  /** Dataplane rounds so far (liveness). */
  get rounds(): number {
    return this.#dataplane.rounds;
  }

  /** Stops everything: ports (sockets removed, memory unmapped, TAPs released), worker, reactor. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.capture.close();
    for (const port of [...this.#ports.values()].reverse()) {
      await port.close().catch((e) => log.error`Cannot close port ${port.name}: ${e}`);
    }
    this.#ports.clear();
    await this.#dataplane.stop();
    await this.#reactor.close();
  }

  /** `await using sw = await Switch.create()`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
