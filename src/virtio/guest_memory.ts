/**
 * Guest memory as the dataplane sees it: one view of each kind per region,
 * made once when the table arrives, and guest-physical address translation
 * with a last-region cache. Nothing here allocates per call.
 *
 * @module
 */

import type { MappedRegion } from "../types/memory.ts";

/** The views and translation for one guest's memory. */
export class GuestMemory {
  /** Byte views, one per region. */
  readonly u8: Uint8Array[] = [];
  /** 16-bit views (ring indices and descriptor flags/next). */
  readonly u16: Uint16Array[] = [];
  /** 32-bit views (descriptor addresses and lengths, used elements). */
  readonly u32: Uint32Array[] = [];
  /** Guest-physical start of each region. */
  readonly gpa: Float64Array;
  /** Size of each region. */
  readonly size: Float64Array;
  /** Address of each region's first byte in this process (for iovecs). */
  readonly base: Float64Array;
  /**
   * Each region's index among the ranges of the copy windows
   * (address_window.ts updateWindow), set when they are rebuilt; -1 before.
   * SplitRing.walk hands it to SegList.push.
   */
  readonly range: Int32Array;
  /** Per region: the file it can be mapped from again (-1: none) and the offset there. */
  readonly fd: Int32Array;
  readonly fileOffset: Float64Array;
  /** Region of the last successful translation. */
  region = 0;
  #last = 0;

  constructor(regions: readonly MappedRegion[]) {
    const n = regions.length;
    this.gpa = new Float64Array(n);
    this.size = new Float64Array(n);
    this.base = new Float64Array(n);
    this.range = new Int32Array(n).fill(-1);
    this.fd = new Int32Array(n).fill(-1);
    this.fileOffset = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      const r = regions[i];
      const buf = Deno.UnsafePointerView.getArrayBuffer(
        Deno.UnsafePointer.create(BigInt(r.address))!,
        r.size,
      );
      this.u8.push(new Uint8Array(buf));
      // Regions start page-aligned in practice; views cover whole words only.
      // Math.floor, not `>>> 1`: regions of 4 GiB and more (CHECKLIST item 28's
      // 32-bit cousin) would get a truncated view, and rings past its end read
      // undefined or throw (found by tests/fuzz, targets a and b, seed 1).
      this.u16.push(new Uint16Array(buf, 0, Math.floor(r.size / 2)));
      this.u32.push(new Uint32Array(buf, 0, Math.floor(r.size / 4)));
      this.gpa[i] = r.gpa;
      this.size[i] = r.size;
      this.base[i] = r.address;
      this.fd[i] = r.fd ?? -1;
      this.fileOffset[i] = r.fileOffset ?? 0;
    }
  }

  /** Number of regions. */
  get count(): number {
    return this.gpa.length;
  }

  /**
   * Translates `len` bytes at guest-physical `addr` (both exact numbers).
   * Returns the offset inside the region (and sets `this.region`), or -1 if
   * any byte is unmapped or the range crosses a region's end
   * (CHECKLIST item 19).
   */
  translate(addr: number, len: number): number {
    const gpa = this.gpa, size = this.size;
    let i = this.#last;
    let off = addr - gpa[i];
    if (off >= 0 && off + len <= size[i]) {
      this.region = i;
      return off;
    }
    for (i = 0; i < gpa.length; i++) {
      off = addr - gpa[i];
      if (off >= 0 && off + len <= size[i]) {
        this.#last = i;
        this.region = i;
        return off;
      }
    }
    return -1;
  }
}
