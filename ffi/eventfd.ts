/**
 * eventfd(2): counters used for kicks, calls and worker wake-ups.
 *
 * @module
 */

import { errno, libc } from "./libc.ts";
import { check, SysError } from "./errno.ts";
import { EFD_CLOEXEC, EFD_NONBLOCK } from "./constants.ts";

/** eventfd(2), non-blocking and close-on-exec unless other flags are given. */
export function eventfdCreate(initval = 0, flags = EFD_NONBLOCK | EFD_CLOEXEC): number {
  return check("eventfd", libc.eventfd(initval, flags));
}

// One 8-byte buffer per thread: eventfd values are exchanged as u64.
const scratch = new Uint8Array(new ArrayBuffer(8));
const scratchView = new DataView(scratch.buffer);
/** The length argument of every read and write here: a BigInt made once (see libc.ts). */
const U64_BYTES = 8n;

/** Adds `n` (< 2^32) to the counter. Throws SysError on failure. */
export function eventfdWrite(fd: number, n = 1): void {
  scratchView.setUint32(0, n >>> 0, true);
  scratchView.setUint32(4, 0, true);
  check("write", libc.write(fd, scratch, U64_BYTES), `eventfd ${fd}`);
}

/**
 * Reads and resets the counter; returns 0 when it was already zero
 * (EAGAIN on a non-blocking eventfd).
 */
export function eventfdRead(fd: number): number {
  const r = libc.read(fd, scratch, U64_BYTES);
  if (r < 0) {
    const e = errno();
    if (e === 11 /* EAGAIN */) return 0;
    throw new SysError("read", e, `eventfd ${fd}`);
  }
  return scratchView.getUint32(4, true) * 0x1_0000_0000 + scratchView.getUint32(0, true);
}

/**
 * Signals an eventfd on the data path: no throw, returns false on failure
 * (the caller counts it). One call per burst, never per frame.
 */
export function eventfdSignal(fd: number): boolean {
  scratchView.setUint32(0, 1, true);
  scratchView.setUint32(4, 0, true);
  return libc.write(fd, scratch, U64_BYTES) === 8;
}
