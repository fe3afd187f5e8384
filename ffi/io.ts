/**
 * File descriptors: close, read and write (JS buffers or foreign memory),
 * readv/writev over iovec arrays built by the caller, unlink.
 *
 * The data path calls `libc.read`/`libc.writev` directly and counts
 * failures; these wrappers are for the control path and throw SysError.
 *
 * @module
 */

import { cString, libc } from "./libc.ts";
import { check } from "./errno.ts";
import { IOVEC, setU64 } from "./structs.ts";

/** close(2); throws SysError (EBADF for a bad fd). */
export function closeFd(fd: number): void {
  check("close", libc.close(fd), `fd ${fd}`);
}

/** Closes every fd in the list, ignoring errors (cleanup paths). */
export function closeAll(fds: Iterable<number>): void {
  for (const fd of fds) if (fd >= 0) libc.close(fd);
}

/** read(2) into a JS buffer; returns the byte count (0 at EOF). */
export function readFd(fd: number, buf: Uint8Array, len = buf.length): number {
  return check("read", libc.read(fd, buf, Math.min(len, buf.length)), `fd ${fd}`);
}

/** write(2) from a JS buffer; returns the byte count. */
export function writeFd(fd: number, buf: Uint8Array, len = buf.length): number {
  return check("write", libc.write(fd, buf, Math.min(len, buf.length)), `fd ${fd}`);
}

/** read(2) into foreign memory at `address` (e.g. inside an mmap'd region). */
export function readInto(fd: number, address: number, len: number): number {
  return check("read", libc.read_ptr(fd, Deno.UnsafePointer.create(BigInt(address)), len));
}

/** write(2) from foreign memory at `address`. */
export function writeFrom(fd: number, address: number, len: number): number {
  return check("write", libc.write_ptr(fd, Deno.UnsafePointer.create(BigInt(address)), len));
}

/**
 * A reusable array of iovecs in a JS buffer, for readv/writev. Entries hold
 * raw addresses, so they can point into guest memory with no copy.
 */
export class IovecArray {
  /** The iovec array itself, passed to readv/writev. */
  readonly bytes: Uint8Array<ArrayBuffer>;
  readonly #view: DataView;
  /** How many entries are in use. */
  count = 0;

  constructor(readonly capacity: number) {
    this.bytes = new Uint8Array(new ArrayBuffer(capacity * IOVEC.size));
    this.#view = new DataView(this.bytes.buffer);
  }

  /** Drops every entry. */
  clear(): void {
    this.count = 0;
  }

  /** Appends (address, len); returns false when full. */
  push(address: number, len: number): boolean {
    if (this.count >= this.capacity) return false;
    const o = this.count * IOVEC.size;
    setU64(this.#view, o + IOVEC.iov_base, address);
    setU64(this.#view, o + IOVEC.iov_len, len);
    this.count++;
    return true;
  }
}

/** The address of a JS-allocated buffer (it must stay referenced while used). */
export function bufferAddress(buf: Uint8Array): number {
  return Number(Deno.UnsafePointer.value(Deno.UnsafePointer.of(buf)));
}

/** readv(2) into the entries of `iov`. */
export function readvFd(fd: number, iov: IovecArray): number {
  return check("readv", libc.readv(fd, iov.bytes, iov.count), `fd ${fd}`);
}

/** writev(2) from the entries of `iov`. */
export function writevFd(fd: number, iov: IovecArray): number {
  return check("writev", libc.writev(fd, iov.bytes, iov.count), `fd ${fd}`);
}

/** unlink(2); a missing file is not an error. */
export function unlinkIfExists(path: string): void {
  if (libc.unlink(cString(path)) < 0) {
    // ENOENT is the expected case for a path that was never created.
    try {
      check("unlink", -1, path);
    } catch (e) {
      if ((e as { code?: string }).code !== "ENOENT") throw e;
    }
  }
}
