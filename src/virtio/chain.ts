/**
 * Scatter lists: where the bytes of one descriptor chain (or a staging
 * buffer) live, held in preallocated typed arrays so filling one allocates
 * nothing, and the copy between two of them.
 *
 * @module
 */

import { CHUNK, win } from "./address_window.ts";

const EMPTY8 = new Uint8Array(0);
const EMPTY32 = new Uint32Array(0);
const TWO32 = 0x1_0000_0000;

/**
 * The 32-bit word index of a 4-aligned byte offset in a segment's view.
 * `>>> 2` alone wraps offsets of 2^32 and more (regions above 4 GiB) to
 * offset mod 2^32 (CHECKLIST item 28's 32-bit cousin; found by tests/fuzz,
 * target b2, seed 1); a plain division costs ~25 ns per 64-byte copy
 * (bench/forward_bench.ts "copy 64 B": 63 → 87 ns), so the shift stays for
 * the usual offsets below 2^32. Small enough for V8 to inline.
 */
export function wordIndex(offset: number): number {
  return offset < TWO32 ? offset >>> 2 : offset / 4;
}

/** A reusable list of (view, offset, length, address) segments. */
export class SegList {
  /** The byte view each segment lies in. */
  readonly views: Uint8Array[];
  /** The 32-bit view of the same memory (for word copies). */
  readonly words: Uint32Array[];
  /** Offset of each segment inside its view. */
  readonly offs: Float64Array;
  /** Length of each segment. */
  readonly lens: Float64Array;
  /** Address of each segment in this process (iovecs, window copies). */
  readonly addrs: Float64Array;
  /**
   * Guest-physical address of each segment (-1 for our own buffers), for
   * the dirty-page log of a migration (dirty_log.ts).
   */
  readonly gpas: Float64Array;
  /**
   * Mapped range of each segment (its index as passed to `updateWindow`):
   * a copy long enough to take a window works out the chunk from it
   * (address_window.ts), so the short copies of small frames never pay
   * for that lookup.
   */
  readonly range: Int32Array;
  /** Segments in use. */
  count = 0;
  /** Sum of the lengths in use. */
  total = 0;

  constructor(readonly capacity: number) {
    this.views = new Array<Uint8Array>(capacity).fill(EMPTY8);
    this.words = new Array<Uint32Array>(capacity).fill(EMPTY32);
    this.offs = new Float64Array(capacity);
    this.lens = new Float64Array(capacity);
    this.addrs = new Float64Array(capacity);
    this.gpas = new Float64Array(capacity);
    this.range = new Int32Array(capacity);
  }

  /** Empties the list (views stay referenced until overwritten). */
  reset(): void {
    this.count = 0;
    this.total = 0;
  }

  /**
   * Appends a segment; returns false when the list is full. `gpa` is its
   * guest-physical address (default -1: not guest memory). `range` is the
   * index of the mapped range it lies in, as passed to `updateWindow`
   * (GuestMemory.range; default 0, the engine's scratch memory, which
   * Engine.updateWindow passes first). A copy takes a window only where
   * its bytes lie wholly inside that range and one chunk's span, checked
   * against the window as it is at copy time, so a wrong or stale range
   * costs speed (the word loop), never wrong bytes.
   */
  push(
    view: Uint8Array,
    words: Uint32Array,
    off: number,
    len: number,
    addr: number,
    gpa = -1,
    range = 0,
  ): boolean {
    const i = this.count;
    if (i >= this.capacity) return false;
    // Compared first: a store of an object into an array pays V8's write
    // barrier, and the same region's views come back frame after frame.
    if (this.views[i] !== view) this.views[i] = view;
    if (this.words[i] !== words) this.words[i] = words;
    this.offs[i] = off;
    this.lens[i] = len;
    this.addrs[i] = addr;
    this.gpas[i] = gpa;
    this.range[i] = range;
    this.count = i + 1;
    this.total += len;
    return true;
  }

  /** The byte at logical position `pos` (slow path for split headers). */
  byteAt(pos: number): number {
    for (let i = 0; i < this.count; i++) {
      const l = this.lens[i];
      if (pos < l) return this.views[i][this.offs[i] + pos];
      pos -= l;
    }
    return 0;
  }
}

/**
 * Copies `n` bytes from segment `si` of `src` at `sPos` to segment `di` of
 * `dst` at `dPos`, allocating nothing. Up to WORD_COPY_MAX bytes with equal
 * 4-byte phase go through a 32-bit word loop (64 B ≈ 10 ns); the rest go
 * through `copyWithin` on the window holding both segments' chunks
 * (address_window.ts; ≈ 40 ns fixed + memmove), or the word loop when
 * there is none. The threshold comes from bench/copy_bench.ts.
 */
function copyPiece(
  dst: SegList,
  di: number,
  dPos: number,
  src: SegList,
  si: number,
  sPos: number,
  n: number,
): void {
  let d = dst.offs[di] + dPos;
  let s = src.offs[si] + sPos;
  if (n <= WORD_COPY_MAX && ((d ^ s) & 3) === 0) {
    // Inline rather than a wordCopy call: 64 B frames all come this way.
    const d8 = dst.views[di], s8 = src.views[si];
    while ((d & 3) !== 0 && n > 0) {
      d8[d++] = s8[s++];
      n--;
    }
    const d32 = dst.words[di], s32 = src.words[si];
    let dw = wordIndex(d), sw = wordIndex(s); // both 4-aligned here
    const words = n >>> 2;
    for (let i = 0; i < words; i++) d32[dw++] = s32[sw++];
    d += words << 2;
    s += words << 2;
    for (let i = words << 2; i < n; i++) d8[d++] = s8[s++];
    return;
  }
  const w = win;
  const sa = src.addrs[si] + sPos, da = dst.addrs[di] + dPos;
  if (w.single) {
    const from = sa - w.base, to = da - w.base;
    if (from >= 0 && from + n <= w.span && to >= 0 && to + n <= w.span) {
      w.views[0].copyWithin(to, from, from + n);
      return;
    }
  } else if (w.packed) {
    // Each range once in views[0] (address_window.ts): its bytes from the segment's range.
    const from = packedAt(w, src.range[si], sa, n), to = packedAt(w, dst.range[di], da, n);
    if (from >= 0 && to >= 0) {
      w.views[0].copyWithin(to, from, from + n);
      return;
    }
  } else {
    const a = chunkAt(w, src.range[si], sa, n);
    const aOff = chunkOff;
    const b = chunkAt(w, dst.range[di], da, n);
    if (a >= 0 && b >= 0) {
      const k = a * w.chunks + b;
      if (w.has[k] !== 0) {
        const from = w.srcAt[k] + aOff;
        w.views[k].copyWithin(w.dstAt[k] + chunkOff, from, from + n);
        return;
      }
    }
  }
  if (w.legacy) dst.views[di].set(src.views[si].subarray(s, s + n), d);
  else wordCopy(dst.views[di], dst.words[di], d, src.views[si], src.words[si], s, n);
}

/**
 * Packed mode: where `n` bytes at `addr` of range `range` lie in the one
 * view, or -1 if the range does not hold them (a wrong or stale range).
 */
function packedAt(w: typeof win, range: number, addr: number, n: number): number {
  if (range < 0 || range >= w.ranges) return -1;
  const rel = addr - w.rangeStart[range];
  return rel >= 0 && rel + n <= w.rangeSize[range] ? w.rangeAt[range] + rel : -1;
}

/** Set by `chunkAt`: the offset of the bytes in their chunk. */
let chunkOff = 0;

/**
 * The chunk holding `n` bytes at `addr` of range `range` in window state
 * `w`, or -1 if the range does not hold them or they reach past the
 * chunk's span; sets `chunkOff` (a module variable: nothing allocated).
 */
function chunkAt(w: typeof win, range: number, addr: number, n: number): number {
  if (range < 0 || range >= w.ranges) return -1;
  const rel = addr - w.rangeStart[range];
  if (rel < 0 || rel + n > w.rangeSize[range]) return -1;
  const j = rel < CHUNK ? 0 : Math.floor(rel / CHUNK);
  const c = rel - j * CHUNK;
  const k = w.rangeFirst[range] + j;
  if (c + n > w.chunkLen[k]) return -1;
  chunkOff = c;
  return k;
}

/**
 * The window chunk segment `i` of `list` lies in now and its offset there
 * (chunk 0 in single and packed mode), or chunk -1 if its copies would take the word
 * loop. For tests and benchmarks (it allocates).
 */
export function segmentChunk(list: SegList, i: number): { chunk: number; offset: number } {
  const w = win, addr = list.addrs[i], n = list.lens[i];
  if (w.single) {
    const ok = addr >= w.base && addr + n <= w.base + w.span;
    return { chunk: ok ? 0 : -1, offset: ok ? addr - w.base : 0 };
  }
  if (w.packed) {
    const at = packedAt(w, list.range[i], addr, n);
    return { chunk: at >= 0 ? 0 : -1, offset: at >= 0 ? at : 0 };
  }
  const chunk = chunkAt(w, list.range[i], addr, n);
  return { chunk, offset: chunk >= 0 ? chunkOff : 0 };
}

/**
 * Copies `n` bytes from byte `s` of `s8` to byte `d` of `d8` through their
 * 32-bit views (`s32`, `d32`: the same memory), allocating nothing at any
 * offset once optimized: bytes until `d` is 4-aligned, then whole words
 * (shifted together from two source words when the phases differ), then
 * the tail bytes.
 */
function wordCopy(
  d8: Uint8Array,
  d32: Uint32Array,
  d: number,
  s8: Uint8Array,
  s32: Uint32Array,
  s: number,
  n: number,
): void {
  while ((d & 3) !== 0 && n > 0) {
    d8[d++] = s8[s++];
    n--;
  }
  let dw = wordIndex(d);
  const r = s & 3;
  let words = 0;
  if (r === 0) {
    let sw = wordIndex(s);
    words = n >>> 2;
    for (let i = 0; i < words; i++) d32[dw++] = s32[sw++];
  } else if (n >= 8) {
    // Little-endian: destination word i is source bytes s+4i..s+4i+3, the
    // top 4-r bytes of source word q+i and the low r bytes of word q+i+1
    // (q: the word holding byte s). Never reads past the segment's end.
    const lo = r * 8, hi = 32 - lo;
    let sw = wordIndex(s - r);
    words = (n - 4) >>> 2;
    let cur = s32[sw++];
    for (let i = 0; i < words; i++) {
      const next = s32[sw++];
      d32[dw++] = (cur >>> lo) | (next << hi);
      cur = next;
    }
  }
  const done = words * 4;
  d += done;
  s += done;
  for (let i = done; i < n; i++) d8[d++] = s8[s++];
}

/** Longest copy done with the word loop (bench/copy_bench.ts). */
export const WORD_COPY_MAX = 256;

/**
 * Copies `len` bytes from logical position `srcPos` of `src` to logical
 * position `dstPos` of `dst`, across segment boundaries on both sides.
 * Returns the bytes copied (less than `len` if either side runs out).
 */
export function copySegments(
  dst: SegList,
  dstPos: number,
  src: SegList,
  srcPos: number,
  len: number,
): number {
  let si = 0, di = 0;
  while (si < src.count && srcPos >= src.lens[si]) srcPos -= src.lens[si++];
  while (di < dst.count && dstPos >= dst.lens[di]) dstPos -= dst.lens[di++];
  let done = 0;
  while (done < len && si < src.count && di < dst.count) {
    const sAvail = src.lens[si] - srcPos;
    const dAvail = dst.lens[di] - dstPos;
    let n = len - done;
    if (sAvail < n) n = sAvail;
    if (dAvail < n) n = dAvail;
    copyPiece(dst, di, dstPos, src, si, srcPos, n);
    done += n;
    srcPos += n;
    dstPos += n;
    if (srcPos === src.lens[si]) {
      si++;
      srcPos = 0;
    }
    if (dstPos === dst.lens[di]) {
      di++;
      dstPos = 0;
    }
  }
  return done;
}
