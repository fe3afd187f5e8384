/**
 * The forwarding engine: one round polls every port's ingress (a guest's
 * TX ring, a TAP fd) for a bounded burst, learns source MACs, looks up the
 * destination and copies each frame once into the destination (a guest's
 * RX buffers, or a TAP `writev` straight from the source buffers). Used
 * indices are published and guests interrupted once per queue per round.
 *
 * Nothing here allocates per frame (see bench/ and the heap test), throws
 * for guest errors (they are counted), or calls FFI per frame except the
 * TAP read/write syscalls themselves.
 *
 * @module
 */

import { libc } from "../../ffi/libc.ts";
import { IovecArray } from "../../ffi/io.ts";
import { mmap } from "../../ffi/memory.ts";
import { MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE } from "../../ffi/constants.ts";
import { type Range, updateWindow } from "../virtio/address_window.ts";
import { eventfdSignal } from "../../ffi/eventfd.ts";
import { copySegments, SegList, wordIndex } from "../virtio/chain.ts";
import { type SplitRing, WalkError } from "../virtio/split_ring.ts";
import type { GuestMemory } from "../virtio/guest_memory.ts";
import { ETH_HLEN, NET_HDR_SIZE, NUM_BUFFERS_OFFSET } from "../virtio/net_header.ts";
import { C, COUNTERS_PER_PORT, MAX_PORTS } from "./counters.ts";
import type { Fdb } from "./fdb.ts";

/**
 * Frames taken from one ingress queue per round. Bounds the work one busy
 * guest can take from the others (CHECKLIST item 27); tuned in issue 4's
 * loop benchmark.
 */
export const BURST = 32;
/** Most segments one chain (or one mergeable frame) may have. */
const MAX_SEGS = 128;
/** Most RX chains one mergeable frame may take (64 KiB in 1 KiB buffers). */
const MAX_MERGE = 64;
/** The TAP staging buffer: a vnet header and the largest frame. */
const STAGING_SIZE = NET_HDR_SIZE + 65535;
const STAGING_WORDS = (STAGING_SIZE + 3) >>> 2;
/** Our zero virtio-net header, after the staging buffer. */
const ZERO_HDR_OFFSET = STAGING_WORDS * 4;
const SCRATCH_SIZE = 128 * 1024;

/** Port kinds. */
export const PortKind = { VHOST: 0, TAP: 1 } as const;

/** A port as the dataplane sees it. One class for both kinds keeps calls monomorphic. */
export class DpPort {
  /** Guest memory (vhost ports with a memory table). */
  mem: GuestMemory | null = null;
  /** The guest's RX ring (we write), queue 0. */
  rx: SplitRing | null = null;
  /** The guest's TX ring (we read), queue 1. */
  tx: SplitRing | null = null;
  /** Call eventfds per queue (-1: none). */
  callRx = -1;
  callTx = -1;
  /** virtio-net header size the guest negotiated (10 or 12). */
  hdrLen = NET_HDR_SIZE;
  /** MRG_RXBUF negotiated. */
  mergeable = false;
  /** RX chains known to be available beyond those taken (read lazily). */
  rxKnown = 0;
  /** Stopped after a fault; the others keep forwarding. */
  broken = false;
  /** First counter slot. */
  readonly cbase: number;

  constructor(
    /** Port id (counter slot, FDB value). */
    readonly id: number,
    /** PortKind. */
    readonly kind: number,
    /** Name, for reports. */
    readonly name: string,
    /** Largest frame (Ethernet header included) this port sends or takes. */
    public maxFrame: number,
    /** TAP fd (-1 for vhost). */
    readonly fd = -1,
  ) {
    this.cbase = id * COUNTERS_PER_PORT;
  }
}

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

  // Scratch state reused for every frame.
  readonly #src = new SegList(MAX_SEGS);
  readonly #dst = new SegList(MAX_SEGS);
  readonly #heads = new Int32Array(MAX_MERGE);
  readonly #caps = new Float64Array(MAX_MERGE);
  readonly #iov = new IovecArray(MAX_SEGS + 1);
  // Staging and the zero header live in one anonymous mapping, so the
  // address window can span them and the guests' regions (address_window.ts).
  readonly #scratchMap = mmap(
    -1,
    SCRATCH_SIZE,
    0,
    PROT_READ | PROT_WRITE,
    MAP_PRIVATE | MAP_ANONYMOUS,
  );
  readonly #staging = new Uint8Array(this.#scratchMap.buffer, 0, STAGING_SIZE);
  readonly #staging32 = new Uint32Array(this.#scratchMap.buffer, 0, STAGING_WORDS);
  readonly #stagingList = new SegList(1);
  readonly #stagingAddr: number;
  readonly #zeroHdr = new Uint8Array(this.#scratchMap.buffer, ZERO_HDR_OFFSET, NET_HDR_SIZE);
  readonly #zeroHdr32 = new Uint32Array(this.#scratchMap.buffer, ZERO_HDR_OFFSET, NET_HDR_SIZE / 4);
  readonly #zeroHdrAddr: number;
  #dstHi = 0;
  #dstLo = 0;
  #srcHi = 0;
  #srcLo = 0;

  constructor(counters: Float64Array, fdb: Fdb, onBroken: BrokenHandler) {
    this.#c = counters;
    this.fdb = fdb;
    this.#onBroken = onBroken;
    this.#stagingAddr = this.#scratchMap.address;
    this.#zeroHdrAddr = this.#scratchMap.address + ZERO_HDR_OFFSET;
    this.updateWindow();
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
      if (rx !== null && rx.pendingUsed > 0 && !p.broken && rx.publish()) this.#call(p, p.callRx);
    }
    return work;
  }

  #call(p: DpPort, fd: number): void {
    if (fd >= 0 && eventfdSignal(fd)) this.#c[p.cbase + C.interrupts]++;
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
    const chain = this.#src;
    const c = this.#c;
    for (let k = 0; k < n; k++) {
      const head = ring.nextHead();
      chain.reset();
      const total = ring.walk(head, chain, false);
      if (total < 0) c[p.cbase + C.dropBadDescriptor]++;
      else this.#fromGuest(p, chain, total, now);
      // TX buffers are returned with length 0: the device wrote nothing (§2.7.8).
      ring.pushUsed(head, 0);
    }
    if (n > 0 && ring.publish()) this.#call(p, p.callTx);
    return n;
  }

  #fromGuest(p: DpPort, chain: SegList, total: number, now: number): void {
    const c = this.#c;
    const hl = p.hdrLen;
    const frameLen = total - hl;
    if (frameLen < ETH_HLEN) {
      c[p.cbase + C.dropRunt]++; // includes chains no longer than the header (item 22)
      return;
    }
    if (frameLen > p.maxFrame) {
      c[p.cbase + C.dropTooBig]++;
      return;
    }
    // flags and gso_type, read once. No offload is negotiated, so both must be 0
    // (§5.1.6.2); anything else is a frame we cannot hand on faithfully.
    const flags = chain.lens[0] >= 2 ? chain.views[0][chain.offs[0]] : chain.byteAt(0);
    const gso = chain.lens[0] >= 2 ? chain.views[0][chain.offs[0] + 1] : chain.byteAt(1);
    if ((flags | gso) !== 0) {
      c[p.cbase + C.dropBadHeader]++;
      return;
    }
    this.#readMacs(chain, hl);
    this.#switch(p, chain, hl, frameLen, now);
  }

  #pollTap(p: DpPort, now: number): number {
    const buf = this.#staging;
    const list = this.#stagingList;
    const c = this.#c;
    let k = 0;
    for (; k < BURST; k++) {
      const n = libc.read(p.fd, buf, STAGING_SIZE);
      if (n < 0) break; // EAGAIN: drained (other errors show up as link state)
      const frameLen = n - NET_HDR_SIZE;
      if (frameLen < ETH_HLEN) {
        c[p.cbase + C.dropRunt]++;
        continue;
      }
      if (frameLen > p.maxFrame) {
        c[p.cbase + C.dropTooBig]++;
        continue;
      }
      list.reset();
      list.push(buf, this.#staging32, 0, n, this.#stagingAddr);
      this.#readMacs(list, NET_HDR_SIZE);
      this.#switch(p, list, NET_HDR_SIZE, frameLen, now);
    }
    return k;
  }

  // Destination and source MAC into fields, read once.
  #readMacs(list: SegList, pos: number): void {
    let b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11;
    if (list.lens[0] - pos >= 12) {
      const v = list.views[0];
      const o = list.offs[0] + pos;
      b0 = v[o], b1 = v[o + 1], b2 = v[o + 2], b3 = v[o + 3], b4 = v[o + 4], b5 = v[o + 5];
      b6 = v[o + 6], b7 = v[o + 7], b8 = v[o + 8], b9 = v[o + 9], b10 = v[o + 10];
      b11 = v[o + 11];
    } else {
      b0 = list.byteAt(pos), b1 = list.byteAt(pos + 1), b2 = list.byteAt(pos + 2);
      b3 = list.byteAt(pos + 3), b4 = list.byteAt(pos + 4), b5 = list.byteAt(pos + 5);
      b6 = list.byteAt(pos + 6), b7 = list.byteAt(pos + 7), b8 = list.byteAt(pos + 8);
      b9 = list.byteAt(pos + 9), b10 = list.byteAt(pos + 10), b11 = list.byteAt(pos + 11);
    }
    this.#dstHi = (b0 << 8) | b1;
    this.#dstLo = ((b2 << 24) | (b3 << 16) | (b4 << 8) | b5) >>> 0;
    this.#srcHi = (b6 << 8) | b7;
    this.#srcLo = ((b8 << 24) | (b9 << 16) | (b10 << 8) | b11) >>> 0;
  }

  #switch(p: DpPort, src: SegList, pos: number, len: number, now: number): void {
    const c = this.#c;
    c[p.cbase + C.rxPackets]++;
    c[p.cbase + C.rxBytes] += len;
    // Learn unicast sources only (a multicast source address is invalid).
    if ((this.#srcHi & 0x100) === 0) this.fdb.learn(this.#srcHi, this.#srcLo, p.id, now);
    if ((this.#dstHi & 0x100) === 0) {
      const out = this.fdb.lookup(this.#dstHi, this.#dstLo);
      if (out >= 0) {
        const q = this.byId[out];
        if (out === p.id) c[p.cbase + C.dropSameport]++;
        else if (q !== undefined && !q.broken) this.#deliver(q, src, pos, len);
        return;
      }
    }
    // Broadcast, multicast or unknown unicast: every other port.
    const ports = this.ports;
    for (let i = 0; i < ports.length; i++) {
      const q = ports[i];
      if (q !== p && !q.broken) this.#deliver(q, src, pos, len);
    }
  }

  #deliver(q: DpPort, src: SegList, pos: number, len: number): void {
    if (len > q.maxFrame) {
      this.#c[q.cbase + C.dropTooBig]++;
      return;
    }
    try {
      if (q.kind === PortKind.VHOST) this.#toGuest(q, src, pos, len);
      else this.#toTap(q, src, pos, len);
    } catch (e) {
      // A fault while writing to one destination stops that destination, not the
      // sender and not the other destinations of a flood (item 33).
      this.breakPort(q, `exception: ${(e as Error)?.stack ?? e}`);
    }
  }

  #toGuest(q: DpPort, src: SegList, pos: number, len: number): void {
    const c = this.#c;
    const ring = q.rx;
    if (ring === null) {
      c[q.cbase + C.dropNoBuffer]++;
      return;
    }
    // The guest's RX avail index is read again only when the chains we
    // already know of run out: one shared-memory load per burst, not per frame.
    let avail = q.rxKnown;
    if (avail === 0) {
      avail = ring.available();
      if (avail < 0) {
        this.breakPort(q, "RX avail index more than the ring size ahead");
        return;
      }
    }
    const hl = q.hdrLen;
    const need = hl + len;
    const dst = this.#dst;
    const heads = this.#heads, caps = this.#caps;
    dst.reset();
    let chains = 0;
    while (dst.total < need) {
      if (chains >= avail && chains < MAX_MERGE && (chains === 0 || q.mergeable)) {
        avail = ring.available(); // maybe the guest added buffers meanwhile
        if (avail < 0) avail = 0;
      }
      if (chains >= avail || chains >= MAX_MERGE || (chains > 0 && !q.mergeable)) {
        // Not enough buffers: give back what we took, the guest keeps them (item 26).
        ring.unget(chains);
        q.rxKnown = avail;
        c[q.cbase + C.dropNoBuffer]++;
        return;
      }
      const head = ring.nextHead();
      const got = ring.walk(head, dst, true);
      if (got < 0) {
        c[q.cbase + C.dropBadDescriptor]++;
        this.breakPort(q, `bad RX descriptor chain (${walkErrorName(got)})`);
        return;
      }
      heads[chains] = head;
      caps[chains] = got;
      chains++;
    }
    q.rxKnown = avail - chains;
    // Header: no offloads, num_buffers = chains (§5.1.6.4). Usually in one segment.
    if (dst.lens[0] >= hl) {
      const o = dst.offs[0];
      if (hl === NET_HDR_SIZE && (o & 3) === 0) {
        const w = dst.words[0], i = wordIndex(o);
        w[i] = 0;
        w[i + 1] = 0;
        w[i + 2] = chains << 16; // little-endian: bytes 10-11 hold num_buffers
      } else {
        const v = dst.views[0];
        for (let i = 0; i < hl; i++) v[o + i] = 0;
        if (hl === NET_HDR_SIZE) {
          v[o + NUM_BUFFERS_OFFSET] = chains & 0xff;
          v[o + NUM_BUFFERS_OFFSET + 1] = chains >>> 8;
        }
      }
    } else {
      this.#zeroHdr[NUM_BUFFERS_OFFSET] = hl === NET_HDR_SIZE ? chains : 0;
      this.#zeroHdrList.reset();
      this.#zeroHdrList.push(this.#zeroHdr, this.#zeroHdr32, 0, hl, this.#zeroHdrAddr);
      copySegments(dst, 0, this.#zeroHdrList, 0, hl);
      this.#zeroHdr[NUM_BUFFERS_OFFSET] = 0;
    }
    copySegments(dst, hl, src, pos, len);
    let remaining = need;
    for (let i = 0; i < chains; i++) {
      const l = caps[i] < remaining ? caps[i] : remaining;
      ring.pushUsed(heads[i], l);
      remaining -= l;
    }
    c[q.cbase + C.txPackets]++;
    c[q.cbase + C.txBytes] += len;
  }

  readonly #zeroHdrList = new SegList(1);

  #toTap(q: DpPort, src: SegList, pos: number, len: number): void {
    // Our own zeroed header, then the frame straight from the source buffers:
    // the guest's header is never passed on, so it cannot change under us (item 24).
    const iov = this.#iov;
    iov.clear();
    iov.push(this.#zeroHdrAddr, NET_HDR_SIZE);
    let left = len;
    for (let i = 0; i < src.count && left > 0; i++) {
      let l = src.lens[i];
      if (pos >= l) {
        pos -= l;
        continue;
      }
      l -= pos;
      if (l > left) l = left;
      iov.push(src.addrs[i] + pos, l);
      left -= l;
      pos = 0;
    }
    const n = libc.writev(q.fd, iov.bytes, iov.count);
    if (n < 0) {
      this.#c[q.cbase + C.dropTapError]++;
    } else {
      this.#c[q.cbase + C.txPackets]++;
      this.#c[q.cbase + C.txBytes] += len;
    }
  }
}

/** A WalkError code's name, for reports. */
export function walkErrorName(code: number): string {
  for (const [k, v] of Object.entries(WalkError)) if (v === code) return k;
  return `${code}`;
}
