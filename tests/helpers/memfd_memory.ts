/**
 * In-process guest memory for unit tests: a memfd mapped once, exposed as
 * regions the dataplane's GuestMemory can use, with little-endian writers.
 *
 * @module
 */

import { ftruncate, type Mapping, memfdCreate, mmap, munmap } from "../../ffi/memory.ts";
import { closeFd } from "../../ffi/io.ts";
import type { MappedRegion } from "../../src/types/memory.ts";

/** Guest-physical start of QEMU's RAM above 4 GiB. */
export const HIGH_GPA = 0x1_0000_0000;
/** RAM QEMU's q35 machine keeps below 4 GiB when the guest has 2.75 GiB or more. */
export const Q35_LOW = 0x8000_0000;

/** A memfd-backed memory, presented as regions at chosen guest-physical addresses. */
export class TestMemory {
  readonly fd: number;
  readonly map: Mapping;
  readonly bytes: Uint8Array;
  readonly view: DataView;
  readonly #extra: Mapping[] = [];

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

  /**
   * Regions the way QEMU hands a q35 guest's RAM to vhost-user and
   * src/vhost_user/memory_table.ts maps them: the first `low` bytes of the
   * memfd at guest-physical 0, the rest at HIGH_GPA, each region mapped on
   * its own (writes through `bytes` show in both: same pages). Memory of
   * `low` bytes or less is one region, the memfd's own mapping. Unmapped
   * by `close`.
   */
  qemuRegions(low = Q35_LOW): MappedRegion[] {
    if (this.size <= low) return this.regions();
    const a = mmap(this.fd, low), b = mmap(this.fd, this.size - low, low);
    this.#extra.push(a, b);
    return [
      { gpa: 0, size: low, address: a.address },
      { gpa: HIGH_GPA, size: this.size - low, address: b.address },
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
    for (const m of this.#extra) munmap(m);
    this.#extra.length = 0;
    munmap(this.map);
    closeFd(this.fd);
  }
}
