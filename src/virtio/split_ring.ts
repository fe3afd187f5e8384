/**
 * The device side of a split virtqueue (VIRTIO 1.2 §2.7): avail ring
 * reading, descriptor-chain walking with every bound from CHECKLIST items
 * 15–21 and 24, used ring writing, and notification flags.
 *
 * Layout (§2.7.2): desc[size] of 16 B {u64 addr; u32 len; u16 flags; u16
 * next}; avail {u16 flags; u16 idx; u16 ring[size]; u16 used_event}; used
 * {u16 flags; u16 idx; {u32 id; u32 len} ring[size]; u16 avail_event}.
 *
 * Memory ordering: the guest runs on other CPUs. `avail.idx` is read with
 * Atomics.load, so no ring entry or descriptor read can move before it;
 * used entries are plain stores followed by an Atomics.store of `used.idx`
 * (sequentially consistent: on x86 an xchg, so the entries are visible
 * before the index, and later loads of avail.flags cannot pass it).
 *
 * Migration (vhost-user.rst "Migration"): with a dirty log set and
 * VHOST_VRING_F_LOG on the ring, every publish marks the used entries it
 * wrote and the used index, and setNoNotify marks the flags or
 * avail_event it wrote, at the ring's `log_guest_addr`; after the writes.
 *
 * @module
 */

import type { GuestMemory } from "./guest_memory.ts";
import type { SegList } from "./chain.ts";
import type { DirtyLog } from "./dirty_log.ts";
import type { Virtqueue, VirtqueueOptions } from "./virtqueue.ts";

export type { VirtqueueOptions } from "./virtqueue.ts";

/** §2.7.5: descriptor continues via `next`. */
export const VIRTQ_DESC_F_NEXT = 1;
/** §2.7.5: device writes this buffer. */
export const VIRTQ_DESC_F_WRITE = 2;
/** §2.7.5.3: buffer holds an indirect descriptor table. */
export const VIRTQ_DESC_F_INDIRECT = 4;
/** §2.7.6: driver asks for no interrupt. */
export const VRING_AVAIL_F_NO_INTERRUPT = 1;
/** §2.7.8: device asks for no kick. */
export const VRING_USED_F_NO_NOTIFY = 1;

/** Chain walk outcomes (negative: the chain is bad and gets dropped). */
export const WalkError = {
  /** Head or `next` index beyond the table (item 16). */
  INDEX: -1,
  /** More hops than the table has entries: a loop (item 17). */
  LOOP: -2,
  /** Bad indirect table: length 0 / not ×16 / too big / nested / with NEXT / not negotiated (item 18). */
  INDIRECT: -3,
  /** Address unmapped, overflowing, beyond 2^53 or crossing a region (items 19, 28). */
  ADDRESS: -4,
  /** Writable buffer in a device-readable chain or the reverse (item 20). */
  DIRECTION: -5,
  /** More segments than we track, or more bytes than allowed (item 21). */
  TOO_LONG: -6,
} as const;

const TWO32 = 0x1_0000_0000;
const HIGH_LIMIT = 0x20_0000; // high word ≥ 2^21 means ≥ 2^53

/** Device-side state of one split virtqueue. */
export class SplitRing implements Virtqueue {
  /** Queue size (power of two, ≤ 32768). */
  readonly size: number;
  readonly #mask: number;
  readonly #mem: GuestMemory;
  readonly #desc: Uint32Array;
  readonly #descWord: number;
  readonly #avail: Uint16Array;
  readonly #availHalf: number;
  readonly #used16: Uint16Array;
  readonly #used32: Uint32Array;
  readonly #usedHalf: number;
  readonly #usedWord: number;
  /** Next avail entry we will read (free-running 16-bit). */
  lastAvail: number;
  /** Next used entry we will write (free-running 16-bit). */
  usedIdx: number;
  /** Used entries written but not yet published. */
  pendingUsed = 0;
  /** Whether INDIRECT_DESC was negotiated. */
  readonly indirect: boolean;
  /** Whether EVENT_IDX was negotiated (§2.7.7, §2.7.10). */
  readonly eventIdx: boolean;
  /** used.idx as last published (for the need-event rule). */
  #published: number;
  /** avail.ring[size]: used_event, written by the driver. */
  readonly #usedEventHalf: number;
  /** used.ring[size]: avail_event, written by us. */
  readonly #availEventHalf: number;
  /** Largest total byte count a device-readable chain may have. */
  readonly maxReadable: number;
  /** log_guest_addr of the used ring, or -1: its writes are not logged. */
  usedLogAddr = -1;
  /** The dirty log used-ring writes go to (null: not logging). */
  #log: DirtyLog | null = null;
  /** usedLogAddr as of the last setLog. */
  #logUsed = 0;

  /** A split ring over `options` (validated by the control plane). */
  constructor(options: VirtqueueOptions) {
    const { mem, size, desc, avail, used } = options;
    const base = options.base ?? 0;
    this.size = size;
    this.#mask = size - 1;
    this.#mem = mem;
    // Offsets are aligned (the device checked), so plain division is exact.
    // Not `>>>`: in a region of 4 GiB or more an offset ≥ 2^32 would wrap and
    // the ring would be read and written at offset mod 2^32 (CHECKLIST item
    // 28's 32-bit cousin; found by tests/fuzz, target b, seed 1).
    this.#desc = mem.u32[desc.region];
    this.#descWord = desc.offset / 4;
    this.#avail = mem.u16[avail.region];
    this.#availHalf = avail.offset / 2;
    this.#used16 = mem.u16[used.region];
    this.#used32 = mem.u32[used.region];
    this.#usedHalf = used.offset / 2;
    this.#usedWord = used.offset / 4;
    this.lastAvail = base & 0xffff;
    this.usedIdx = base & 0xffff;
    this.indirect = options.indirect;
    this.maxReadable = options.maxReadable;
    this.eventIdx = options.eventIdx;
    this.usedLogAddr = options.logUsed ?? -1;
    this.#published = this.usedIdx;
    this.#usedEventHalf = this.#availHalf + 2 + size;
    this.#availEventHalf = this.#usedHalf + 2 + 4 * size;
  }

  /**
   * How many chains the guest has made available, read once. Returns -1 if
   * avail.idx is more than the ring size ahead (item 15): the queue is broken.
   */
  available(): number {
    const idx = Atomics.load(this.#avail, this.#availHalf + 1);
    const n = (idx - this.lastAvail) & 0xffff;
    return n > this.size ? -1 : n;
  }

  /** Takes the next available head index (the caller checked `available`). */
  nextHead(): number {
    const head = this.#avail[this.#availHalf + 2 + (this.lastAvail & this.#mask)];
    this.lastAvail = (this.lastAvail + 1) & 0xffff;
    return head;
  }

  /** Gives back the last `n` heads taken (an RX frame that did not fit). */
  unget(n: number): void {
    this.lastAvail = (this.lastAvail - n) & 0xffff;
  }

  /**
   * Walks the chain at `head`, appending its buffers to `out` (which the
   * caller resets), each descriptor read once into locals. `writable` is
   * the direction every buffer must have. Returns the chain's byte count,
   * or a WalkError code.
   */
  walk(head: number, out: SegList, writable: boolean): number {
    if (head < this.size) {
      // Straight paths for the chain shapes Linux's virtio_net and DPDK's
      // virtio-user send with ANY_LAYOUT (§5.1.6.1): one direct descriptor
      // holding header and frame (also how both post RX buffers), or the
      // header and one data descriptor. The same checks in the same order as
      // the general walk (the fuzzer compares them), each field read once.
      const table = this.#desc;
      const w = this.#descWord + (head << 2);
      const flagsNext = table[w + 3];
      if ((flagsNext & VIRTQ_DESC_F_INDIRECT) === 0) {
        const start = out.total;
        const limit = writable ? Number.MAX_SAFE_INTEGER : this.maxReadable;
        if ((flagsNext & VIRTQ_DESC_F_NEXT) === 0) {
          const e = this.#take(table, w, flagsNext, out, writable);
          if (e !== 0) return e;
          const total = out.total - start;
          return total > limit ? WalkError.TOO_LONG : total;
        }
        const next = flagsNext >>> 16;
        if (next < this.size && this.size > 1) {
          const w2 = this.#descWord + (next << 2);
          const flagsNext2 = table[w2 + 3];
          if ((flagsNext2 & (VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_INDIRECT)) === 0) {
            let e = this.#take(table, w, flagsNext, out, writable);
            if (e !== 0) return e;
            if (out.total - start > limit) return WalkError.TOO_LONG;
            e = this.#take(table, w2, flagsNext2, out, writable);
            if (e !== 0) return e;
            const total = out.total - start;
            return total > limit ? WalkError.TOO_LONG : total;
          }
        }
      }
    }
    return this.#walkLoop(head, out, writable);
  }

  // The general walk: any length, indirect tables, and every error. Its own
  // function so that `walk`, the straight paths alone, is small enough for
  // TurboFan to inline where chains are popped (V8 inlines nothing above
  // 460 bytes of bytecode; the whole walk was above it).
  #walkLoop(head: number, out: SegList, writable: boolean): number {
    const mem = this.#mem;
    const start = out.total;
    let table = this.#desc;
    let word = this.#descWord;
    let tableSize = this.size;
    let idx = head;
    let hops = 0;
    let nested = false;
    const limit = writable ? Number.MAX_SAFE_INTEGER : this.maxReadable;
    for (;;) {
      if (idx >= tableSize) return WalkError.INDEX;
      if (++hops > tableSize) return WalkError.LOOP;
      const w = word + (idx << 2);
      const flagsNext = table[w + 3];
      const flags = flagsNext & 0xffff;
      if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0) {
        // §2.7.5.3.1: only as the whole chain, never with NEXT, never nested.
        if (!this.indirect || nested || hops !== 1 || (flags & VIRTQ_DESC_F_NEXT) !== 0) {
          return WalkError.INDIRECT;
        }
        const len = table[w + 2];
        if (len === 0 || (len & 15) !== 0 || (len >>> 4) > this.size) return WalkError.INDIRECT;
        const hi = table[w + 1];
        if (hi >= HIGH_LIMIT) return WalkError.ADDRESS;
        const off = mem.translate(hi * TWO32 + table[w], len);
        if (off < 0 || (off & 3) !== 0) return WalkError.ADDRESS;
        table = mem.u32[mem.region];
        word = off / 4;
        tableSize = len >>> 4;
        idx = 0;
        hops = 0;
        nested = true;
        continue;
      }
      const e = this.#take(table, w, flagsNext, out, writable);
      if (e !== 0) return e;
      if (out.total - start > limit) return WalkError.TOO_LONG;
      if ((flags & VIRTQ_DESC_F_NEXT) === 0) return out.total - start;
      idx = flagsNext >>> 16;
    }
  }

  // One direct descriptor (at word `w` of `table`, its flags word read already) into
  // `out`: 0, or its WalkError. Each field is read once; a zero-length one adds nothing.
  #take(table: Uint32Array, w: number, flagsNext: number, out: SegList, writable: boolean): number {
    if (((flagsNext & VIRTQ_DESC_F_WRITE) !== 0) !== writable) return WalkError.DIRECTION;
    const len = table[w + 2];
    if (len === 0) return 0;
    const hi = table[w + 1];
    if (hi >= HIGH_LIMIT) return WalkError.ADDRESS;
    const gpa = hi * TWO32 + table[w];
    const mem = this.#mem;
    const off = mem.translate(gpa, len);
    if (off < 0) return WalkError.ADDRESS;
    const r = mem.region;
    return out.push(mem.u8[r], mem.u32[r], off, len, mem.base[r] + off, gpa, mem.range[r])
      ? 0
      : WalkError.TOO_LONG;
  }

  /** Writes a used element (§2.7.8); published by `publish`. */
  pushUsed(head: number, len: number): void {
    const e = this.#usedWord + 1 + ((this.usedIdx & this.#mask) << 1);
    this.#used32[e] = head;
    this.#used32[e + 1] = len;
    this.usedIdx = (this.usedIdx + 1) & 0xffff;
    this.pendingUsed++;
  }

  /**
   * Publishes pending used elements with one index store. Returns true if
   * the guest wants an interrupt: with EVENT_IDX when used_event lies in
   * the span just published (§2.7.7.2, wraparound included), otherwise
   * unless it set NO_INTERRUPT.
   */
  publish(): boolean {
    if (this.pendingUsed === 0) return false;
    this.pendingUsed = 0;
    const next = this.usedIdx;
    const old = this.#published;
    this.#published = next;
    // Seq-cst store: entries visible before the index, and the used_event
    // load below cannot be hoisted above it (the guest may just have moved it).
    Atomics.store(this.#used16, this.#usedHalf + 1, next);
    if (this.#log !== null) this.#logPublished(old, next);
    if (this.eventIdx) {
      const event = Atomics.load(this.#avail, this.#usedEventHalf);
      return needEvent(event, next, old);
    }
    return (this.#avail[this.#availHalf] & VRING_AVAIL_F_NO_INTERRUPT) === 0;
  }

  /**
   * Asks the guest not to kick while we poll (on), or to kick for the next
   * buffer it adds (off). With EVENT_IDX that is avail_event = lastAvail
   * (§2.7.10); polling simply leaves avail_event behind. Without it,
   * VRING_USED_F_NO_NOTIFY. The store is seq-cst, so the caller's re-check
   * of avail.idx after turning kicks on cannot miss a buffer.
   */
  setNoNotify(on: boolean): void {
    if (this.eventIdx) {
      if (!on) {
        Atomics.store(this.#used16, this.#availEventHalf, this.lastAvail);
        this.#log?.markRange(this.#logUsed + 4 + 8 * this.size, 2);
      }
      return;
    }
    Atomics.store(this.#used16, this.#usedHalf, on ? VRING_USED_F_NO_NOTIFY : 0);
    this.#log?.markRange(this.#logUsed, 2);
  }

  /**
   * Logs used-ring writes into `log` at `usedLogAddr` (when that is set:
   * VHOST_VRING_F_LOG), or stops logging them (null). Control path: the
   * worker calls it between rounds.
   */
  setLog(log: DirtyLog | null): void {
    this.#log = this.usedLogAddr >= 0 ? log : null;
    this.#logUsed = this.usedLogAddr;
  }

  // The entries of [old, next) (one range, or two when they wrap) and the index.
  #logPublished(old: number, next: number): void {
    const log = this.#log!;
    const base = this.#logUsed;
    let count = (next - old) & 0xffff;
    if (count > this.size) count = this.size; // every entry, once
    const first = old & this.#mask;
    const tail = this.size - first;
    if (count <= tail) {
      log.markRange(base + 4 + 8 * first, 8 * count);
    } else {
      log.markRange(base + 4 + 8 * first, 8 * tail);
      log.markRange(base + 4, 8 * (count - tail));
    }
    log.markRange(base + 2, 2);
  }
}

/**
 * vring_need_event (§2.7.7.2): true if `event` lies in [old, next), all
 * indices free-running modulo 2^16.
 */
export function needEvent(event: number, next: number, old: number): boolean {
  return ((next - event - 1) & 0xffff) < ((next - old) & 0xffff);
}

/** Bytes each split-ring part needs for `size` entries (§2.7). */
export function ringPartSizes(size: number): { desc: number; avail: number; used: number } {
  return { desc: 16 * size, avail: 6 + 2 * size, used: 6 + 8 * size };
}
