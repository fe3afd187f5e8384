/**
 * The guest memory a frontend shares with SET_MEM_TABLE: validated, mapped
 * once per region (offset honoured), and translated for ring addresses
 * (frontend virtual) and descriptors (guest physical).
 *
 * Shrink policy (CHECKLIST item 7): a frontend that truncates a mapped file
 * turns our next access into SIGBUS, which would end the whole process. We
 * check with fstat that every region lies inside its file when it arrives,
 * and refuse fds that are not regular files (no size to check against).
 * For memfds we read the seals: a memfd sealed with F_SEAL_SHRINK cannot be
 * shrunk, and one without it is accepted with a warning (QEMU does not seal
 * its memory backends). hugetlbfs files cannot be sealed; they are accepted
 * on the same terms. So: a frontend that can write our socket is trusted not
 * to shrink its own memory under us; the README's security model says so.
 *
 * @module
 */

import type { MappedRegion } from "../types/memory.ts";
import { type FileStat, fstat, getSeals, type Mapping, mmap, munmap } from "../../ffi/memory.ts";
import { closeAll } from "../../ffi/io.ts";
import { F_SEAL_SHRINK, S_IFMT, S_IFREG } from "../../ffi/constants.ts";
import { getU64 } from "../../ffi/structs.ts";
import {
  MAX_MEM_SLOTS,
  MAX_REGIONS,
  MEM_HEADER_SIZE,
  MEM_REG_SIZE,
  MEM_REGION_SIZE,
} from "./protocol.ts";

/** One region as the frontend described it. */
export interface RegionDescriptor {
  /** Guest-physical start. */
  guestPhysAddr: number;
  /** Size in bytes. */
  size: number;
  /** Start in the frontend's virtual address space (ring addresses use it). */
  userAddr: number;
  /** Offset of the region inside its file. */
  mmapOffset: number;
}

/** A region as the dataplane sees it: where it is mapped here. */
/** A frontend-virtual range resolved to a region and an offset in it. */
export interface Translation {
  /** Region index. */
  region: number;
  /** Byte offset inside that region. */
  offset: number;
}

const PAGE = 4096;
const MAX_SAFE = Number.MAX_SAFE_INTEGER;

/** A malformed or unusable memory table. */
export class MemoryTableError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "MemoryTableError";
  }
}

/**
 * Parses a SET_MEM_TABLE payload. Throws MemoryTableError for a region
 * count of 0 or above 8, a count that disagrees with the payload size or
 * the fds, a zero-sized region, 64-bit values beyond 2^53, ranges that
 * overflow, and overlapping guest-physical or frontend-virtual ranges
 * (CHECKLIST items 5, 6, 8, 28).
 */
export function parseMemoryTable(payload: Uint8Array, fdCount: number): RegionDescriptor[] {
  if (payload.length < MEM_HEADER_SIZE) {
    throw new MemoryTableError(`Cannot parse memory table: payload of ${payload.length} bytes`);
  }
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const n = view.getUint32(0, true);
  if (n === 0 || n > MAX_REGIONS) {
    throw new MemoryTableError(`Cannot accept memory table: ${n} regions (1..${MAX_REGIONS})`);
  }
  if (payload.length !== MEM_HEADER_SIZE + n * MEM_REGION_SIZE) {
    throw new MemoryTableError(
      `Cannot accept memory table: ${n} regions need ${
        MEM_HEADER_SIZE + n * MEM_REGION_SIZE
      } bytes, got ${payload.length}`,
    );
  }
  if (fdCount !== n) {
    throw new MemoryTableError(`Cannot accept memory table: ${n} regions but ${fdCount} fds`);
  }
  const regions: RegionDescriptor[] = [];
  for (let i = 0; i < n; i++) {
    regions.push(readRegion(view, MEM_HEADER_SIZE + i * MEM_REGION_SIZE, i));
  }
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) checkDisjoint(regions[i], i, regions[j], j);
  }
  return regions;
}

// One region at offset `o`, every value bounded (items 6, 28).
function readRegion(view: DataView, o: number, i: number | string): RegionDescriptor {
  const r = {
    guestPhysAddr: getU64(view, o),
    size: getU64(view, o + 8),
    userAddr: getU64(view, o + 16),
    mmapOffset: getU64(view, o + 24),
  };
  for (const [k, v] of Object.entries(r)) {
    if (v < 0) throw new MemoryTableError(`Cannot accept region ${i}: ${k} beyond 2^53`);
  }
  if (r.size === 0) throw new MemoryTableError(`Cannot accept region ${i}: size 0`);
  if (
    r.guestPhysAddr + r.size > MAX_SAFE || r.userAddr + r.size > MAX_SAFE ||
    r.mmapOffset + r.size > MAX_SAFE
  ) {
    throw new MemoryTableError(`Cannot accept region ${i}: address + size overflows`);
  }
  return r;
}

// Item 8: no two regions share a guest-physical or frontend-virtual byte.
function checkDisjoint(a: RegionDescriptor, i: number | string, b: RegionDescriptor, j: number) {
  if (overlaps(a.guestPhysAddr, a.size, b.guestPhysAddr, b.size)) {
    throw new MemoryTableError(
      `Cannot accept regions ${i} and ${j}: guest-physical ranges overlap`,
    );
  }
  if (overlaps(a.userAddr, a.size, b.userAddr, b.size)) {
    throw new MemoryTableError(
      `Cannot accept regions ${i} and ${j}: frontend-virtual ranges overlap`,
    );
  }
}

/**
 * Parses an ADD_MEM_REG / REM_MEM_REG payload: u64 padding, then one
 * region (vhost-user.rst "Single memory region description"), bounded
 * like a SET_MEM_TABLE region.
 */
export function parseMemRegion(payload: Uint8Array): RegionDescriptor {
  if (payload.length !== MEM_REG_SIZE) {
    throw new MemoryTableError(
      `Cannot parse memory region: payload of ${payload.length} bytes, expected ${MEM_REG_SIZE}`,
    );
  }
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  return readRegion(view, 8, "new");
}

function overlaps(a: number, alen: number, b: number, blen: number): boolean {
  return a < b + blen && b < a + alen;
}

/** A memory table whose regions are mapped in this process. */
export class MemoryTable {
  readonly #mappings: Mapping[] = [];
  readonly #fds: number[] = [];
  readonly #regions: RegionDescriptor[] = [];
  /** Regions whose memfd is not sealed against shrinking (for a warning). */
  readonly unsealed: number[] = [];
  #closed = false;

  /**
   * Maps every region (taking ownership of `fds`: they are closed by
   * `close`, or at once if mapping fails). Throws MemoryTableError when a
   * region runs past the end of its file.
   */
  constructor(regions: RegionDescriptor[], fds: number[]) {
    try {
      for (let i = 0; i < regions.length; i++) this.#map(i, regions[i], fds[i]);
    } catch (e) {
      closeAll(fds.slice(this.#fds.length + 1)); // #map closed the one that failed
      this.close();
      throw e;
    }
  }

  /** The regions as the frontend described them. */
  get regions(): readonly RegionDescriptor[] {
    return this.#regions;
  }

  /** One past the highest guest-physical address (0 when empty). */
  get end(): number {
    let end = 0;
    for (const r of this.#regions) end = Math.max(end, r.guestPhysAddr + r.size);
    return end;
  }

  /**
   * ADD_MEM_REG: maps one more region (taking ownership of `fd`, closed at
   * once on failure). Throws MemoryTableError when every slot is taken, it
   * overlaps a region already mapped (item 8), or `#map` refuses it.
   */
  add(r: RegionDescriptor, fd: number): void {
    try {
      if (this.#regions.length >= MAX_MEM_SLOTS) {
        throw new MemoryTableError(`Cannot add a region: all ${MAX_MEM_SLOTS} slots in use`);
      }
      this.#regions.forEach((b, j) => checkDisjoint(r, "new", b, j));
    } catch (e) {
      closeAll([fd]);
      throw e;
    }
    this.#map(this.#regions.length, r, fd);
  }

  /**
   * REM_MEM_REG: unmaps the region with this guest address, user address
   * and size (the mmap offset is ignored, as the spec says). Returns false
   * when there is none. The dataplane must have let go of the table first.
   */
  remove(r: RegionDescriptor): boolean {
    const i = this.#regions.findIndex((x) =>
      x.guestPhysAddr === r.guestPhysAddr && x.userAddr === r.userAddr && x.size === r.size
    );
    if (i < 0) return false;
    munmap(this.#mappings[i]);
    closeAll([this.#fds[i]]);
    this.#mappings.splice(i, 1);
    this.#fds.splice(i, 1);
    this.#regions.splice(i, 1);
    const u = this.unsealed.filter((k) => k !== i).map((k) => (k > i ? k - 1 : k));
    this.unsealed.splice(0, this.unsealed.length, ...u);
    return true;
  }

  // Maps region `r` as slot `i`; owns `fd` from here on (closed on failure).
  #map(i: number, r: RegionDescriptor, fd: number): void {
    let m: Mapping;
    try {
      m = mapRegion(i, r, fd);
    } catch (e) {
      closeAll([fd]);
      throw e;
    }
    this.#mappings.push(m);
    this.#fds.push(fd);
    this.#regions.push(r);
    let seals = -1;
    try {
      seals = getSeals(fd);
    } catch { /* only for the warning */ }
    if (seals >= 0 && (seals & F_SEAL_SHRINK) === 0) this.unsealed.push(i);
  }

  /** Where each region is mapped here, for the dataplane. */
  mapped(): MappedRegion[] {
    return this.#regions.map((r, i) => ({
      gpa: r.guestPhysAddr,
      size: r.size,
      address: this.#mappings[i].address + (r.mmapOffset % PAGE),
      fd: this.#fds[i],
      fileOffset: r.mmapOffset,
    }));
  }

  /**
   * Resolves `len` bytes at frontend-virtual `addr` to one region, or null
   * when they are unmapped or cross a region's end.
   */
  translateUser(addr: number, len: number): Translation | null {
    for (let i = 0; i < this.#regions.length; i++) {
      const r = this.#regions[i];
      if (addr >= r.userAddr && addr + len <= r.userAddr + r.size) {
        return { region: i, offset: addr - r.userAddr };
      }
    }
    return null;
  }

  /** Unmaps every region and closes every fd; idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const m of this.#mappings) munmap(m);
    this.#mappings.length = 0;
    closeAll(this.#fds);
    this.#fds.length = 0;
    this.#regions.length = 0;
  }
}

/**
 * Maps one region of `fd` after the checks of item 7. Throws
 * MemoryTableError; the caller owns `fd` either way.
 */
function mapRegion(i: number, r: RegionDescriptor, fd: number): Mapping {
  let st: FileStat;
  try {
    st = fstat(fd);
  } catch (e) {
    throw new MemoryTableError(`Cannot map region ${i}: fstat failed`, { cause: e });
  }
  // Item 7: only a regular file (memfd, tmpfs, hugetlbfs) has a size to check
  // offset + size against. Anything else mmap accepts can fault past its end:
  // /dev/zero mapped at offset 4096 raises SIGBUS on the region's last page,
  // which would end the whole process (found by tests/fuzz, target a, seed 1).
  // QEMU and DPDK only send files, so refuse the rest.
  if ((st.mode & S_IFMT) !== S_IFREG) {
    throw new MemoryTableError(
      `Cannot map region ${i}: fd is not a regular file (mode 0o${st.mode.toString(8)})`,
    );
  }
  if (r.mmapOffset + r.size > st.size) {
    throw new MemoryTableError(
      `Cannot map region ${i}: offset ${r.mmapOffset} + size ${r.size} beyond the file's ${st.size} bytes`,
    );
  }
  // mmap needs a page-aligned offset; map from the page start and skip the rest.
  const aligned = r.mmapOffset - (r.mmapOffset % PAGE);
  const skew = r.mmapOffset - aligned;
  try {
    return mmap(fd, r.size + skew, aligned);
  } catch (e) {
    throw new MemoryTableError(`Cannot map region ${i} (${r.size} bytes)`, { cause: e });
  }
}
