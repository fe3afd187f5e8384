/**
 * One vhost-user backend device: the state a frontend builds with its
 * messages (features, memory table, per-vring state), the replies, and
 * when a ring is handed to (or taken back from) the dataplane.
 *
 * Rules from vhost-user.rst ("Starting and stopping rings", "Ring states"):
 * a ring starts when it gets a kick fd (SET_VRING_KICK) and stops at
 * GET_VRING_BASE; with VHOST_USER_F_PROTOCOL_FEATURES negotiated it also
 * needs SET_VRING_ENABLE 1, otherwise it starts enabled. We hand a ring to
 * the dataplane only when it is started, enabled, has a size and addresses
 * that translate into mapped memory with the right alignment.
 *
 * A malformed message throws ProtocolError: the connection closes, and
 * only this device's port is affected.
 *
 * @module
 */

import type { Logger } from "@logtape/logtape";
import { closeAll } from "../../ffi/io.ts";
import { getU64, setU64 } from "../../ffi/structs.ts";
import {
  has,
  OFFERED_FEATURES,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
} from "../virtio/features.ts";
import { netHeaderSize } from "../virtio/net_header.ts";
import { ringPartSizes } from "../virtio/split_ring.ts";
import type { QueueStart } from "../switch/dataplane_api.ts";
import { type MappedRegion, MemoryTable, parseMemoryTable } from "./memory_table.ts";
import {
  FLAG_NEED_REPLY,
  FLAG_REPLY,
  MAX_RING_SIZE,
  OFFERED_PROTOCOL_FEATURES,
  ProtocolFeature,
  QUEUE_PAIRS,
  Request,
  requestName,
  U64_SIZE,
  VERSION,
  VERSION_MASK,
  VHOST_VRING_F_LOG,
  VRING_ADDR,
  VRING_ADDR_SIZE,
  VRING_NOFD_MASK,
  VRING_STATE_SIZE,
} from "./protocol.ts";

/** A frontend broke the protocol: close its connection. */
export class ProtocolError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ProtocolError";
  }
}

/** One decoded message. The device takes the fds it keeps out of `fds`. */
export interface Message {
  request: number;
  flags: number;
  payload: Uint8Array;
  fds: number[];
}

/** What the device needs from the dataplane. */
export interface DeviceBackend {
  /** Give the dataplane the guest's memory (null: take it away). */
  setMemory(regions: MappedRegion[] | null): Promise<void>;
  /** Start polling a ring. */
  startQueue(start: QueueStart): Promise<void>;
  /** Stop a ring; resolves to its next avail index. */
  stopQueue(q: number): Promise<number>;
  /** Replace a running ring's call fd. */
  setCall(q: number, fd: number): Promise<void>;
  /** The guest's MTU (NET_SET_MTU). */
  setMtu(mtu: number): Promise<void>;
}

/** The rings of one queue pair: 0 = RX, 1 = TX. */
export const NUM_RINGS = 2 * QUEUE_PAIRS;

interface Vring {
  size: number;
  desc: number;
  used: number;
  avail: number;
  hasAddr: boolean;
  base: number;
  kickFd: number;
  callFd: number;
  errFd: number;
  enabled: boolean;
  started: boolean;
  running: boolean;
}

function freshVring(): Vring {
  return {
    size: 0,
    desc: 0,
    used: 0,
    avail: 0,
    hasAddr: false,
    base: 0,
    kickFd: -1,
    callFd: -1,
    errFd: -1,
    enabled: false,
    started: false,
    running: false,
  };
}

/** What `handle` returns: a reply payload, or success/failure for REPLY_ACK. */
export type Outcome = Uint8Array | boolean;

function u64Payload(n: bigint): Uint8Array {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, n, true);
  return out;
}

/** The state of one vhost-user device (one port's frontend connection). */
export class VhostUserDevice {
  /** Negotiated virtio features. */
  features = 0n;
  /** Negotiated protocol features. */
  protocolFeatures = 0n;
  #featuresSet = false;
  #mem: MemoryTable | null = null;
  #vrings: Vring[] = Array.from({ length: NUM_RINGS }, freshVring);

  /**
   * @param backend the dataplane side of this port
   * @param log the port's logger
   * @param offered the virtio features this port offers (its offload options)
   */
  constructor(
    readonly backend: DeviceBackend,
    readonly log: Logger,
    readonly offered: bigint = OFFERED_FEATURES,
  ) {}

  /** True if REPLY_ACK was negotiated and this message asks for an ack. */
  wantsAck(msg: Message): boolean {
    return (msg.flags & FLAG_NEED_REPLY) !== 0 &&
      (this.protocolFeatures & (1n << BigInt(ProtocolFeature.REPLY_ACK))) !== 0n;
  }

  /** The ring states, for tests and stats. */
  get rings(): readonly Readonly<Vring>[] {
    return this.#vrings;
  }

  /**
   * Handles one message. Returns the reply payload for requests that have
   * one, else whether it succeeded (for REPLY_ACK). Throws ProtocolError for
   * malformed input; fds left in `msg.fds` are the caller's to close.
   */
  async handle(msg: Message): Promise<Outcome> {
    if ((msg.flags & VERSION_MASK) !== VERSION) {
      throw new ProtocolError(
        `Cannot accept ${requestName(msg.request)}: version ${msg.flags & VERSION_MASK}`,
      );
    }
    if (msg.flags & FLAG_REPLY) {
      throw new ProtocolError(
        `Cannot accept ${requestName(msg.request)}: reply flag set on a request`,
      );
    }
    const takesFds = msg.request === Request.SET_MEM_TABLE ||
      msg.request === Request.SET_VRING_KICK ||
      msg.request === Request.SET_VRING_CALL || msg.request === Request.SET_VRING_ERR;
    if (!takesFds && msg.fds.length > 0) {
      throw new ProtocolError(
        `Cannot accept ${requestName(msg.request)}: ${msg.fds.length} unexpected fds`,
      );
    }
    const p = msg.payload;
    const view = new DataView(p.buffer, p.byteOffset, p.byteLength);
    switch (msg.request) {
      case Request.GET_FEATURES:
        this.#size(msg, 0);
        return u64Payload(this.offered);
      case Request.SET_FEATURES: {
        this.#size(msg, U64_SIZE);
        const f = view.getBigUint64(0, true);
        if (f & ~this.offered) {
          throw new ProtocolError(`Cannot set features 0x${f.toString(16)}: not offered`);
        }
        this.features = f;
        this.#featuresSet = true;
        return true;
      }
      case Request.SET_OWNER:
        this.#size(msg, 0);
        return true;
      case Request.RESET_OWNER:
        this.#size(msg, 0);
        await this.reset();
        return true;
      case Request.GET_PROTOCOL_FEATURES:
        this.#size(msg, 0);
        return u64Payload(OFFERED_PROTOCOL_FEATURES);
      case Request.SET_PROTOCOL_FEATURES: {
        this.#size(msg, U64_SIZE);
        const f = view.getBigUint64(0, true);
        if (f & ~OFFERED_PROTOCOL_FEATURES) {
          throw new ProtocolError(`Cannot set protocol features 0x${f.toString(16)}: not offered`);
        }
        this.protocolFeatures = f;
        return true;
      }
      case Request.GET_QUEUE_NUM:
        this.#size(msg, 0);
        return u64Payload(BigInt(QUEUE_PAIRS));
      case Request.SET_MEM_TABLE:
        await this.#setMemTable(msg);
        return true;
      case Request.SET_VRING_NUM:
        return await this.#setVringNum(msg, view);
      case Request.SET_VRING_ADDR:
        return await this.#setVringAddr(msg, view);
      case Request.SET_VRING_BASE: {
        const [v, num] = this.#state(msg, view);
        if (v.running) throw new ProtocolError(`Cannot set base of running ring`);
        if (num > 0xffff) {
          this.log.warn`Cannot set ring base ${num}: above 65535 for a split ring`;
          return false;
        }
        v.base = num;
        return true;
      }
      case Request.GET_VRING_BASE: {
        const [v] = this.#state(msg, view);
        const index = view.getUint32(0, true);
        if (v.running) v.base = await this.backend.stopQueue(index);
        v.running = false;
        v.started = false;
        closeAll([v.kickFd]);
        v.kickFd = -1;
        const out = new Uint8Array(VRING_STATE_SIZE);
        const ov = new DataView(out.buffer);
        ov.setUint32(0, index, true);
        ov.setUint32(4, v.base, true);
        return out;
      }
      case Request.SET_VRING_KICK:
      case Request.SET_VRING_CALL:
      case Request.SET_VRING_ERR:
        return await this.#setVringFd(msg, view);
      case Request.SET_VRING_ENABLE: {
        const [v, num, index] = this.#state(msg, view);
        if (num > 1) throw new ProtocolError(`Cannot enable ring ${index} with ${num}`);
        v.enabled = num === 1;
        if (!v.enabled && v.running) {
          v.base = await this.backend.stopQueue(index);
          v.running = false;
        }
        await this.#maybeStart(index);
        return true;
      }
      case Request.NET_SET_MTU: {
        this.#size(msg, U64_SIZE);
        if (!this.#hasProtocol(ProtocolFeature.NET_MTU)) {
          throw new ProtocolError(`Cannot accept NET_SET_MTU: NET_MTU not negotiated`);
        }
        const mtu = getU64(view, 0);
        if (mtu < 68 || mtu > 65535) {
          this.log.warn`Cannot set MTU ${mtu}: outside 68..65535`;
          return false;
        }
        await this.backend.setMtu(mtu);
        return true;
      }
      case Request.SET_LOG_BASE:
      case Request.SET_LOG_FD:
        throw new ProtocolError(
          `Cannot accept ${requestName(msg.request)}: LOG_SHMFD not negotiated`,
        );
      default:
        if (msg.request > 0 && msg.request <= 45) {
          // A request the spec defines but whose feature we never offered.
          this.log.warn`Unsupported request ${requestName(msg.request)} (${msg.request}): refused`;
          return false;
        }
        throw new ProtocolError(`Cannot accept request ${msg.request}: unknown`);
    }
  }

  #size(msg: Message, size: number): void {
    if (msg.payload.length !== size) {
      throw new ProtocolError(
        `Cannot accept ${
          requestName(msg.request)
        }: payload of ${msg.payload.length} bytes, expected ${size}`,
      );
    }
  }

  #hasProtocol(bitNo: number): boolean {
    return (this.protocolFeatures & (1n << BigInt(bitNo))) !== 0n;
  }

  // vhost_vring_state: the index is a full u32, checked before any use (item 10).
  #state(msg: Message, view: DataView): [Vring, number, number] {
    this.#size(msg, VRING_STATE_SIZE);
    const index = view.getUint32(0, true);
    if (index >= NUM_RINGS) {
      throw new ProtocolError(
        `Cannot accept ${requestName(msg.request)}: ring ${index} of ${NUM_RINGS}`,
      );
    }
    return [this.#vrings[index], view.getUint32(4, true), index];
  }

  async #setVringNum(msg: Message, view: DataView): Promise<boolean> {
    const [v, num, index] = this.#state(msg, view);
    if (v.running) throw new ProtocolError(`Cannot resize running ring ${index}`);
    // Item 11: 0, not a power of two, or above 32768 leaves the ring unusable.
    if (num === 0 || (num & (num - 1)) !== 0 || num > MAX_RING_SIZE) {
      this.log
        .warn`Cannot use ring ${index} size ${num}: must be a power of two in 1..${MAX_RING_SIZE}`;
      v.size = 0;
      return false;
    }
    v.size = num;
    await this.#maybeStart(index);
    return true;
  }

  async #setVringAddr(msg: Message, view: DataView): Promise<boolean> {
    this.#size(msg, VRING_ADDR_SIZE);
    const index = view.getUint32(VRING_ADDR.index, true);
    if (index >= NUM_RINGS) throw new ProtocolError(`Cannot set address of ring ${index}`);
    if (view.getUint32(VRING_ADDR.flags, true) & VHOST_VRING_F_LOG) {
      throw new ProtocolError(`Cannot log ring ${index}: logging not negotiated`);
    }
    const desc = getU64(view, VRING_ADDR.desc);
    const used = getU64(view, VRING_ADDR.used);
    const avail = getU64(view, VRING_ADDR.avail);
    if (desc < 0 || used < 0 || avail < 0) {
      throw new ProtocolError(`Cannot set address of ring ${index}: beyond 2^53`);
    }
    const v = this.#vrings[index];
    if (v.running) {
      v.base = await this.backend.stopQueue(index);
      v.running = false;
    }
    Object.assign(v, { desc, used, avail, hasAddr: true });
    await this.#maybeStart(index);
    return true;
  }

  async #setVringFd(msg: Message, view: DataView): Promise<boolean> {
    this.#size(msg, U64_SIZE);
    const lo = view.getUint32(0, true);
    const hi = view.getUint32(4, true);
    // Only bits 0–8 are defined; anything above is a malformed index (item 10).
    if (hi !== 0 || (lo & ~0x1ff) !== 0) {
      throw new ProtocolError(
        `Cannot accept ${requestName(msg.request)}: payload 0x${hi.toString(16)}${lo.toString(16)}`,
      );
    }
    const index = lo & 0xff;
    if (index >= NUM_RINGS) {
      throw new ProtocolError(`Cannot accept ${requestName(msg.request)} for ring ${index}`);
    }
    const noFd = (lo & VRING_NOFD_MASK) !== 0;
    if (noFd !== (msg.fds.length === 0) || msg.fds.length > 1) {
      throw new ProtocolError(
        `Cannot accept ${requestName(msg.request)}: no-fd bit ${
          noFd ? "set" : "clear"
        } with ${msg.fds.length} fds`,
      );
    }
    const fd = noFd ? -1 : msg.fds.pop()!;
    const v = this.#vrings[index];
    if (msg.request === Request.SET_VRING_KICK) {
      const old = v.kickFd;
      if (v.running) {
        v.base = await this.backend.stopQueue(index);
        v.running = false;
      }
      v.kickFd = fd;
      closeAll([old]);
      v.started = true;
      await this.#maybeStart(index);
    } else if (msg.request === Request.SET_VRING_CALL) {
      const old = v.callFd;
      v.callFd = fd;
      if (v.running) await this.backend.setCall(index, fd);
      closeAll([old]); // only after the dataplane stopped using it
    } else {
      closeAll([v.errFd]);
      v.errFd = fd;
    }
    return true;
  }

  async #setMemTable(msg: Message): Promise<void> {
    let regions;
    try {
      regions = parseMemoryTable(msg.payload, msg.fds.length);
    } catch (e) {
      throw new ProtocolError((e as Error).message, { cause: e });
    }
    // Item 9: stop this port's rings before their memory goes away.
    const wasRunning: number[] = [];
    for (let i = 0; i < NUM_RINGS; i++) {
      const v = this.#vrings[i];
      if (v.running) {
        v.base = await this.backend.stopQueue(i);
        v.running = false;
        wasRunning.push(i);
      }
    }
    const fds = msg.fds.splice(0);
    let table: MemoryTable;
    try {
      table = new MemoryTable(regions, fds); // owns the fds now, closes them on failure
    } catch (e) {
      throw new ProtocolError((e as Error).message, { cause: e });
    }
    if (table.unsealed.length > 0) {
      this.log.debug`Memory regions ${table.unsealed} are memfds not sealed against shrinking`;
    }
    const old = this.#mem;
    if (old) await this.backend.setMemory(null);
    this.#mem = table;
    old?.close();
    await this.backend.setMemory(table.mapped());
    this.log.info`Memory table: ${regions.length} regions, ${
      regions.reduce((s, r) => s + r.size, 0) >> 20
    } MiB`;
    for (let i = 0; i < NUM_RINGS; i++) await this.#maybeStart(i);
  }

  async #maybeStart(index: number): Promise<void> {
    const v = this.#vrings[index];
    const enabled = v.enabled || !has(this.features, VHOST_USER_F_PROTOCOL_FEATURES);
    if (v.running || !v.started || !enabled || v.size === 0 || !v.hasAddr || this.#mem === null) {
      return;
    }
    const sizes = ringPartSizes(v.size);
    const mem = this.#mem;
    const desc = mem.translateUser(v.desc, sizes.desc);
    const avail = mem.translateUser(v.avail, sizes.avail);
    const used = mem.translateUser(v.used, sizes.used);
    // Item 12: unmapped, past a region's end, or misaligned (§2.7: 16, 2, 4).
    if (
      !desc || !avail || !used || desc.offset % 16 || avail.offset % 2 || used.offset % 4 ||
      v.desc % 16 || v.avail % 2 || v.used % 4
    ) {
      this.log
        .warn`Ring ${index} stays stopped: addresses unmapped, past a region's end or misaligned`;
      return;
    }
    await this.backend.startQueue({
      q: index,
      size: v.size,
      desc,
      avail,
      used,
      base: v.base,
      kickFd: v.kickFd,
      callFd: v.callFd,
      hdrLen: netHeaderSize(this.features),
      mergeable: has(this.features, VIRTIO_NET_F_MRG_RXBUF),
      indirect: has(this.features, VIRTIO_RING_F_INDIRECT_DESC),
      eventIdx: has(this.features, VIRTIO_RING_F_EVENT_IDX),
      features: this.features,
    });
    v.running = true;
    this.log.debug`Ring ${index} started: size ${v.size}, base ${v.base}`;
  }

  /** True once SET_FEATURES arrived (for logs). */
  get negotiated(): boolean {
    return this.#featuresSet;
  }

  /**
   * Back to the initial state: rings stopped in the dataplane, memory
   * unmapped, every fd closed. Used on disconnect and RESET_OWNER.
   */
  async reset(): Promise<void> {
    for (let i = 0; i < NUM_RINGS; i++) {
      const v = this.#vrings[i];
      if (v.running) await this.backend.stopQueue(i).catch(() => -1);
      closeAll([v.kickFd, v.callFd, v.errFd]);
    }
    this.#vrings = Array.from({ length: NUM_RINGS }, freshVring);
    if (this.#mem) {
      await this.backend.setMemory(null).catch(() => {});
      this.#mem.close();
      this.#mem = null;
    }
    this.features = 0n;
    this.protocolFeatures = 0n;
    this.#featuresSet = false;
  }
}

/** Encodes a u64 reply-ack payload: 0 for success. */
export function ackPayload(ok: boolean): Uint8Array {
  const out = new Uint8Array(8);
  setU64(new DataView(out.buffer), 0, ok ? 0 : 1);
  return out;
}
