/**
 * errno names and the one error type for failing libc calls.
 * Values from Linux `include/uapi/asm-generic/errno-base.h` and `errno.h`.
 *
 * @module
 */

import { errno, strerror } from "./libc.ts";

/** Linux errno numbers by name (the ones this project can meet). */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EIO: 5,
  ENXIO: 6,
  E2BIG: 7,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  ENOTDIR: 20,
  EINVAL: 22,
  ENFILE: 23,
  EMFILE: 24,
  ENOTTY: 25,
  EFBIG: 27,
  ENOSPC: 28,
  ESPIPE: 29,
  EPIPE: 32,
  ERANGE: 34,
  ENAMETOOLONG: 36,
  ENOSYS: 38,
  EMSGSIZE: 90,
  EPROTONOSUPPORT: 93,
  EOPNOTSUPP: 95,
  EAFNOSUPPORT: 97,
  EADDRINUSE: 98,
  EADDRNOTAVAIL: 99,
  ENETDOWN: 100,
  ECONNABORTED: 103,
  ECONNRESET: 104,
  ENOBUFS: 105,
  EISCONN: 106,
  ENOTCONN: 107,
  ETIMEDOUT: 110,
  ECONNREFUSED: 111,
  EALREADY: 114,
  EINPROGRESS: 115,
} as const;

const NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(Errno).map(([name, code]) => [code, name]),
);

/** The symbolic name of an errno value (`EAGAIN`), or `E<number>` if unknown. */
export function errnoName(code: number): string {
  return NAMES[code] ?? `E${code}`;
}

/** A libc call failed: carries the call's name, errno number and name. */
export class SysError extends Error {
  /** The libc function that failed, e.g. `connect`. */
  readonly syscall: string;
  /** The errno value. */
  readonly errno: number;
  /** The errno name, e.g. `ECONNREFUSED`. */
  readonly code: string;

  /**
   * @param syscall the libc function that failed
   * @param code its errno
   * @param detail what it was doing, e.g. the path
   */
  constructor(syscall: string, code: number, detail?: string, options?: ErrorOptions) {
    const name = errnoName(code);
    const what = detail ? `${syscall} ${detail}` : syscall;
    super(`Cannot ${what}: ${name} (${strerror(code)})`, options);
    this.name = "SysError";
    this.syscall = syscall;
    this.errno = code;
    this.code = name;
  }
}

/**
 * Throws a SysError for `syscall` if `ret` is negative (reading errno at
 * once), otherwise returns `ret`.
 */
export function check(syscall: string, ret: number, detail?: string): number {
  if (ret < 0) throw new SysError(syscall, errno(), detail);
  return ret;
}
