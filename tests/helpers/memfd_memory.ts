/**
 * In-process guest memory for unit tests: a memfd mapped once, exposed as
 * regions the dataplane's GuestMemory can use, with little-endian writers.
 *
 * @module
 */

import { ftruncate, type Mapping, memfdCreate, mmap, munmap } from "../../ffi/memory.ts";
import { closeFd } from "../../ffi/io.ts";
import type { MappedRegion } from "../../src/types/memory.ts";

/** A memfd-backed memory, presented as regions at chosen guest-physical addresses. */
export class TestMemory {
  readonly fd: number;
  readonly map: Mapping;
  readonly bytes: Uint8Array;
  readonly view: DataView;

  constructor(readonly size: number) {
    this.fd = memfdCreate("test-guest");
    ftruncate(this.fd, size);
    this.map = mmap(this.fd, size);
    this.bytes = new Uint8Array(this.map.buffer);
    this.view = new DataView(this.map.buffer);
  }

  /** Regions: split at `splitAt` (bytes) if given, gpa = offset + gpaBase. */
  regions(gpaBase = 0, splitAt?: number): MappedRegion[] {
    if (splitAt === undefined) {
      return [{ gpa: gpaBase, size: this.size, address: this.map.address }];
    }
    return [
      { gpa: gpaBase, size: splitAt, address: this.map.address },
      { gpa: gpaBase + splitAt, size: this.size - splitAt, address: this.map.address + splitAt },
    ];
  }

  /** Writes a split-ring descriptor (§2.7.5) at table offset `table`. */
  desc(table: number, i: number, addr: number, len: number, flags: number, next: number): void {
    const o = table + 16 * i;
    this.view.setUint32(o, addr % 0x1_0000_0000, true);
    this.view.setUint32(o + 4, Math.floor(addr / 0x1_0000_0000), true);
    this.view.setUint32(o + 8, len, true);
    this.view.setUint16(o + 12, flags, true);
    this.view.setUint16(o + 14, next, true);
  }

  /** Unmaps and closes. */
  close(): void {
    munmap(this.map);
    closeFd(this.fd);
  }
}
