/**
 * Scatter lists: where the bytes of one descriptor chain (or a staging
 * buffer) live, held in preallocated typed arrays so filling one allocates
 * nothing, and the copy between two of them.
 *
 * @module
 */

import { win } from "./address_window.ts";

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
  }

  /** Empties the list (views stay referenced until overwritten). */
  reset(): void {
    this.count = 0;
    this.total = 0;
  }

  /**
   * Appends a segment; returns false when the list is full. `gpa` is its
   * guest-physical address (default -1: not guest memory).
   */
  push(
    view: Uint8Array,
    words: Uint32Array,
    off: number,
    len: number,
    addr: number,
    gpa = -1,
  ): boolean {
    const i = this.count;
    if (i >= this.capacity) return false;
    this.views[i] = view;
    this.words[i] = words;
    this.offs[i] = off;
    this.lens[i] = len;
    this.addrs[i] = addr;
    this.gpas[i] = gpa;
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
 * through `copyWithin` on the address window (≈ 40 ns fixed + memmove).
 * The threshold comes from bench/copy_bench.ts.
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
  if (win.ok) {
    const from = src.addrs[si] + sPos - win.base;
    win.view.copyWithin(dst.addrs[di] + dPos - win.base, from, from + n);
  } else {
    dst.views[di].set(src.views[si].subarray(s, s + n), d);
  }
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
