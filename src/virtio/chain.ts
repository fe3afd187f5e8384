/**
 * Scatter lists: where the bytes of one descriptor chain (or a staging
 * buffer) live, held in preallocated typed arrays so filling one allocates
 * nothing, and the copy between two of them.
 *
 * @module
 */

const EMPTY = new Uint8Array(0);

/** A reusable list of (view, offset, length, address) segments. */
export class SegList {
  /** The byte view each segment lies in. */
  readonly views: Uint8Array[];
  /** Offset of each segment inside its view. */
  readonly offs: Float64Array;
  /** Length of each segment. */
  readonly lens: Float64Array;
  /** Address of each segment in this process (for iovecs). */
  readonly addrs: Float64Array;
  /** Segments in use. */
  count = 0;
  /** Sum of the lengths in use. */
  total = 0;

  constructor(readonly capacity: number) {
    this.views = new Array<Uint8Array>(capacity).fill(EMPTY);
    this.offs = new Float64Array(capacity);
    this.lens = new Float64Array(capacity);
    this.addrs = new Float64Array(capacity);
  }

  /** Empties the list (views stay referenced until overwritten). */
  reset(): void {
    this.count = 0;
    this.total = 0;
  }

  /** Appends a segment; returns false when the list is full. */
  push(view: Uint8Array, off: number, len: number, addr: number): boolean {
    const i = this.count;
    if (i >= this.capacity) return false;
    this.views[i] = view;
    this.offs[i] = off;
    this.lens[i] = len;
    this.addrs[i] = addr;
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
 * Copies `n` bytes between two views. Short copies use a byte loop, which
 * allocates nothing; longer ones use `set` over a subarray, whose one small
 * allocation is cheaper than the loop beyond this size.
 */
export function copyBytes(
  dst: Uint8Array,
  dOff: number,
  src: Uint8Array,
  sOff: number,
  n: number,
): void {
  if (n <= 64) {
    for (let i = 0; i < n; i++) dst[dOff + i] = src[sOff + i];
  } else {
    dst.set(src.subarray(sOff, sOff + n), dOff);
  }
}

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
    copyBytes(dst.views[di], dst.offs[di] + dstPos, src.views[si], src.offs[si] + srcPos, n);
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
