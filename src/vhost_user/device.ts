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
 * Memory and the dirty log live in DeviceMemory (device_memory.ts). With
 * PROTOCOL_F_STATUS negotiated a ring also waits for DRIVER_OK, and a
 * status without it stops every ring with its base kept: QEMU sends
 * SET_STATUS 0 before GET_VRING_BASE when it stops a device (a migration's
 * source, a guest resetting its NIC), so the base must survive it.
 *
 * @module
 */

import type { Logger } from "@logtape/logtape";
import { closeAll } from "../../ffi/io.ts";
import { getU64, setU64 } from "../../ffi/structs.ts";
import {
  bit,
  has,
  OFFERED_FEATURES,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VIRTIO_NET_F_GUEST_ANNOUNCE,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
} from "../virtio/features.ts";
import { netHeaderSize } from "../virtio/net_header.ts";
import { ringPartSizes } from "../virtio/split_ring.ts";
import type { QueueStart } from "../types/queue.ts";
import type { MappedRegion } from "../types/memory.ts";
import { DeviceMemory } from "./device_memory.ts";
import { isUnicastMac, rarpFrame } from "./rarp.ts";
import { freshVring, type Vring, vringFdTarget } from "./vring.ts";
import {
  FLAG_NEED_REPLY,
  FLAG_REPLY,
  MAX_MEM_SLOTS,
  MAX_RING_SIZE,
  OFFERED_PROTOCOL_FEATURES,
  ProtocolError,
  ProtocolFeature,
  QUEUE_PAIRS,
  Request,
  requestName,
  STATUS_DRIVER_OK,
  U64_SIZE,
  VERSION,
  VERSION_MASK,
  VHOST_F_LOG_ALL,
  VHOST_VRING_F_LOG,
  VRING_ADDR,
  VRING_ADDR_SIZE,
  VRING_STATE_SIZE,
} from "./protocol.ts";

export { ProtocolError };

/**
 * Features offered on top of the port's: VHOST_F_LOG_ALL (migration) and
 * VIRTIO_NET_F_GUEST_ANNOUNCE (bit 21, VIRTIO 1.2 §5.1.6.5.4: the guest
 * sends its own gratuitous packets after a move). §5.1.3.1 makes it need
 * CTRL_VQ; QEMU emulates the control queue of vhost-user-net itself and
 * offers CTRL_VQ on its own (it is not among the bits it asks the backend
 * for), so GUEST_ANNOUNCE is all the backend offers. A guest without it
 * gets QEMU's SEND_RARP after the move.
 */
export const MIGRATION_FEATURES: bigint = bit(VHOST_F_LOG_ALL) | bit(VIRTIO_NET_F_GUEST_ANNOUNCE);

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
  /** Log dirty pages into this mapped bitmap (null: stop logging); acknowledged. */
  setLog(log: { address: number; size: number } | null): Promise<void>;
  /** Run a frame through ingress as if the guest had sent it (SEND_RARP). */
  inject(frame: Uint8Array): Promise<void>;
}

/** The rings of one queue pair: 0 = RX, 1 = TX. */
export const NUM_RINGS = 2 * QUEUE_PAIRS;

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
  #vrings: Vring[] = Array.from({ length: NUM_RINGS }, freshVring);
  /** Guest memory and dirty log. */
  readonly #memory: DeviceMemory;
  /** The virtio device status byte (PROTOCOL_F_STATUS). */
  #status = 0;

  /**
   * @param backend the dataplane side of this port
   * @param log the port's logger
   * @param offered the virtio features this port offers (its offload options)
   */
  constructor(
    readonly backend: DeviceBackend,
    readonly log: Logger,
    readonly offered: bigint = OFFERED_FEATURES,
  ) {
    this.#memory = new DeviceMemory(backend, log, {
      stopAll: () => this.#stopAll(),
      startAll: () => this.#startAll(),
    });
  }

  /** The features offered in GET_FEATURES: the port's, and migration's. */
  get #offered(): bigint {
    return this.offered | MIGRATION_FEATURES;
  }

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
      msg.request === Request.SET_VRING_CALL || msg.request === Request.SET_VRING_ERR ||
      msg.request === Request.SET_LOG_BASE || msg.request === Request.SET_LOG_FD ||
      msg.request === Request.ADD_MEM_REG || msg.request === Request.REM_MEM_REG;
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
        return u64Payload(this.#offered);
      case Request.SET_FEATURES: {
        this.#size(msg, U64_SIZE);
        const f = view.getBigUint64(0, true);
        if (f & ~this.#offered) {
          throw new ProtocolError(`Cannot set features 0x${f.toString(16)}: not offered`);
        }
        this.features = f;
        this.#featuresSet = true;
        // VHOST_F_LOG_ALL may come and go at run time ("Migration").
        await this.#memory.setLogging(has(f, VHOST_F_LOG_ALL));
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
        await this.#memory.setTable(msg);
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
        this.#need(msg, ProtocolFeature.LOG_SHMFD, "LOG_SHMFD");
        await this.#memory.setLogBase(msg);
        return new Uint8Array(0); // QEMU waits for a reply; DPDK's has no payload either
      case Request.SET_LOG_FD:
        this.#need(msg, ProtocolFeature.LOG_SHMFD, "LOG_SHMFD");
        this.#memory.setLogFd(msg);
        return true;
      case Request.SEND_RARP:
        return await this.#sendRarp(msg);
      case Request.GET_MAX_MEM_SLOTS:
        this.#size(msg, 0);
        this.#need(msg, ProtocolFeature.CONFIGURE_MEM_SLOTS, "CONFIGURE_MEM_SLOTS");
        return u64Payload(BigInt(MAX_MEM_SLOTS));
      case Request.ADD_MEM_REG:
        this.#need(msg, ProtocolFeature.CONFIGURE_MEM_SLOTS, "CONFIGURE_MEM_SLOTS");
        await this.#memory.addRegion(msg);
        return true;
      case Request.REM_MEM_REG:
        this.#need(msg, ProtocolFeature.CONFIGURE_MEM_SLOTS, "CONFIGURE_MEM_SLOTS");
        return await this.#memory.removeRegion(msg);
      case Request.SET_STATUS:
        return await this.#setStatus(msg, view);
      case Request.GET_STATUS:
        this.#size(msg, 0);
        this.#need(msg, ProtocolFeature.STATUS, "STATUS");
        return u64Payload(BigInt(this.#status));
      case Request.RESET_DEVICE:
        this.#size(msg, 0);
        this.#need(msg, ProtocolFeature.RESET_DEVICE, "RESET_DEVICE");
        await this.reset(true);
        return true;
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

  #need(msg: Message, bitNo: number, name: string): void {
    if (!this.#hasProtocol(bitNo)) {
      throw new ProtocolError(`Cannot accept ${requestName(msg.request)}: ${name} not negotiated`);
    }
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
    const logged = (view.getUint32(VRING_ADDR.flags, true) & VHOST_VRING_F_LOG) !== 0;
    if (logged && !this.#hasProtocol(ProtocolFeature.LOG_SHMFD)) {
      throw new ProtocolError(`Cannot log ring ${index}: LOG_SHMFD not negotiated`);
    }
    const desc = getU64(view, VRING_ADDR.desc);
    const used = getU64(view, VRING_ADDR.used);
    const avail = getU64(view, VRING_ADDR.avail);
    const log = getU64(view, VRING_ADDR.log);
    if (desc < 0 || used < 0 || avail < 0 || (logged && log < 0)) {
      throw new ProtocolError(`Cannot set address of ring ${index}: beyond 2^53`);
    }
    const v = this.#vrings[index];
    if (v.running) {
      v.base = await this.backend.stopQueue(index);
      v.running = false;
    }
    Object.assign(v, { desc, used, avail, hasAddr: true, logAddr: logged ? log : -1 });
    await this.#maybeStart(index);
    return true;
  }

  async #setVringFd(msg: Message, view: DataView): Promise<boolean> {
    this.#size(msg, U64_SIZE);
    const { index, noFd } = vringFdTarget(msg.request, view, msg.fds.length, NUM_RINGS);
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

  // DeviceMemory's handshake: stop every running ring, bases kept.
  async #stopAll(): Promise<void> {
    for (let i = 0; i < NUM_RINGS; i++) {
      const v = this.#vrings[i];
      if (v.running) {
        v.base = await this.backend.stopQueue(i);
        v.running = false;
      }
    }
  }

  async #startAll(): Promise<void> {
    for (let i = 0; i < NUM_RINGS; i++) await this.#maybeStart(i);
  }

  /** SET_STATUS (VIRTIO 1.2 §2.1): DRIVER_OK lets rings start, its absence stops them. */
  async #setStatus(msg: Message, view: DataView): Promise<boolean> {
    this.#size(msg, U64_SIZE);
    this.#need(msg, ProtocolFeature.STATUS, "STATUS");
    const status = getU64(view, 0);
    if (status < 0 || status > 0xff) {
      this.log.warn`Cannot set device status ${status}: not a status byte`;
      return false;
    }
    const was = this.#status;
    this.#status = status;
    if ((status & STATUS_DRIVER_OK) === 0) await this.#stopAll();
    else if ((was & STATUS_DRIVER_OK) === 0) await this.#startAll();
    this.log.debug`Device status 0x${status.toString(16)}`;
    return true;
  }

  /**
   * SEND_RARP: announces the guest's MAC (first 6 bytes) as if its port
   * had sent a RARP: the FDB moves the MAC here at once and the frame
   * floods (QEMU sends it after a migration when the guest cannot announce).
   */
  async #sendRarp(msg: Message): Promise<boolean> {
    this.#size(msg, U64_SIZE);
    this.#need(msg, ProtocolFeature.RARP, "RARP");
    const mac = msg.payload.slice(0, 6);
    if (!isUnicastMac(mac)) {
      this.log.warn`Cannot announce MAC ${[...mac]}: not a unicast address`;
      return false;
    }
    await this.backend.inject(rarpFrame(mac));
    this.log.info`Announced the guest's MAC with a RARP`;
    return true;
  }

  async #maybeStart(index: number): Promise<void> {
    const v = this.#vrings[index];
    const enabled = v.enabled || !has(this.features, VHOST_USER_F_PROTOCOL_FEATURES);
    const mem = this.#memory.table;
    if (v.running || !v.started || !enabled || v.size === 0 || !v.hasAddr || mem === null) {
      return;
    }
    if (this.#hasProtocol(ProtocolFeature.STATUS) && (this.#status & STATUS_DRIVER_OK) === 0) {
      return; // SET_STATUS with DRIVER_OK starts it
    }
    const sizes = ringPartSizes(v.size);
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
      logUsed: v.logAddr,
    });
    v.running = true;
    this.log.debug`Ring ${index} started: size ${v.size}, base ${v.base}`;
  }

  /** True once SET_FEATURES arrived (for logs). */
  get negotiated(): boolean {
    return this.#featuresSet;
  }

  /**
   * Back to the initial state: rings stopped in the dataplane, memory and
   * dirty log unmapped, every fd closed. Used on disconnect and
   * RESET_OWNER; RESET_DEVICE keeps the protocol features (the frontend
   * stays the owner, and its REPLY_ACK still gets an answer).
   */
  async reset(keepProtocol = false): Promise<void> {
    for (let i = 0; i < NUM_RINGS; i++) {
      const v = this.#vrings[i];
      if (v.running) await this.backend.stopQueue(i).catch(() => -1);
      closeAll([v.kickFd, v.callFd, v.errFd]);
    }
    this.#vrings = Array.from({ length: NUM_RINGS }, freshVring);
    await this.#memory.close();
    this.features = 0n;
    if (!keepProtocol) this.protocolFeatures = 0n;
    this.#featuresSet = false;
    this.#status = 0;
  }
}

/** Encodes a u64 reply-ack payload: 0 for success. */
export function ackPayload(ok: boolean): Uint8Array {
  const out = new Uint8Array(8);
  setU64(new DataView(out.buffer), 0, ok ? 0 : 1);
  return out;
}
