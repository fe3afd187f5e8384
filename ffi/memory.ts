/**
 * Shared memory: memfd_create, ftruncate, fstat, fcntl seals, mmap/munmap,
 * address-space reservations and duplicate mappings (mremap).
 *
 * @module
 */

import { addressOf, cString, errno, libc, pointerAt } from "./libc.ts";
import { check, SysError } from "./errno.ts";
import { getU64, STAT } from "./structs.ts";
import {
  F_ADD_SEALS,
  F_GET_SEALS,
  MAP_ANONYMOUS,
  MAP_FAILED,
  MAP_FIXED,
  MAP_NORESERVE,
  MAP_PRIVATE,
  MAP_SHARED,
  MFD_ALLOW_SEALING,
  MFD_CLOEXEC,
  MREMAP_FIXED,
  MREMAP_MAYMOVE,
  PROT_NONE,
  PROT_READ,
  PROT_WRITE,
} from "./constants.ts";

/** memfd_create(2): an anonymous file, close-on-exec, sealable. */
export function memfdCreate(name: string, flags = MFD_CLOEXEC | MFD_ALLOW_SEALING): number {
  return check("memfd_create", libc.memfd_create(cString(name), flags), name);
}

/** ftruncate(2). */
export function ftruncate(fd: number, size: number): void {
  check("ftruncate", libc.ftruncate(fd, size), `fd ${fd} to ${size} bytes`);
}

/** What fstat(2) tells us about a file. */
export interface FileStat {
  /** st_size in bytes. */
  size: number;
  /** st_mode (type and permission bits). */
  mode: number;
}

/** fstat(2): size and mode. */
export function fstat(fd: number): FileStat {
  const buf = new Uint8Array(STAT.size);
  check("fstat", libc.fstat(fd, buf), `fd ${fd}`);
  const view = new DataView(buf.buffer);
  return { size: getU64(view, STAT.st_size), mode: view.getUint32(STAT.st_mode, true) };
}

/**
 * fcntl(F_GET_SEALS): the memfd's seals, or -1 when the fd is not a memfd
 * (EINVAL), e.g. a hugetlbfs or tmpfs file.
 */
export function getSeals(fd: number): number {
  const r = libc.fcntl(fd, F_GET_SEALS, 0);
  if (r >= 0) return r;
  const e = errno();
  if (e === 22 /* EINVAL */) return -1;
  throw new SysError("fcntl", e, `F_GET_SEALS on fd ${fd}`);
}

/** fcntl(F_ADD_SEALS). */
export function addSeals(fd: number, seals: number): void {
  check("fcntl", libc.fcntl(fd, F_ADD_SEALS, seals), `F_ADD_SEALS on fd ${fd}`);
}

/** fcntl(cmd, arg) with an int argument; returns the result. */
export function fcntl(fd: number, cmd: number, arg = 0): number {
  return check("fcntl", libc.fcntl(fd, cmd, arg), `cmd ${cmd} on fd ${fd}`);
}

/** A live mapping: unmap it exactly once with `munmap`. */
export interface Mapping {
  /** The mapping's start as a pointer. */
  pointer: Deno.PointerObject;
  /** The mapping's start as a number (exact: user addresses are < 2^47). */
  address: number;
  /** Its length in bytes. */
  length: number;
  /** A zero-copy view of the whole mapping. Invalid after munmap. */
  buffer: ArrayBuffer;
}

/** mmap(2) of `length` bytes of `fd` from `offset`, shared, read-write by default. */
export function mmap(
  fd: number,
  length: number,
  offset = 0,
  prot = PROT_READ | PROT_WRITE,
  flags = MAP_SHARED,
): Mapping {
  const p = libc.mmap(null, length, prot, flags, fd, offset);
  if (p === null || Deno.UnsafePointer.value(p) === MAP_FAILED) {
    throw new SysError("mmap", errno(), `${length} bytes of fd ${fd} at offset ${offset}`);
  }
  return {
    pointer: p,
    address: addressOf(p),
    length,
    buffer: Deno.UnsafePointerView.getArrayBuffer(p, length),
  };
}

/** munmap(2). Every view over the mapping must be dropped first. */
export function munmap(m: Mapping): void {
  check(
    "munmap",
    libc.munmap(m.pointer, m.length),
    `${m.length} bytes at 0x${m.address.toString(16)}`,
  );
}

/**
 * Reserves `length` bytes of address space: an anonymous PROT_NONE,
 * MAP_NORESERVE mapping, which commits no memory and counts against no
 * overcommit limit. Returns its address; release it with `unmapRange`.
 */
export function reserve(length: number): number {
  const p = libc.mmap(
    null,
    length,
    PROT_NONE,
    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
    -1,
    0,
  );
  if (p === null || Deno.UnsafePointer.value(p) === MAP_FAILED) {
    throw new SysError("mmap", errno(), `reserving ${length} bytes of address space`);
  }
  return addressOf(p);
}

/**
 * A second mapping of the `length` bytes at `from` (page-aligned, inside a
 * MAP_SHARED mapping), placed exactly at `to` over whatever is mapped there
 * (a reservation of ours). mremap(2) with old_size 0 does this: "If the
 * value of old_size is zero, and old_address refers to a shareable mapping
 * (see mmap(2) MAP_SHARED), then mremap() will create a new mapping of the
 * same pages" — same file pages, so a store through one address is seen
 * through the other. Private mappings are refused (EINVAL), and so are
 * hugetlbfs mappings, whose mremap may not grow (old_size 0 is growth).
 */
export function duplicateAt(from: number, length: number, to: number): void {
  const p = libc.mremap(
    pointerAt(from),
    0,
    length,
    MREMAP_MAYMOVE | MREMAP_FIXED,
    pointerAt(to),
  );
  if (p === null || Deno.UnsafePointer.value(p) === MAP_FAILED) {
    throw new SysError(
      "mremap",
      errno(),
      `duplicating ${length} bytes at 0x${from.toString(16)} to 0x${to.toString(16)}`,
    );
  }
}

/**
 * mmap(2) of `length` bytes of `fd` from `offset`, shared, read-write,
 * placed exactly at `to` over whatever is mapped there (a reservation of
 * ours): a second mapping of the same file pages, for memory that
 * `duplicateAt` cannot duplicate (hugetlbfs, whose mremap may not grow;
 * there `to`, `offset` and `length` must be huge-page aligned).
 */
export function mapFileAt(fd: number, offset: number, length: number, to: number): void {
  const p = libc.mmap(
    pointerAt(to),
    length,
    PROT_READ | PROT_WRITE,
    MAP_SHARED | MAP_FIXED,
    fd,
    offset,
  );
  if (p === null || addressOf(p) !== to) {
    throw new SysError(
      "mmap",
      errno(),
      `mapping ${length} bytes of fd ${fd} at offset ${offset} to 0x${to.toString(16)}`,
    );
  }
}

/** madvise(2) over a range given by address. */
export function madvise(address: number, length: number, advice: number): void {
  check(
    "madvise",
    libc.madvise(pointerAt(address), length, advice),
    `advice ${advice} for ${length} bytes at 0x${address.toString(16)}`,
  );
}

/** munmap(2) of a range given by address (a reservation and what was placed in it). */
export function unmapRange(address: number, length: number): void {
  check(
    "munmap",
    libc.munmap(pointerAt(address), length),
    `${length} bytes at 0x${address.toString(16)}`,
  );
}
