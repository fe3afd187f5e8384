/**
 * The Internet checksum (RFC 1071) over bytes and over scatter lists,
 * allocating nothing.
 *
 * Sums are plain JS numbers. An "unfolded" sum is any non-negative integer
 * below 2^52 whose value mod 0xffff (ones' complement arithmetic, RFC 1071
 * §2(A): 2^16 ≡ 1) is the ones' complement sum; `fold16` reduces it to 16
 * bits. Every sum here is of the bytes read as big-endian 16-bit words,
 * starting with a high-order byte: the first byte of a range is the
 * high-order byte of its first word, an odd trailing byte is padded with a
 * zero low-order byte.
 *
 * Speed: long runs are summed as 32-bit words through the segment's
 * Uint32Array (`SegList.words`). The sum is byte-order independent (RFC 1071
 * §2(B)): the little-endian words of an x86 host sum to the byte-swapped
 * result, and a 32-bit sum folds like two 16-bit ones. A run that begins at
 * an odd position of the checksummed range contributes its sum byte-swapped
 * (§2(B) again: swapping is a rotation by 8 bits, multiplication by 2^8).
 * Figures: bench/net_bench.ts.
 *
 * @module
 */

import type { SegList } from "../virtio/chain.ts";
import { wordIndex } from "../virtio/chain.ts";

/** Below this many bytes a run is summed bytewise (no alignment prologue). */
const WORD_SUM_MIN = 16;
/**
 * Words summed per chunk: each of the two 16-bit-half accumulators then
 * stays below 8192 · 65535 < 2^30, a small integer (Smi) in V8.
 */
const WORD_CHUNK = 8192;

/** Folds an unfolded sum (< 2^53) into 16 bits (1..0xffff for a non-zero sum). */
export function fold16(sum: number): number {
  // `sum & 0xffff` is exact for any integer below 2^53 (ToInt32 keeps the low bits).
  while (sum > 0xffffffff) sum = (sum & 0xffff) + Math.floor(sum / 65536);
  sum = (sum & 0xffff) + (sum >>> 16); // ≤ 0x1fffe
  return (sum & 0xffff) + (sum >>> 16);
}

/** Swaps the two bytes of a 16-bit value. */
export function swap16(x: number): number {
  return ((x & 0xff) << 8) | (x >>> 8);
}

/**
 * Unfolded big-endian sum of `len` bytes of `v` from `off` (the first byte
 * is a high-order byte). A byte loop: for headers and short runs.
 */
export function sumBytes(v: Uint8Array, off: number, len: number): number {
  let acc = 0;
  const end = off + len - 1;
  let i = off;
  for (; i < end; i += 2) acc += (v[i] << 8) | v[i + 1];
  if (i === end) acc += v[i] << 8;
  return acc;
}

/**
 * Folded 16-bit sum of `len` (< 2^32) bytes of view `v` from `off`, as if
 * the first byte were a high-order byte. `w` is the 32-bit view of the same
 * memory (`w[j]` holds bytes 4j..4j+3 of `v`, as in SegList), used for the
 * aligned middle of runs of WORD_SUM_MIN bytes or more: four words per
 * iteration, each split into its 16-bit halves summed in two integer
 * accumulators (≈ 1.4× faster than one float accumulator of whole words,
 * bench/net_bench.ts). Assumes a little-endian host (x86, arm64).
 */
export function sumView(v: Uint8Array, w: Uint32Array, off: number, len: number): number {
  // No word view (a list built without one): bytewise, slower but right.
  if (len < WORD_SUM_MIN || w.length === 0) return fold16(sumBytes(v, off, len));
  const head = (4 - (off & 3)) & 3;
  let headSum = 0;
  if (head === 1) headSum = v[off] << 8;
  else if (head === 2) headSum = (v[off] << 8) | v[off + 1];
  else if (head === 3) headSum = ((v[off] << 8) | v[off + 1]) + (v[off + 2] << 8);
  let words = (len - head) >>> 2;
  const tail = (len - head) & 3;
  const tailOff = off + len - tail;
  let j = wordIndex(off + head);
  let body = 0;
  while (words > 0) {
    const n = words < WORD_CHUNK ? words : WORD_CHUNK;
    let lo = 0, hi = 0;
    const end4 = j + (n & ~3), end = j + n;
    for (; j < end4; j += 4) {
      const x0 = w[j], x1 = w[j + 1], x2 = w[j + 2], x3 = w[j + 3];
      lo += (x0 & 0xffff) + (x1 & 0xffff) + (x2 & 0xffff) + (x3 & 0xffff);
      hi += (x0 >>> 16) + (x1 >>> 16) + (x2 >>> 16) + (x3 >>> 16);
    }
    for (; j < end; j++) {
      const x = w[j];
      lo += x & 0xffff;
      hi += x >>> 16;
    }
    body += lo + hi; // lo + hi·2^16 ≡ lo + hi (mod 0xffff)
    words -= n;
  }
  let tailSum = 0;
  if (tail === 1) tailSum = v[tailOff] << 8;
  else if (tail === 2) tailSum = (v[tailOff] << 8) | v[tailOff + 1];
  else if (tail === 3) tailSum = ((v[tailOff] << 8) | v[tailOff + 1]) + (v[tailOff + 2] << 8);
  // `body` is the little-endian sum: swapped once for big-endian, and once
  // more if the aligned run starts at an odd position (head of 1 or 3 bytes);
  // the tail starts at the same parity as the aligned run.
  let b = fold16(body);
  let t = fold16(tailSum);
  if ((head & 1) === 0) b = swap16(b);
  else t = swap16(t);
  return fold16(headSum + b + t);
}

/**
 * Folded 16-bit sum of `initial` (unfolded, < 2^52) plus the `len` bytes at
 * logical position `pos` of `list`, across segment boundaries of any parity
 * (a segment that ends on an odd byte leaves the next segment's first byte
 * as a low-order byte). Stops early if the list ends first.
 */
export function sumSegments(list: SegList, pos: number, len: number, initial: number): number {
  let i = 0;
  const count = list.count;
  while (i < count && pos >= list.lens[i]) pos -= list.lens[i++];
  let acc = initial;
  let odd = 0;
  while (len > 0 && i < count) {
    let n = list.lens[i] - pos;
    if (n > len) n = len;
    const s = sumView(list.views[i], list.words[i], list.offs[i] + pos, n);
    acc += odd === 0 ? s : swap16(s);
    odd ^= n & 1;
    len -= n;
    pos = 0;
    i++;
  }
  return fold16(acc);
}

/**
 * Unfolded sum of the IPv4 pseudo header (RFC 793 §3.1, RFC 768): source
 * and destination address of the IPv4 header at `ipOff` of `hdr`, the
 * protocol, and the L4 length (header + payload).
 */
export function pseudoSumV4(
  hdr: Uint8Array,
  ipOff: number,
  l4Proto: number,
  l4Len: number,
): number {
  return sumBytes(hdr, ipOff + 12, 8) + l4Proto + (l4Len >>> 16) + (l4Len & 0xffff);
}

/**
 * Unfolded sum of the IPv6 pseudo header (RFC 8200 §8.1): source and
 * destination address of the IPv6 header at `ipOff`, the 32-bit upper-layer
 * length and the next header value.
 */
export function pseudoSumV6(
  hdr: Uint8Array,
  ipOff: number,
  l4Proto: number,
  l4Len: number,
): number {
  return sumBytes(hdr, ipOff + 8, 32) + l4Proto + (l4Len >>> 16) + (l4Len & 0xffff);
}

/** The ones' complement of the folded sum: an IPv4 header checksum. */
export function complement16(sum: number): number {
  return ~fold16(sum) & 0xffff;
}

/**
 * The checksum field value for a TCP/UDP checksum: the complement of the
 * folded sum, with 0 sent as 0xffff (RFC 768: 0 means "no checksum" for
 * UDP; for TCP both are the same ones' complement number, and Linux's
 * `CSUM_MANGLED_0` does the same for every protocol).
 */
export function finish(sum: number): number {
  const c = ~fold16(sum) & 0xffff;
  return c === 0 ? 0xffff : c;
}
