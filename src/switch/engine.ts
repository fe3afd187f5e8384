/**
 * The forwarding engine. One round visits every port's ingress (a guest's
 * TX ring, a TAP fd) and runs a pipeline over a bounded burst:
 *
 * 1. pop: take up to BURST chains, each walked with every bound into its
 *    frame record (src/switch/frame.ts);
 * 2. parse: the virtio-net header and both MACs, read once, offloads
 *    validated (src/switch/ingress.ts);
 * 3. classify: learn the sources, look up the destinations (FDB);
 * 4. deliver: each frame once into each destination, with that port's
 *    offload decision (src/switch/egress.ts);
 * 5. return the TX buffers with one used-index publish and at most one
 *    interrupt per queue; RX queues are published once per round.
 *
 * Nothing here allocates per frame (see bench/ and the heap test), throws
 * for guest errors (they are counted), or calls FFI per frame except the
 * TAP read/write syscalls themselves.
 *
 * @module
 */

import { libc } from "../../ffi/libc.ts";
import { mmap } from "../../ffi/memory.ts";
import { MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE } from "../../ffi/constants.ts";
import { type Range, updateWindow } from "../virtio/address_window.ts";
import { NET_HDR_SIZE } from "../virtio/net_header.ts";
import { C, MAX_PORTS } from "./counters.ts";
import type { Fdb } from "./fdb.ts";
import { type DpPort, PortKind } from "./dp_port.ts";
import { Egress } from "./egress.ts";
import { type Frame, makeBurst, MAX_GSO_FRAME, OUT_DROP, OUT_FLOOD } from "./frame.ts";
import { PARSE_OK, parseFrame } from "./ingress.ts";
import { type CaptureProducer, Direction } from "./capture_ring.ts";

export { DpPort, PortKind } from "./dp_port.ts";
export { walkErrorName } from "./egress.ts";

/**
 * Frames taken from one ingress queue per round. Bounds the work one busy
 * guest can take from the others (CHECKLIST item 27); tuned in issue 4's
 * loop benchmark.
 */
export const BURST = 32;
/** The TAP staging buffer: a vnet header and the largest GSO frame the kernel sends. */
const STAGING_SIZE = NET_HDR_SIZE + MAX_GSO_FRAME;
const STAGING_WORDS = (STAGING_SIZE + 3) >>> 2;
/** Headers we write (TAP transmit, split RX headers), after the staging buffer. */
const HDR_OFFSET = STAGING_WORDS * 4;
/** A segment or completed frame built for a TAP, after that. */
const SEG_OFFSET = HDR_OFFSET + 64;
const SEG_SIZE = MAX_GSO_FRAME;
const SCRATCH_SIZE = SEG_OFFSET + SEG_SIZE;

/**
 * Backpressure instead of loss. A unicast frame for a guest whose RX ring
 * is empty is held back: its sender's TX chain (or the TAP's staged frame)
 * stays untaken and is retried next round, the way QEMU stops reading a TAP
 * while its guest has no buffers, so TCP sees a full queue, not a drop
 * (bench:iperf: drops toward a busy TCG guest cost more throughput than
 * any per-frame cost). Bounded so one guest cannot stall the others
 * (CHECKLIST 26, 27): a guest that takes no frame for HOLD_MS has its
 * frames dropped and counted (dropNoBuffer) for LOSSY_MS before it may be
 * waited for again, so the most a guest that never posts buffers can cost
 * a sender is one HOLD_MS stall per LOSSY_MS (0.5 %). Floods never wait.
 */
const HOLD_MS = 5;
const LOSSY_MS = 1000;

/** Why a port stopped, reported to the control plane. */
export type BrokenHandler = (port: DpPort, reason: string) => void;

/** The switch core. */
export class Engine {
  /** Ports by id. */
  readonly byId: (DpPort | undefined)[] = new Array(MAX_PORTS).fill(undefined);
  /** Ports in polling order. */
  ports: DpPort[] = [];
  readonly fdb: Fdb;
  readonly #c: Float64Array;
  readonly #onBroken: BrokenHandler;
  readonly #burst: Frame[] = makeBurst(BURST);
  /** The TAP frame record, apart from the burst so a held TAP frame survives guest polling. */
  readonly #tapFrame: Frame = makeBurst(1)[0];
  /** The TAP port whose staged frame is held back (see HOLD_MS), or null. */
  #heldTap: DpPort | null = null;
  // The TAP staging buffer and the egress scratch live in one anonymous
  // mapping, so the address window can span them and the guests' regions
  // (address_window.ts).
  readonly #scratchMap = mmap(
    -1,
    SCRATCH_SIZE,
    0,
    PROT_READ | PROT_WRITE,
    MAP_PRIVATE | MAP_ANONYMOUS,
  );
  readonly #staging = new Uint8Array(this.#scratchMap.buffer, 0, STAGING_SIZE);
  readonly #staging32 = new Uint32Array(this.#scratchMap.buffer, 0, STAGING_WORDS);
  readonly #egress: Egress;
  // Capture (capture_ring.ts): direction bits per port id, all 0 until a ring is set.
  // Capture off costs one load of this array per frame and port.
  // (Shared from the start, so the loads stay monomorphic when the ring's array replaces it.)
  #capFlags: Int32Array<ArrayBufferLike> = new Int32Array(new SharedArrayBuffer(MAX_PORTS * 4));
  #capture: CaptureProducer | null = null;

  constructor(counters: Float64Array, fdb: Fdb, onBroken: BrokenHandler) {
    this.#c = counters;
    this.fdb = fdb;
    this.#onBroken = onBroken;
    this.#egress = new Egress(counters, {
      map: this.#scratchMap,
      hdrOffset: HDR_OFFSET,
      segOffset: SEG_OFFSET,
      segSize: SEG_SIZE,
    }, (q, reason) => this.breakPort(q, reason));
    this.updateWindow();
  }

  /** Hands the engine the capture ring's producer end (worker init, control path). */
  setCapture(capture: CaptureProducer): void {
    this.#capture = capture;
    this.#capFlags = capture.flags;
  }

  // Offers one frame to the capture ring, with the virtio-net header it arrived with.
  #captureFrame(id: number, direction: number, f: Frame): void {
    const h = f.hdr;
    this.#capture!.offer(
      id,
      direction,
      f.segs,
      f.pos,
      f.len,
      h.flags,
      h.gsoType,
      h.gsoSize,
      h.csumStart,
      h.csumOffset,
      h.hdrLen,
    );
  }

  /** Rebuilds the copy window over every guest region and the scratch area (control path). */
  updateWindow(): boolean {
    const ranges: Range[] = [{ address: this.#scratchMap.address, size: SCRATCH_SIZE }];
    for (const p of this.ports) {
      const m = p.mem;
      if (m === null) continue;
      for (let i = 0; i < m.count; i++) ranges.push({ address: m.base[i], size: m.size[i] });
    }
    return updateWindow(ranges);
  }

  /** Adds a port (control path). */
  add(port: DpPort): void {
    this.byId[port.id] = port;
    this.ports = [...this.ports.filter((p) => p.id !== port.id), port];
  }

  /** Removes a port and its FDB entries (control path). */
  remove(id: number): void {
    if (this.#heldTap?.id === id) this.#heldTap = null;
    this.byId[id] = undefined;
    this.ports = this.ports.filter((p) => p.id !== id);
    this.fdb.removePort(id);
    this.updateWindow();
  }

  /** Stops a port after a fault, counts it and reports it once. */
  breakPort(p: DpPort, reason: string): void {
    if (p.broken) return;
    p.broken = true;
    this.#c[p.cbase + C.queueBroken]++;
    this.#onBroken(p, reason);
  }

  /**
   * One polling round over every port. Returns the frames taken from
   * ingress queues (0: idle). `now` is a millisecond clock for the FDB.
   */
  round(now: number): number {
    const ports = this.ports;
    let work = 0;
    for (let i = 0; i < ports.length; i++) {
      const p = ports[i];
      if (p.broken) continue;
      try {
        work += p.kind === PortKind.VHOST ? this.#pollGuest(p, now) : this.#pollTap(p, now);
      } catch (e) {
        // A bug or a fault while reading from one port stops only that port (item 33).
        this.breakPort(p, `exception: ${(e as Error)?.stack ?? e}`);
      }
    }
    // One used-index publish and at most one interrupt per RX queue per round.
    for (let i = 0; i < ports.length; i++) {
      const p = ports[i];
      const rx = p.rx;
      if (rx !== null && rx.pendingUsed > 0 && !p.broken && rx.publish()) {
        this.#egress.call(p, p.callRx);
      }
    }
    return work;
  }

  #pollGuest(p: DpPort, now: number): number {
    const ring = p.tx;
    if (ring === null) return 0;
    let n = ring.available();
    if (n < 0) {
      this.breakPort(p, "TX avail index more than the ring size ahead");
      return 0;
    }
    if (n > BURST) n = BURST;
    const c = this.#c;
    const burst = this.#burst;
    const hl = p.hdrLen;
    // pop + parse
    for (let k = 0; k < n; k++) {
      const f = burst[k];
      const head = ring.nextHead();
      f.head = head;
      f.segs.reset();
      const total = ring.walk(head, f.segs, false);
      if (total < 0) {
        c[p.cbase + C.dropBadDescriptor]++;
        f.out = OUT_DROP;
        continue;
      }
      f.pos = hl;
      f.len = total - hl;
      const r = parseFrame(f, p.ingressCaps, p.maxFrame, false);
      if (r !== PARSE_OK) {
        c[p.cbase + r]++;
        f.out = OUT_DROP;
      } else {
        f.out = 0;
      }
    }
    // classify
    for (let k = 0; k < n; k++) {
      const f = burst[k];
      if (f.out !== OUT_DROP) f.out = this.#classify(p, f, now);
    }
    // deliver
    let taken = n;
    for (let k = 0; k < n; k++) {
      const f = burst[k];
      if (f.out === OUT_DROP) continue;
      if (f.out >= 0 ? this.#unicast(f, now) : (this.#forward(p, f), false)) {
        taken = k; // held back: this chain and the ones after it are taken again next round
        break;
      }
    }
    if (taken < n) ring.unget(n - taken);
    // TX buffers go back only now, after every copy out of them, with length
    // 0: the device wrote nothing (§2.7.8).
    for (let k = 0; k < taken; k++) ring.pushUsed(burst[k].head, 0);
    if (taken > 0 && ring.publish()) this.#egress.call(p, p.callTx);
    return n;
  }

  /**
   * Delivers a unicast frame, holding it back if its guest has no RX buffer
   * and may still be waited for (HOLD_MS). Returns true if held.
   */
  #unicast(f: Frame, now: number): boolean {
    const q = this.byId[f.out];
    if (q === undefined || q.broken) return false;
    const eg = this.#egress;
    const mayHold = q.kind === PortKind.VHOST && now >= q.lossyUntil &&
      (q.stallSince < 0 || now - q.stallSince < HOLD_MS);
    eg.holdOk = mayHold;
    this.#deliver(q, f);
    eg.holdOk = false;
    if (eg.held && !q.broken) {
      if (q.stallSince < 0) q.stallSince = now;
      return true;
    }
    if (!mayHold && q.stallSince >= 0) q.lossyUntil = now + LOSSY_MS; // waited long enough
    q.stallSince = -1;
    return false;
  }

  #pollTap(p: DpPort, now: number): number {
    const buf = this.#staging;
    const f = this.#tapFrame;
    const c = this.#c;
    let k = 0;
    if (this.#heldTap !== null) {
      // The staged frame waits for its guest's buffers; the staging buffer with it.
      if (this.#heldTap !== p) return 0;
      if (this.#unicast(f, now)) return 1;
      this.#heldTap = null;
      k = 1;
    }
    for (; k < BURST; k++) {
      const n = libc.read(p.fd, buf, STAGING_SIZE);
      if (n < 0) break; // EAGAIN: drained (other errors show up as link state)
      if (n >= STAGING_SIZE) {
        c[p.cbase + C.dropTooBig]++; // the kernel had more than we can hold: cut short
        continue;
      }
      f.segs.reset();
      f.segs.push(buf, this.#staging32, 0, n, this.#scratchMap.address);
      f.pos = NET_HDR_SIZE;
      f.len = n - NET_HDR_SIZE;
      // The kernel's header is checked like a guest's (CHECKLIST 39).
      const r = parseFrame(f, p.ingressCaps, p.maxFrame, true);
      if (r !== PARSE_OK) {
        c[p.cbase + r]++;
        continue;
      }
      f.out = this.#classify(p, f, now);
      if (f.out === OUT_DROP) continue;
      if (f.out < 0) this.#forward(p, f);
      else if (this.#unicast(f, now)) {
        this.#heldTap = p;
        return k + 1;
      }
    }
    return k;
  }

  /**
   * Runs `frame` through ingress as if port `p` had sent it: learned at
   * once, then switched like any frame (control path: SEND_RARP's RARP
   * after a migration). Staged like a TAP frame behind a zero header, so
   * copies out of it stay inside the address window.
   */
  inject(p: DpPort, frame: Uint8Array, now: number): void {
    const n = NET_HDR_SIZE + frame.length;
    if (p.broken || n >= STAGING_SIZE) return;
    if (this.#heldTap !== null) {
      // The staging buffer is ours now: the held TAP frame is dropped (a rare control event).
      this.#c[this.#heldTap.cbase + C.dropNoBuffer]++;
      this.#heldTap = null;
    }
    const buf = this.#staging;
    buf.fill(0, 0, NET_HDR_SIZE);
    buf.set(frame, NET_HDR_SIZE);
    const f = this.#burst[0];
    f.segs.reset();
    f.segs.push(buf, this.#staging32, 0, n, this.#scratchMap.address);
    f.pos = NET_HDR_SIZE;
    f.len = frame.length;
    if (parseFrame(f, 0, p.maxFrame, false) !== PARSE_OK) return;
    f.out = this.#classify(p, f, now);
    if (f.out !== OUT_DROP) this.#forward(p, f);
  }

  // Counts the frame in, learns its source and finds its destination.
  #classify(p: DpPort, f: Frame, now: number): number {
    const c = this.#c;
    c[p.cbase + C.rxPackets]++;
    c[p.cbase + C.rxBytes] += f.len;
    // Capture hook, ingress: the frame as read from the port.
    if ((this.#capFlags[p.id] & Direction.RX) !== 0) this.#captureFrame(p.id, Direction.RX, f);
    // Learn unicast sources only (a multicast source address is invalid).
    if ((f.srcHi & 0x100) === 0) this.fdb.learn(f.srcHi, f.srcLo, p.id, now);
    if ((f.dstHi & 0x100) === 0) {
      const out = this.fdb.lookup(f.dstHi, f.dstLo);
      if (out >= 0) {
        if (out !== p.id) return out;
        c[p.cbase + C.dropSameport]++;
        return OUT_DROP;
      }
    }
    return OUT_FLOOD; // broadcast, multicast or unknown unicast
  }

  #forward(p: DpPort, f: Frame): void {
    if (f.out >= 0) {
      const q = this.byId[f.out];
      if (q !== undefined && !q.broken) this.#deliver(q, f);
      return;
    }
    const ports = this.ports;
    for (let i = 0; i < ports.length; i++) {
      const q = ports[i];
      if (q !== p && !q.broken) this.#deliver(q, f);
    }
  }

  #deliver(q: DpPort, f: Frame): void {
    // Capture hook, egress: only frames the port took (its tx counter moved), once
    // each, whole as they arrived (a GSO frame the port needed segmented is one packet).
    const cap = this.#capFlags[q.id] & Direction.TX;
    const sent = cap !== 0 ? this.#c[q.cbase + C.txPackets] : 0;
    try {
      this.#egress.deliver(q, f);
    } catch (e) {
      // A fault while writing to one destination stops that destination, not the
      // sender and not the other destinations of a flood (item 33).
      this.breakPort(q, `exception: ${(e as Error)?.stack ?? e}`);
    }
    if (cap !== 0 && this.#c[q.cbase + C.txPackets] !== sent) {
      this.#captureFrame(q.id, Direction.TX, f);
    }
  }
}
