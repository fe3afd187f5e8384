/**
 * Ports as the control plane sees them: a vhost-user port (server or
 * client mode) and a host TAP port. Each registers itself with the
 * dataplane under a small numeric id; the dataplane does the forwarding.
 *
 * @module
 */

import type { Logger } from "@logtape/logtape";
import { acceptUnix, connectUnix, listenUnix } from "../../ffi/socket.ts";
import { closeFd, unlinkIfExists } from "../../ffi/io.ts";
import {
  getMtu,
  openTap,
  setLinkUp,
  setOffloadBest,
  setVnetHdrSize,
  type Tap,
} from "../../ffi/tun.ts";
import {
  TUN_F_CSUM,
  TUN_F_TSO4,
  TUN_F_TSO6,
  TUN_F_TSO_ECN,
  TUN_F_USO4,
  TUN_F_USO6,
} from "../../ffi/constants.ts";
import { logger } from "../log.ts";
import { Connection } from "../vhost_user/connection.ts";
import { type DeviceBackend, VhostUserDevice } from "../vhost_user/device.ts";
import type { MappedRegion } from "../types/memory.ts";
import type { Reactor } from "../vhost_user/reactor.ts";
import { ETH_OVERHEAD, NET_HDR_SIZE } from "../virtio/net_header.ts";
import { offeredFeatures, OFFLOAD_NAMES, type OffloadName } from "../virtio/features.ts";
import {
  OFFLOAD_CSUM,
  OFFLOAD_ECN,
  OFFLOAD_TSO4,
  OFFLOAD_TSO6,
  OFFLOAD_USO4,
  OFFLOAD_USO6,
} from "../net/offload.ts";
import type { LogPlace, QueueStart } from "../types/queue.ts";
import type { Dataplane } from "./dataplane.ts";
import { PortKind } from "./dp_port.ts";

/** Per-port options. */
export interface PortOptions {
  /**
   * Offloads the port may use, both directions: "csum", "tso4", "tso6",
   * "ecn", "uso" (default: all; [] = none). Frames a port cannot take are
   * completed or segmented in software for it.
   */
  offloads?: OffloadName[];
}

/** Checks offload names (control path): throws with the list of valid ones. */
export function checkOffloads(names: readonly string[]): OffloadName[] {
  for (const n of names) {
    if (!(OFFLOAD_NAMES as readonly string[]).includes(n)) {
      throw new Error(`Cannot use offload ${n}: expected one of ${OFFLOAD_NAMES.join(", ")}`);
    }
  }
  return names as OffloadName[];
}

/** The default guest MTU until NET_SET_MTU says otherwise (jumbo frames pass). */
export const DEFAULT_VHOST_MTU = 9000;

/** What every port shares. */
export abstract class Port {
  /** "vhost-server", "vhost-client" or "tap". */
  abstract readonly type: string;
  /** Socket path or interface name. */
  abstract readonly target: string;

  /** @internal Ports are made by `Switch`. */
  constructor(
    /** Dataplane id (counter slot). */
    readonly id: number,
    /** User-given name. */
    readonly name: string,
    protected readonly dataplane: Dataplane,
  ) {}

  /** Whether a frontend is connected (always true for a TAP). */
  abstract get connected(): boolean;
  /** The MTU frames to this port are bounded by. */
  mtu = DEFAULT_VHOST_MTU;
  /** Set by `Switch`: told when a frontend connects or disconnects (with the reason). */
  events: ((type: "connected" | "disconnected", reason?: string) => void) | null = null;
  /** Releases everything the port holds. */
  abstract close(): Promise<void>;
}

/** Backoff for client mode reconnects. */
const RECONNECT_MIN_MS = 100;
const RECONNECT_MAX_MS = 2000;

/** A vhost-user port: we are the backend for one frontend (QEMU, testpmd). */
export class VhostPort extends Port implements DeviceBackend {
  /** "vhost-server" or "vhost-client". */
  readonly type: string;
  /** The protocol state of the current frontend. */
  readonly device: VhostUserDevice;
  /** This port's logger (category vswitch.vhost.NAME). */
  readonly log: Logger;
  #conn: Connection | null = null;
  #listenFd = -1;
  #closing = false;
  #retryMs = RECONNECT_MIN_MS;
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** Connections accepted or made so far. */
  connections = 0;

  /** @internal Made by `Switch.addVhostServer` / `addVhostClient`. */
  constructor(
    id: number,
    name: string,
    dataplane: Dataplane,
    /** The vhost-user socket path. */
    readonly path: string,
    /** True in client mode (we connect to QEMU). */
    readonly client: boolean,
    /** The control plane's fd loop. */
    readonly reactor: Reactor,
    /** Offload options. */
    readonly options: PortOptions = {},
  ) {
    super(id, name, dataplane);
    this.type = client ? "vhost-client" : "vhost-server";
    this.log = logger("vhost", name);
    this.offloads = checkOffloads(options.offloads ?? OFFLOAD_NAMES);
    this.device = new VhostUserDevice(this, this.log, offeredFeatures(this.offloads));
  }

  /** The offloads this port offers its frontend. */
  readonly offloads: OffloadName[];

  /** The socket path. */
  get target(): string {
    return this.path;
  }

  /** Whether a frontend is connected now. */
  get connected(): boolean {
    return this.#conn !== null;
  }

  /** The live connection, if any (tests). */
  get connection(): Connection | null {
    return this.#conn;
  }

  /** Registers with the dataplane and starts listening / connecting. */
  async open(): Promise<void> {
    await this.dataplane.request({
      op: "addPort",
      id: this.id,
      kind: PortKind.VHOST,
      name: this.name,
      maxFrame: DEFAULT_VHOST_MTU + ETH_OVERHEAD,
      fd: -1,
      ingressCaps: 0, // set from the negotiated features when a queue starts
      egressCaps: 0,
    });
    if (this.client) {
      this.#tryConnect();
      return;
    }
    // A stale socket file from an earlier run would make bind fail.
    unlinkIfExists(this.path);
    this.#listenFd = listenUnix(this.path);
    this.reactor.watch(this.#listenFd, () => this.#accept());
    this.log.info`Listening on ${this.path}`;
  }

  #accept(): void {
    for (;;) {
      const fd = acceptUnix(this.#listenFd);
      if (fd < 0) return;
      if (this.#conn !== null || this.#closing) {
        this.log.warn`Refused a second connection on ${this.path}: one frontend per port`;
        closeFd(fd);
        continue;
      }
      this.#attach(fd);
    }
  }

  #attach(fd: number): void {
    this.connections++;
    this.log.info`Frontend connected (connection ${this.connections})`;
    const conn = new Connection(fd, this.device, this.reactor, this.log);
    this.#conn = conn;
    this.events?.("connected");
    conn.closed.then((reason) => {
      if (this.#conn === conn) this.#conn = null;
      this.events?.("disconnected", reason);
      if (this.client && !this.#closing) this.#schedule();
    });
  }

  #tryConnect(): void {
    this.#timer = undefined;
    if (this.#closing) return;
    let fd: number;
    try {
      fd = connectUnix(this.path);
    } catch (e) {
      this.log.debug`Cannot connect to ${this.path} yet: ${(e as Error).message}`;
      this.#schedule();
      return;
    }
    this.#retryMs = RECONNECT_MIN_MS;
    this.#attach(fd);
  }

  #schedule(): void {
    if (this.#closing || this.#timer !== undefined) return;
    this.#timer = setTimeout(() => this.#tryConnect(), this.#retryMs);
    this.#retryMs = Math.min(this.#retryMs * 2, RECONNECT_MAX_MS);
  }

  /** Drops the current frontend connection (it may connect again). */
  async disconnect(reason = "disconnected by the switch"): Promise<void> {
    await this.#conn?.close(reason);
  }

  /** Stops listening or reconnecting, drops the frontend, removes the socket file. */
  async close(): Promise<void> {
    this.#closing = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    await this.#conn?.close("port removed");
    if (this.#listenFd >= 0) {
      this.reactor.unwatch(this.#listenFd);
      closeFd(this.#listenFd);
      this.#listenFd = -1;
      unlinkIfExists(this.path);
    }
    await this.dataplane.request({ op: "removePort", id: this.id });
  }

  /** DeviceBackend: hands the guest's memory to the dataplane (null: takes it back). */
  async setMemory(regions: MappedRegion[] | null): Promise<void> {
    await this.dataplane.request({ op: "setMemory", id: this.id, regions });
  }

  /** DeviceBackend: starts polling a ring. */
  async startQueue(start: QueueStart): Promise<void> {
    await this.dataplane.request({ op: "startQueue", id: this.id, start });
  }

  /** DeviceBackend: stops a ring; resolves to its next avail index. */
  async stopQueue(q: number): Promise<number> {
    return await this.dataplane.request({ op: "stopQueue", id: this.id, q });
  }

  /** DeviceBackend: replaces a running ring's call fd. */
  async setCall(q: number, fd: number): Promise<void> {
    await this.dataplane.request({ op: "setCall", id: this.id, q, fd });
  }

  /** DeviceBackend: logs dirty pages into `log` (null: stops), acknowledged between rounds. */
  async setLog(log: LogPlace | null): Promise<void> {
    await this.dataplane.request({ op: "setLog", id: this.id, log });
  }

  /** DeviceBackend: a frame through ingress as if the guest sent it (SEND_RARP). */
  async inject(frame: Uint8Array): Promise<void> {
    await this.dataplane.request({ op: "inject", id: this.id, frame });
  }

  /** DeviceBackend: the guest's MTU bounds the frames sent to it. */
  async setMtu(mtu: number): Promise<void> {
    this.log.info`Guest MTU ${mtu}`;
    this.mtu = mtu;
    await this.dataplane.request({ op: "setMaxFrame", id: this.id, maxFrame: mtu + ETH_OVERHEAD });
  }
}

/** TUN_F_* flags and OFFLOAD_* bits for each offload name. */
const TAP_OFFLOADS: Record<OffloadName, { tun: number; caps: number }> = {
  csum: { tun: TUN_F_CSUM, caps: OFFLOAD_CSUM },
  tso4: { tun: TUN_F_TSO4, caps: OFFLOAD_TSO4 },
  tso6: { tun: TUN_F_TSO6, caps: OFFLOAD_TSO6 },
  ecn: { tun: TUN_F_TSO_ECN, caps: OFFLOAD_ECN },
  uso: { tun: TUN_F_USO4 | TUN_F_USO6, caps: OFFLOAD_USO4 | OFFLOAD_USO6 },
};

/** OFFLOAD_* bits for TUN_F_* flags. */
function tunCaps(tun: number): number {
  let caps = 0;
  if ((tun & TUN_F_CSUM) === 0) return 0; // every other TUN_F_* needs CSUM
  for (const o of OFFLOAD_NAMES) {
    if ((tun & TAP_OFFLOADS[o].tun) === TAP_OFFLOADS[o].tun) caps |= TAP_OFFLOADS[o].caps;
  }
  return caps;
}

/** A host TAP: frames to and from the host's network stack. */
export class TapPort extends Port {
  /** Always "tap". */
  readonly type = "tap";
  #tap: Tap | null = null;
  /** The offloads this port uses (both directions). */
  readonly offloads: OffloadName[];
  /** The TUN_F_* flags the kernel took (TUNSETOFFLOAD). */
  tunFlags = 0;

  /** @internal Made by `Switch.addTap`. */
  constructor(
    id: number,
    name: string,
    dataplane: Dataplane,
    /** The interface name. */
    readonly ifname: string,
    /** Offload options. */
    readonly options: PortOptions = {},
  ) {
    super(id, name, dataplane);
    this.offloads = checkOffloads(options.offloads ?? OFFLOAD_NAMES);
  }

  /** The interface name. */
  get target(): string {
    return this.ifname;
  }

  /** True while the TAP is open. */
  get connected(): boolean {
    return this.#tap !== null;
  }

  /**
   * Opens (creating if missing) the TAP with virtio-net headers of 12 bytes,
   * sets its offloads, brings its link up and registers it.
   *
   * TUNSETOFFLOAD says what the kernel may hand us (checksum-partial and
   * GSO frames); it is set from what the switch can deliver, which is
   * everything (a guest that cannot take a frame gets it completed or
   * segmented in software), less what the user switched off. The kernel
   * takes offloaded frames from us whatever the flags; we hand it only
   * those the port's options allow and that passed validation (CHECKLIST 39).
   */
  async open(): Promise<void> {
    const tap = openTap(this.ifname, { vnetHdr: true });
    try {
      setVnetHdrSize(tap.fd, NET_HDR_SIZE);
      let want = 0;
      if (this.offloads.includes("csum")) {
        for (const o of this.offloads) want |= TAP_OFFLOADS[o].tun;
      }
      this.tunFlags = setOffloadBest(tap.fd, want);
      setLinkUp(tap.name);
      const mtu = getMtu(tap.name);
      this.mtu = mtu;
      const caps = tunCaps(this.tunFlags);
      await this.dataplane.request({
        op: "addPort",
        id: this.id,
        kind: PortKind.TAP,
        name: this.name,
        maxFrame: Math.max(mtu, DEFAULT_VHOST_MTU) + ETH_OVERHEAD,
        fd: tap.fd,
        ingressCaps: caps,
        // What we hand the kernel: the same set (tun accepts every GSO type from us).
        egressCaps: caps,
      });
    } catch (e) {
      closeFd(tap.fd);
      throw new Error(`Cannot set up TAP ${this.ifname}`, { cause: e });
    }
    this.#tap = tap;
    logger("tap", this.name).info`TAP ${tap.name} up`;
  }

  /** Unregisters and closes the TAP (a TAP we created disappears). */
  async close(): Promise<void> {
    if (!this.#tap) return;
    await this.dataplane.request({ op: "removePort", id: this.id });
    // Closing the last fd deletes a TAP we created; a persistent one stays.
    closeFd(this.#tap.fd);
    this.#tap = null;
  }
}
