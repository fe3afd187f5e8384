/**
 * The driver of one TAP queue (a /dev/net/tun fd opened with IFF_VNET_HDR,
 * ffi/tun.ts): ingress reads a burst of frames, each with the kernel's
 * virtio-net header, into staging slots of the driver's own mapping;
 * egress is one `writev` per frame whose iovecs point at a header we
 * build and at the source buffers (no copy), or at a frame built in the
 * driver's segment buffer (software checksum or segmentation).
 *
 * Backpressure: a frame the engine holds back (its guest had no RX
 * buffer, engine.ts HOLD_MS) stays in its slot, parsed, and comes first
 * in the next burst; the kernel keeps the rest queued meanwhile, the way
 * QEMU stops reading a TAP while its guest has no buffers.
 *
 * The mapping lies in the copy window (address_window.ts), so copies out
 * of the slots and into the segment buffer stay allocation-free.
 *
 * @module
 */

import { libc } from "../../../ffi/libc.ts";
import { IovecArray } from "../../../ffi/io.ts";
import { type Mapping, mmap, munmap } from "../../../ffi/memory.ts";
import { MAP_ANONYMOUS, MAP_SHARED, PROT_READ, PROT_WRITE } from "../../../ffi/constants.ts";
import { SegList } from "../../virtio/chain.ts";
import { NET_HDR_SIZE } from "../../virtio/net_header.ts";
import type { Range } from "../../virtio/address_window.ts";
import { C } from "../counters.ts";
import type { DpPort } from "../dp_port.ts";
import { type Frame, makeBurst, MAX_GSO_FRAME, MAX_SEGS } from "../frame.ts";
import { PARSE_OK, parseFrame } from "../ingress.ts";
import { BURST, type PortDriver } from "./port_driver.ts";

/** One staging slot: a vnet header and the largest GSO frame the kernel sends, 4-aligned. */
const SLOT_SIZE = (NET_HDR_SIZE + MAX_GSO_FRAME + 3) & ~3;
/** After the slots: 64 bytes for the headers we write, then the segment buffer. */
const HDR_OFFSET = BURST * SLOT_SIZE;
/** SLOT_SIZE as read(2)'s size_t argument: a BigInt made once (ffi/libc.ts says why). */
const SLOT_BYTES = BigInt(SLOT_SIZE);
const SEG_OFFSET = HDR_OFFSET + 64;
/** A frame built for the TAP (a segment, or a completed checksum) fits here. */
export const TAP_SEG_SIZE = MAX_GSO_FRAME;
const MAP_SIZE = SEG_OFFSET + TAP_SEG_SIZE;

/** One TAP queue. */
export class TapQueue implements PortDriver {
  readonly burst: Frame[] = makeBurst(BURST);
  /** A TAP's frames are parsed as they are read (each failure frees its slot at once). */
  readonly parses = true;
  /** The driver's memory: staging slots, header area, segment buffer. */
  readonly #map: Mapping;
  readonly #bytes: Uint8Array;
  readonly #words: Uint32Array;
  /** One view per slot, made once (the `read` target). */
  readonly #slots: Uint8Array[] = [];
  /** Frames held back at the front of `burst`, already parsed. */
  #pending = 0;
  /** How many of those were counted and captured already (`complete`'s `seen`). */
  #pendingSeen = 0;
  readonly #iov = new IovecArray(MAX_SEGS + 2);
  readonly #hdr32: Uint32Array;
  readonly #hdrAddr: number;
  readonly #seg = new SegList(1);
  readonly #port: DpPort;
  readonly #c: Float64Array;

  constructor(
    port: DpPort,
    counters: Float64Array,
    /** The TAP fd (non-blocking, IFF_VNET_HDR with a 12-byte header). */
    readonly fd: number,
  ) {
    this.#port = port;
    this.#c = counters;
    // MAP_SHARED: a shareable mapping the copy window may map again elsewhere.
    this.#map = mmap(-1, MAP_SIZE, 0, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS);
    const buf = this.#map.buffer;
    this.#bytes = new Uint8Array(buf);
    this.#words = new Uint32Array(buf, 0, buf.byteLength >>> 2);
    for (let i = 0; i < BURST; i++) {
      this.#slots.push(new Uint8Array(buf, i * SLOT_SIZE, SLOT_SIZE));
      this.burst[i].slot = i;
    }
    this.#hdr32 = new Uint32Array(buf, HDR_OFFSET, 4);
    this.#hdrAddr = this.#map.address + HDR_OFFSET;
  }

  /** This mapping's range number in the copy windows (Engine.updateWindow sets it). */
  rangeId = -1;

  /** Where the driver's memory lies (for the copy window). */
  get range(): Range {
    return { address: this.#map.address, size: MAP_SIZE };
  }

  receive(max: number): number {
    const p = this.#port;
    const c = this.#c, cb = p.cbase;
    const burst = this.burst;
    const base = this.#map.address;
    const caps = p.ingressCaps, maxFrame = p.maxFrame;
    let k = this.#pending;
    this.#pending = 0;
    for (let i = 0; i < k; i++) burst[i].again = i < this.#pendingSeen;
    // At most `max` reads per round, whatever they yield (the kernel may be
    // flooded with frames the parser refuses: item 27's bound holds for TAPs too).
    for (let reads = k; k < max && reads < max; reads++) {
      const f = burst[k];
      const slot = f.slot;
      const n = libc.read(this.fd, this.#slots[slot], SLOT_BYTES);
      if (n < 0) break; // EAGAIN: drained (other errors show up as link state)
      if (n >= SLOT_SIZE) {
        c[cb + C.dropTooBig]++; // the kernel had more than we can hold: cut short
        continue;
      }
      const off = slot * SLOT_SIZE;
      f.segs.reset();
      f.segs.push(this.#bytes, this.#words, off, n, base + off, -1, this.rangeId);
      f.pos = NET_HDR_SIZE;
      f.len = n - NET_HDR_SIZE;
      // The kernel's header is checked like a guest's (CHECKLIST 39).
      const r = parseFrame(f, caps, maxFrame, true);
      if (r !== PARSE_OK) {
        c[cb + r]++;
        continue; // the slot is free again
      }
      f.out = 0;
      f.again = false;
      k++;
    }
    return k;
  }

  complete(n: number, taken: number, seen: number): void {
    if (taken >= n) return;
    // Held frames move to the front, in order, with their slots (records swap places).
    const burst = this.burst;
    for (let i = taken; i < n; i++) {
      const t = burst[i - taken];
      burst[i - taken] = burst[i];
      burst[i] = t;
    }
    this.#pending = n - taken;
    this.#pendingSeen = seen - taken;
  }

  flush(): void {
    // Nothing to publish: every write went out when it was made.
  }

  /** The segment buffer, as a one-segment list of `len` bytes (len ≤ TAP_SEG_SIZE). */
  segBuffer(len: number): SegList {
    const seg = this.#seg;
    seg.reset();
    seg.push(
      this.#bytes,
      this.#words,
      SEG_OFFSET,
      len,
      this.#map.address + SEG_OFFSET,
      -1,
      this.rangeId,
    );
    return seg;
  }

  /**
   * One frame to the TAP: our header (three little-endian words, from
   * validated values, never the guest's bytes: item 39) and `len` bytes of
   * `src` from `pos`, in one writev. With `head`, the frame's first
   * `headLen` bytes come from it (the validated header copy, staged in the
   * segment buffer) and only the rest from `src`. Returns false when the
   * write failed (counted).
   */
  write(
    src: SegList,
    pos: number,
    len: number,
    w0: number,
    w1: number,
    w2: number,
    head: Uint8Array | null,
    headLen: number,
  ): boolean {
    const h32 = this.#hdr32;
    h32[0] = w0;
    h32[1] = w1;
    h32[2] = w2 & 0xffff; // num_buffers 0: unused by the kernel on transmit
    const iov = this.#iov;
    iov.clear();
    iov.push(this.#hdrAddr, NET_HDR_SIZE);
    let left = len;
    if (head !== null && headLen > 0) {
      const v = this.#bytes;
      for (let i = 0; i < headLen; i++) v[SEG_OFFSET + i] = head[i];
      iov.push(this.#map.address + SEG_OFFSET, headLen);
      pos += headLen;
      left -= headLen;
    }
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
    if (libc.writev(this.fd, iov.bytes, iov.count) < 0) {
      this.#c[this.#port.cbase + C.dropTapError]++;
      return false;
    }
    return true;
  }

  /** Unmaps the driver's memory (control path, after the port left the engine). */
  close(): void {
    munmap(this.#map);
  }
}
