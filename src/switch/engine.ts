/**
 * The forwarding engine: switching only. One round visits every port's
 * driver (src/switch/drivers/: a vhost-user net queue pair, a TAP queue)
 * through one burst interface and runs a pipeline over each burst:
 *
 * 1. receive: the driver pops up to BURST frames into its own records
 *    (a TAP's parsed as read);
 * 2. then per frame: parse (header, MACs, offloads validated: ingress.ts),
 *    classify (learn the source, look up the destination: FDB) and
 *    deliver (once into each destination, with that port's offload
 *    decision, egress.ts), holding a unicast frame back while its guest
 *    has no RX buffer (HOLD_MS);
 * 3. complete: the driver releases what was taken (one TX used-index
 *    publish and at most one interrupt per queue) and keeps the rest;
 * 4. flush, once every port was polled: one RX used-index publish and at
 *    most one interrupt per queue per round.
 *
 * Nothing here allocates per frame (see bench/ and the heap test), throws
 * for guest errors (they are counted), or calls FFI per frame except the
 * TAP read/write syscalls themselves (in the TAP driver).
 *
 * @module
 */

import { mmap } from "../../ffi/memory.ts";
import { MAP_ANONYMOUS, MAP_SHARED, PROT_READ, PROT_WRITE } from "../../ffi/constants.ts";
import { type Range, updateWindow } from "../virtio/address_window.ts";
import { NET_HDR_SIZE } from "../virtio/net_header.ts";
import { C, MAX_PORTS } from "./counters.ts";
import type { Fdb } from "./fdb.ts";
import { type DpPort, PortKind } from "./dp_port.ts";
import { Egress } from "./egress.ts";
import { Frame, MAX_GSO_FRAME, OUT_DROP, OUT_FLOOD } from "./frame.ts";
import { PARSE_OK, parseFrame } from "./ingress.ts";
import { type CaptureProducer, Direction } from "./capture_ring.ts";
import { BURST } from "./drivers/port_driver.ts";
import { VhostNetQueuePair } from "./drivers/vhost_net.ts";
import { TapQueue } from "./drivers/tap.ts";

export { DpPort, PortKind } from "./dp_port.ts";
export { walkErrorName } from "./drivers/vhost_net.ts";
export { BURST } from "./drivers/port_driver.ts";

/** Where `inject` stages a frame: a vnet header and the largest frame. */
const STAGING_SIZE = NET_HDR_SIZE + MAX_GSO_FRAME;
const STAGING_WORDS = (STAGING_SIZE + 3) >>> 2;
const SCRATCH_SIZE = STAGING_WORDS * 4;

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
  /** The record `inject` runs a control frame through. */
  readonly #injected = new Frame();
  // Inject's staging buffer, in its own (shareable) mapping so the copy window
  // can span it with the guests' regions (address_window.ts).
  readonly #scratchMap = mmap(
    -1,
    SCRATCH_SIZE,
    0,
    PROT_READ | PROT_WRITE,
    MAP_SHARED | MAP_ANONYMOUS,
  );
  readonly #staging = new Uint8Array(this.#scratchMap.buffer, 0, STAGING_SIZE);
  readonly #staging32 = new Uint32Array(this.#scratchMap.buffer, 0, STAGING_WORDS);
  readonly #egress: Egress;
  readonly #breakPort = (q: DpPort, reason: string) => this.breakPort(q, reason);
  // Capture (capture_ring.ts): direction bits per port id, all 0 until a ring is set.
  // Capture off costs one load of this array per frame and port.
  // (Shared from the start, so the loads stay monomorphic when the ring's array replaces it.)
  #capFlags: Int32Array<ArrayBufferLike> = new Int32Array(new SharedArrayBuffer(MAX_PORTS * 4));
  #capture: CaptureProducer | null = null;

  constructor(counters: Float64Array, fdb: Fdb, onBroken: BrokenHandler) {
    this.#c = counters;
    this.fdb = fdb;
    this.#onBroken = onBroken;
    this.#egress = new Egress(counters);
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

  /**
   * Rebuilds the copy windows over the scratch area (range 0, SegList.push's
   * default), every driver's buffers and every guest region, telling each
   * its range number (control path).
   */
  updateWindow(): boolean {
    const ranges: Range[] = [{ address: this.#scratchMap.address, size: SCRATCH_SIZE }];
    for (const p of this.ports) {
      if (p.tap !== null) {
        p.tap.rangeId = ranges.length;
        ranges.push(p.tap.range);
      }
      const m = p.mem;
      if (m === null) continue;
      for (let i = 0; i < m.count; i++) {
        m.range[i] = ranges.length;
        ranges.push({
          address: m.base[i],
          size: m.size[i],
          fd: m.fd[i],
          fileOffset: m.fileOffset[i],
        });
      }
    }
    return updateWindow(ranges);
  }

  /**
   * Adds a port and gives it its driver: a vhost-user net queue pair, or a
   * TAP queue on its fd (control path).
   */
  add(port: DpPort): void {
    if (port.driver === null) {
      if (port.kind === PortKind.VHOST) {
        port.vq = new VhostNetQueuePair(port, this.#c, this.#breakPort);
        port.driver = port.vq;
      } else {
        port.tap = new TapQueue(port, this.#c, port.fd);
        port.driver = port.tap;
      }
    }
    this.byId[port.id] = port;
    this.ports = [...this.ports.filter((p) => p.id !== port.id), port];
    if (port.tap !== null) this.updateWindow();
  }

  /** Removes a port, its FDB entries and its driver's memory (control path). */
  remove(id: number): void {
    const p = this.byId[id];
    this.byId[id] = undefined;
    this.ports = this.ports.filter((q) => q.id !== id);
    this.fdb.removePort(id);
    this.updateWindow();
    p?.tap?.close();
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
      if (p.broken || p.driver === null) continue;
      try {
        work += this.#poll(p, now);
      } catch (e) {
        // A bug or a fault while reading from one port stops only that port (item 33).
        this.breakPort(p, `exception: ${(e as Error)?.stack ?? e}`);
      }
    }
    // One used-index publish and at most one interrupt per RX queue per round.
    for (let i = 0; i < ports.length; i++) ports[i].driver?.flush();
    return work;
  }

  // One burst from port `p`'s driver through parse, classify and deliver, a
  // frame at a time. Parsing each guest frame just before its delivery, not
  // the whole burst first, measured faster in the loop: the parse's first
  // load of a frame is a miss on a line the other core just wrote, and
  // right after the previous frame's copy it often is not (the copy streams
  // through the neighbouring buffer, and the hardware prefetcher with it).
  // Parsing the burst first put 14.5 % of the worker's busy time in readMacs
  // at 1500 B, against 4.7 % in the per-frame code before the pipeline
  // (profile_loop cpuprof, 2026-12-06). `bench:loop-ab HEAD --runs 5`,
  // 2026-12-06: 64 B 1.07× (5.68 → 6.08 Mpps), 1500 B 1.08× (3.83 → 4.12).
  #poll(p: DpPort, now: number): number {
    const d = p.driver!;
    const n = d.receive(BURST);
    if (n === 0) return 0;
    const burst = d.burst;
    // The learn/lookup memo starts afresh: another port, another time.
    this.#srcHi = -1;
    this.#dstHi = -1;
    const parse = !d.parses;
    const caps = p.ingressCaps, maxFrame = p.maxFrame;
    let taken = n, seen = n;
    for (let k = 0; k < n; k++) {
      const f = burst[k];
      if (f.out === OUT_DROP) continue;
      if (parse) {
        const r = parseFrame(f, caps, maxFrame, false);
        if (r !== PARSE_OK) {
          this.#c[p.cbase + r]++;
          f.out = OUT_DROP;
          continue;
        }
      }
      f.out = this.#classify(p, f, now);
      if (f.out === OUT_DROP) continue;
      if (f.out >= 0 ? this.#unicast(f, now) : (this.#forward(p, f), false)) {
        // Held back: this frame (counted now) and the ones after it (not yet)
        // come again next round.
        taken = k;
        seen = k + 1;
        break;
      }
    }
    d.complete(n, taken, seen);
    return n;
  }

  /**
   * Delivers a unicast frame, holding it back if its guest has no RX buffer
   * and may still be waited for (HOLD_MS). Returns true if held.
   */
  #unicast(f: Frame, now: number): boolean {
    const q = this.byId[f.out];
    if (q === undefined || q.broken) return false;
    const mayHold = q.kind === PortKind.VHOST && now >= q.lossyUntil &&
      (q.stallSince < 0 || now - q.stallSince < HOLD_MS);
    if (this.#deliver(q, f, mayHold) && !q.broken) {
      if (q.stallSince < 0) q.stallSince = now;
      return true;
    }
    // Only a port that was stalled is written. Skipping the store of every
    // frame read +14 % in-process (12 interleaved runs of bench/heap.ts
    // 3000000 64, medians 2.84 → 3.25 Mpps, 9 of 12 pairs faster, 2026-12-02).
    if (q.stallSince >= 0) {
      if (!mayHold) q.lossyUntil = now + LOSSY_MS; // waited long enough
      q.stallSince = -1;
    }
    return false;
  }

  /**
   * Runs `frame` through ingress as if port `p` had sent it: learned at
   * once, then switched like any frame (control path: SEND_RARP's RARP
   * after a migration). Staged behind a zero header in the engine's
   * scratch, so copies out of it stay inside the address window. Never
   * held back: it is flooded or delivered now, or dropped.
   */
  inject(p: DpPort, frame: Uint8Array, now: number): void {
    const n = NET_HDR_SIZE + frame.length;
    if (p.broken || n >= STAGING_SIZE) return;
    const buf = this.#staging;
    buf.fill(0, 0, NET_HDR_SIZE);
    buf.set(frame, NET_HDR_SIZE);
    const f = this.#injected;
    f.segs.reset();
    f.segs.push(buf, this.#staging32, 0, n, this.#scratchMap.address);
    f.pos = NET_HDR_SIZE;
    f.len = frame.length;
    if (parseFrame(f, 0, p.maxFrame, false) !== PARSE_OK) return;
    this.#srcHi = -1;
    this.#dstHi = -1;
    f.out = this.#classify(p, f, now);
    if (f.out !== OUT_DROP) this.#forward(p, f);
  }

  // Counts the frame in, learns its source and finds its destination.
  #classify(p: DpPort, f: Frame, now: number): number {
    const c = this.#c;
    // A frame held back last round was counted and captured then (see HOLD_MS).
    if (!f.again) {
      c[p.cbase + C.rxPackets]++;
      c[p.cbase + C.rxBytes] += f.len;
      // Capture hook, ingress: the frame as read from the port.
      if ((this.#capFlags[p.id] & Direction.RX) !== 0) this.#captureFrame(p.id, Direction.RX, f);
    }
    // Learn unicast sources only (a multicast source address is invalid).
    // A burst mostly repeats one source and one destination: the source is
    // learned once per run (same port, same `now`: learning it again would
    // change nothing), and the lookup is reused until a learn may change it.
    const srcHi = f.srcHi, srcLo = f.srcLo;
    if ((srcHi & 0x100) === 0 && (srcHi !== this.#srcHi || srcLo !== this.#srcLo)) {
      this.fdb.learn(srcHi, srcLo, p.id, now);
      this.#srcHi = srcHi;
      this.#srcLo = srcLo;
      this.#dstHi = -1; // the table changed: look up again
    }
    const dstHi = f.dstHi, dstLo = f.dstLo;
    if ((dstHi & 0x100) === 0) {
      let out: number;
      if (dstHi === this.#dstHi && dstLo === this.#dstLo) {
        out = this.#dstOut;
      } else {
        out = this.fdb.lookup(dstHi, dstLo);
        this.#dstHi = dstHi;
        this.#dstLo = dstLo;
        this.#dstOut = out;
      }
      if (out >= 0) {
        if (out !== p.id) return out;
        c[p.cbase + C.dropSameport]++;
        return OUT_DROP;
      }
    }
    return OUT_FLOOD; // broadcast, multicast or unknown unicast
  }

  // The last source learned and the last lookup, within one burst (see #classify).
  #srcHi = -1;
  #srcLo = 0;
  #dstHi = -1;
  #dstLo = 0;
  #dstOut = 0;

  #forward(p: DpPort, f: Frame): void {
    if (f.out >= 0) {
      const q = this.byId[f.out];
      if (q !== undefined && !q.broken) this.#deliver(q, f, false);
      return;
    }
    const ports = this.ports;
    for (let i = 0; i < ports.length; i++) {
      const q = ports[i];
      if (q !== p && !q.broken) this.#deliver(q, f, false);
    }
  }

  // Returns true if the frame was held back (only with `holdOk`: see Egress.deliver).
  #deliver(q: DpPort, f: Frame, holdOk: boolean): boolean {
    // Capture hook, egress: only frames the port took (its tx counter moved), once
    // each, whole as they arrived (a GSO frame the port needed segmented is one packet).
    const cap = this.#capFlags[q.id] & Direction.TX;
    const sent = cap !== 0 ? this.#c[q.cbase + C.txPackets] : 0;
    let held = false;
    try {
      held = this.#egress.deliver(q, f, holdOk);
    } catch (e) {
      // A fault while writing to one destination stops that destination, not the
      // sender and not the other destinations of a flood (item 33).
      this.breakPort(q, `exception: ${(e as Error)?.stack ?? e}`);
    }
    if (cap !== 0 && this.#c[q.cbase + C.txPackets] !== sent) {
      this.#captureFrame(q.id, Direction.TX, f);
    }
    return held;
  }
}
