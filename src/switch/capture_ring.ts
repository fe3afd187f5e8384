/**
 * The capture ring: frames copied by the dataplane worker (producer) to
 * the main thread (consumer), which writes them to pcapng files. One
 * bounded byte ring in a SharedArrayBuffer, single producer, single
 * consumer. The worker never waits: a frame that does not fit is counted
 * as dropped for its port and the worker goes on.
 *
 * Capture off costs the data path one typed-array load per frame and hook
 * (`flags[port]`, a plain Int32Array read); everything else happens only
 * for ports whose flag has the frame's direction bit set.
 *
 * Record layout (every field a little-endian u32 word, records 4-aligned,
 * a record may wrap around the end of the ring word by word):
 *
 * | word | field                                                    |
 * | ---- | -------------------------------------------------------- |
 * | 0    | record length in bytes (header + data padded to 4)       |
 * | 1    | captured length                                          |
 * | 2    | original length                                          |
 * | 3    | port id (bits 0–15), direction (16–23), vnet flags (24–31) |
 * | 4    | gso_type (0–7), header length (8–15), gso_size (16–31)   |
 * | 5    | csum_start (0–15), csum_offset (16–31)                   |
 * | 6    | timestamp: seconds since the epoch                       |
 * | 7    | timestamp: microseconds                                  |
 *
 * Ordering: the producer writes the record, then publishes the new head
 * with `Atomics.store` (sequentially consistent: the record's plain writes
 * are visible before the head); the consumer reads the head with
 * `Atomics.load` before the record, and publishes its tail the same way
 * only after it copied the record out, so the producer never overwrites
 * bytes still being read.
 *
 * @module
 */

import type { SegList } from "../virtio/chain.ts";
import { MAX_PORTS } from "./counters.ts";

/** Direction bits in `flags[port]` and in records. */
export const Direction = {
  /** Received by the switch from the port (the guest's transmit). */
  RX: 1,
  /** Sent by the switch to the port (the guest's receive). */
  TX: 2,
} as const;

/** Largest number of frame bytes kept per packet (a 64 KiB GSO frame fits whole). */
export const SNAPLEN = 65536 + 64;
/** Default ring size: 8 MiB, about 130 full-size GSO frames or 5000 MTU frames. */
export const DEFAULT_RING_BYTES = 8 << 20;
/** Bytes of the record header. */
export const RECORD_HEADER = 32;

// Control block slots (Int32Array).
const HEAD = 0;
const TAIL = 1;
const FLAGS = 2;
const DROPPED = FLAGS + MAX_PORTS;
const OFFERED = DROPPED + MAX_PORTS;
const CONTROL_SLOTS = OFFERED + MAX_PORTS;

/** The two shared buffers of one ring, as sent to the worker. */
export interface CaptureBuffers {
  control: SharedArrayBuffer;
  data: SharedArrayBuffer;
}

/** Makes the shared buffers of a ring of `bytes` (a multiple of 4). */
export function createCaptureBuffers(bytes = DEFAULT_RING_BYTES): CaptureBuffers {
  if (bytes % 4 !== 0 || bytes < 4 * RECORD_HEADER) {
    throw new RangeError(`Cannot make a capture ring of ${bytes} bytes: need a multiple of 4`);
  }
  return {
    control: new SharedArrayBuffer(CONTROL_SLOTS * 4),
    data: new SharedArrayBuffer(bytes),
  };
}

/** The worker's end: `offer` copies one frame in, or counts it as dropped. */
export class CaptureProducer {
  /** Direction bits per port id; the engine reads `flags[id]` once per frame. */
  readonly flags: Int32Array;
  readonly #ctl: Int32Array;
  readonly #d8: Uint8Array;
  readonly #d32: Uint32Array;
  readonly #size: number;
  readonly #origin = performance.timeOrigin;

  constructor(buffers: CaptureBuffers) {
    this.#ctl = new Int32Array(buffers.control);
    this.flags = this.#ctl.subarray(FLAGS, FLAGS + MAX_PORTS);
    this.#d8 = new Uint8Array(buffers.data);
    this.#d32 = new Uint32Array(buffers.data);
    this.#size = buffers.data.byteLength;
  }

  /**
   * Copies `len` bytes at logical position `pos` of `list` (the frame, no
   * virtio-net header) into the ring with the header's fields, or counts a
   * drop when the consumer is behind. Allocates nothing.
   */
  offer(
    port: number,
    direction: number,
    list: SegList,
    pos: number,
    len: number,
    flags: number,
    gsoType: number,
    gsoSize: number,
    csumStart: number,
    csumOffset: number,
    hdrLen: number,
  ): boolean {
    const ctl = this.#ctl;
    Atomics.add(ctl, OFFERED + port, 1);
    const size = this.#size;
    const cap = len < SNAPLEN ? len : SNAPLEN;
    const rec = RECORD_HEADER + ((cap + 3) & ~3);
    const head = ctl[HEAD];
    const tail = Atomics.load(ctl, TAIL);
    // Keep 4 bytes free so head === tail always means empty.
    const free = (tail - head - 4 + size) % size;
    if (rec > free) {
      Atomics.add(ctl, DROPPED + port, 1);
      return false;
    }
    const t = this.#origin + performance.now();
    const sec = Math.floor(t / 1000);
    const d32 = this.#d32;
    const words = size >>> 2;
    let w = head >>> 2;
    d32[w] = rec;
    w = w + 1 === words ? 0 : w + 1;
    d32[w] = cap;
    w = w + 1 === words ? 0 : w + 1;
    d32[w] = len;
    w = w + 1 === words ? 0 : w + 1;
    d32[w] = (port & 0xffff) | ((direction & 0xff) << 16) | ((flags & 0xff) << 24);
    w = w + 1 === words ? 0 : w + 1;
    d32[w] = (gsoType & 0xff) | ((hdrLen & 0xff) << 8) | ((gsoSize & 0xffff) << 16);
    w = w + 1 === words ? 0 : w + 1;
    d32[w] = (csumStart & 0xffff) | ((csumOffset & 0xffff) << 16);
    w = w + 1 === words ? 0 : w + 1;
    d32[w] = sec;
    w = w + 1 === words ? 0 : w + 1;
    d32[w] = Math.floor((t - sec * 1000) * 1000);
    w = w + 1 === words ? 0 : w + 1;
    this.#copyIn(w << 2, list, pos, cap);
    Atomics.store(ctl, HEAD, (head + rec) % size);
    return true;
  }

  // Copies `n` bytes from the list into the ring at byte `at` (4-aligned), wrapping.
  #copyIn(at: number, list: SegList, pos: number, n: number): void {
    const size = this.#size;
    const d8 = this.#d8, d32 = this.#d32;
    let i = 0;
    while (i < list.count && pos >= list.lens[i]) pos -= list.lens[i++];
    for (; i < list.count && n > 0; i++) {
      let l = list.lens[i] - pos;
      if (l > n) l = n;
      const v = list.views[i];
      let s = list.offs[i] + pos;
      n -= l;
      pos = 0;
      // Word copy when both sides share the 4-byte phase and the run does not wrap.
      if (((s ^ at) & 3) === 0 && at + l <= size) {
        while ((at & 3) !== 0 && l > 0) {
          d8[at++] = v[s++];
          l--;
        }
        const src = list.words[i];
        let sw = s / 4, dw = at >>> 2;
        const words = l >>> 2;
        for (let k = 0; k < words; k++) d32[dw++] = src[sw++];
        s += words << 2;
        at += words << 2;
        l -= words << 2;
      }
      for (; l > 0; l--) {
        d8[at] = v[s++];
        at = at + 1 === size ? 0 : at + 1;
      }
      if (at === size) at = 0;
    }
  }
}

/** One record as the consumer sees it. */
export interface CaptureRecord {
  port: number;
  direction: number;
  /** The frame bytes (a copy, `capLen` long). */
  data: Uint8Array;
  origLen: number;
  /** virtio-net header fields (§5.1.6). */
  flags: number;
  gsoType: number;
  gsoSize: number;
  csumStart: number;
  csumOffset: number;
  hdrLen: number;
  /** Microseconds since the epoch. */
  timestampUs: number;
}

/** The main thread's end: enables ports, drains records, reads drop counts. */
export class CaptureConsumer {
  readonly #ctl: Int32Array;
  readonly #d8: Uint8Array;
  readonly #d32: Uint32Array;
  readonly #size: number;

  constructor(readonly buffers: CaptureBuffers) {
    this.#ctl = new Int32Array(buffers.control);
    this.#d8 = new Uint8Array(buffers.data);
    this.#d32 = new Uint32Array(buffers.data);
    this.#size = buffers.data.byteLength;
  }

  /** Sets the direction bits captured on `port` (0: off). */
  setFlags(port: number, directions: number): void {
    Atomics.store(this.#ctl, FLAGS + port, directions);
  }

  /** The direction bits of `port`. */
  flagsOf(port: number): number {
    return Atomics.load(this.#ctl, FLAGS + port);
  }

  /** Frames of `port` that did not fit in the ring. */
  dropped(port: number): number {
    return Atomics.load(this.#ctl, DROPPED + port) >>> 0;
  }

  /** Frames of `port` offered to the ring. */
  offered(port: number): number {
    return Atomics.load(this.#ctl, OFFERED + port) >>> 0;
  }

  /** Zeroes the counters of `port` (before a new capture on it). */
  resetCounters(port: number): void {
    Atomics.store(this.#ctl, DROPPED + port, 0);
    Atomics.store(this.#ctl, OFFERED + port, 0);
  }

  /** Calls `each` for every record in the ring, oldest first; returns how many. */
  drain(each: (r: CaptureRecord) => void, max = Infinity): number {
    const ctl = this.#ctl;
    const size = this.#size;
    const words = size >>> 2;
    const d32 = this.#d32;
    let tail = ctl[TAIL];
    const head = Atomics.load(ctl, HEAD);
    let n = 0;
    while (tail !== head && n < max) {
      let w = tail >>> 2;
      const word = () => {
        const v = d32[w];
        w = w + 1 === words ? 0 : w + 1;
        return v;
      };
      const rec = word();
      const cap = word();
      const origLen = word();
      const w3 = word(), w4 = word(), w5 = word();
      const sec = word(), usec = word();
      const data = new Uint8Array(cap);
      let at = w << 2;
      const first = Math.min(cap, size - at);
      data.set(this.#d8.subarray(at, at + first), 0);
      if (first < cap) data.set(this.#d8.subarray(0, cap - first), first);
      at = (at + cap) % size;
      each({
        port: w3 & 0xffff,
        direction: (w3 >>> 16) & 0xff,
        flags: w3 >>> 24,
        gsoType: w4 & 0xff,
        hdrLen: (w4 >>> 8) & 0xff,
        gsoSize: w4 >>> 16,
        csumStart: w5 & 0xffff,
        csumOffset: w5 >>> 16,
        origLen,
        data,
        timestampUs: sec * 1_000_000 + usec,
      });
      tail = (tail + rec) % size;
      Atomics.store(ctl, TAIL, tail);
      n++;
    }
    return n;
  }
}
