/**
 * The dirty-page log of a live migration (vhost-user.rst "Migration"): a
 * bitmap shared with the frontend, one bit per 4 KiB guest-physical page
 * (`log[page / 8] |= 1 << page % 8`), set with atomic ORs because the
 * frontend reads and clears it concurrently (it syncs with atomic
 * exchanges). Pages are marked after the bytes were written: a mark made
 * before the write could be cleared by a sync that copies the page before
 * the write lands, and the write would be lost on the destination.
 *
 * Bounds: the log covers `size * 8` pages. A mark beyond it (a used ring
 * logged at a `log_guest_addr` past the log, memory hot-added beyond what
 * the log covers) is clamped: never written, counted in `beyond`.
 *
 * `Atomics.or` works on a Uint8Array over a non-shared buffer (the mapping
 * made by Deno.UnsafePointerView.getArrayBuffer), and compiles to a locked
 * OR on x86.
 *
 * @module
 */

import type { SegList } from "./chain.ts";

/** VHOST_LOG_PAGE: the logging granularity. */
export const LOG_PAGE = 0x1000;

/** Bytes of log that cover guest-physical addresses [0, end). */
export function logBytesFor(end: number): number {
  return Math.ceil(Math.ceil(end / LOG_PAGE) / 8);
}

/** A dirty-page bitmap mapped in this process. */
export class DirtyLog {
  /** The bitmap (byte `page / 8`, bit `page % 8`). */
  readonly bits: Uint8Array;
  /** Its size in bytes. */
  readonly size: number;
  readonly #counters: Float64Array;
  readonly #slot: number;

  /**
   * @param address where the log's first byte (guest page 0) is mapped here
   * @param size the log's size in bytes
   * @param counters/slot where pages beyond the log are counted
   */
  constructor(readonly address: number, size: number, counters: Float64Array, slot: number) {
    this.size = size;
    this.#counters = counters;
    this.#slot = slot;
    this.bits = new Uint8Array(
      Deno.UnsafePointerView.getArrayBuffer(Deno.UnsafePointer.create(BigInt(address))!, size),
    );
  }

  /**
   * Marks every page that `len` bytes at guest-physical `gpa` touch. Pages
   * are below 2^41 (addresses below 2^53), so division, not shifts; the
   * bit index `page & 7` only needs the low bits, which `&` keeps exact.
   */
  markRange(gpa: number, len: number): void {
    if (len <= 0) return;
    const first = Math.floor(gpa / LOG_PAGE);
    const last = Math.floor((gpa + len - 1) / LOG_PAGE);
    const bits = this.bits;
    const size = this.size;
    for (let page = first; page <= last; page++) {
      const byte = Math.floor(page / 8);
      if (byte >= size) {
        this.#counters[this.#slot] += last - page + 1;
        return;
      }
      Atomics.or(bits, byte, 1 << (page & 7));
    }
  }
}

/**
 * Marks the pages of the first `len` bytes of `list` (the bytes an RX
 * frame wrote: header and payload) by the guest-physical address of each
 * segment (`SegList.gpas`, filled by SplitRing.walk). Called once per
 * frame delivered to a guest whose port logs, after the copy.
 */
export function logSegments(log: DirtyLog, list: SegList, len: number): void {
  for (let i = 0; i < list.count && len > 0; i++) {
    const l = list.lens[i] < len ? list.lens[i] : len;
    log.markRange(list.gpas[i], l);
    len -= l;
  }
}
