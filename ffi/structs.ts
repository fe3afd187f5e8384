/**
 * C struct layouts for x86-64 Linux, each declared once: its size and the
 * byte offset of every field we touch. `tests/ffi/structs_test.ts` compiles a
 * C program against the system headers and checks every number here.
 *
 * @module
 */

/** `struct sockaddr_un` (<sys/un.h>). */
export const SOCKADDR_UN = {
  size: 110,
  /** sa_family_t sun_family; — AF_UNIX. */
  sun_family: 0,
  /** char sun_path[108]; — NUL-terminated path. */
  sun_path: 2,
  /** Bytes available for the path, NUL included. */
  pathCapacity: 108,
} as const;

/** `struct iovec` (<sys/uio.h>). */
export const IOVEC = {
  size: 16,
  /** void *iov_base; */
  iov_base: 0,
  /** size_t iov_len; */
  iov_len: 8,
} as const;

/** `struct msghdr` (<sys/socket.h>). */
export const MSGHDR = {
  size: 56,
  /** void *msg_name; */
  msg_name: 0,
  /** socklen_t msg_namelen; */
  msg_namelen: 8,
  /** struct iovec *msg_iov; */
  msg_iov: 16,
  /** size_t msg_iovlen; */
  msg_iovlen: 24,
  /** void *msg_control; */
  msg_control: 32,
  /** size_t msg_controllen; */
  msg_controllen: 40,
  /** int msg_flags; — MSG_CTRUNC is reported here by recvmsg. */
  msg_flags: 48,
} as const;

/** `struct cmsghdr` (<sys/socket.h>); data follows at CMSG_DATA = 16. */
export const CMSGHDR = {
  size: 16,
  /** size_t cmsg_len; — CMSG_LEN(data bytes). */
  cmsg_len: 0,
  /** int cmsg_level; — SOL_SOCKET. */
  cmsg_level: 8,
  /** int cmsg_type; — SCM_RIGHTS. */
  cmsg_type: 12,
  /** Offset of the data (CMSG_DATA). */
  data: 16,
} as const;

/** CMSG_SPACE(n): header plus data rounded up to 8 bytes. */
export function cmsgSpace(dataBytes: number): number {
  return CMSGHDR.size + ((dataBytes + 7) & ~7);
}

/** CMSG_LEN(n): header plus data, unpadded. */
export function cmsgLen(dataBytes: number): number {
  return CMSGHDR.size + dataBytes;
}

/** `struct epoll_event` (<sys/epoll.h>): packed on x86-64, hence 12 bytes. */
export const EPOLL_EVENT = {
  size: 12,
  /** uint32_t events; */
  events: 0,
  /** epoll_data_t data; — we store a 32-bit token in its low half. */
  data: 4,
} as const;

/** `struct ifreq` (<net/if.h>), the fields TUNSETIFF uses. */
export const IFREQ = {
  size: 40,
  /** char ifr_name[IFNAMSIZ]; */
  ifr_name: 0,
  /** IFNAMSIZ, NUL included. */
  nameCapacity: 16,
  /** short ifr_flags; */
  ifr_flags: 16,
} as const;

/** `struct stat` (<sys/stat.h>), the fields we read. */
export const STAT = {
  size: 144,
  /** mode_t st_mode; */
  st_mode: 24,
  /** off_t st_size; */
  st_size: 48,
} as const;

/** 2^32, for splitting 64-bit values into two 32-bit halves. */
const TWO32 = 0x1_0000_0000;

/**
 * Reads a little-endian u64 as a number. Returns -1 when the value is not
 * exact in a double (high word ≥ 2^21, i.e. ≥ 2^53): callers treat that as
 * out of range rather than truncating (CHECKLIST item 28).
 */
export function getU64(view: DataView, offset: number): number {
  const hi = view.getUint32(offset + 4, true);
  if (hi >= 0x20_0000) return -1;
  return hi * TWO32 + view.getUint32(offset, true);
}

/** Writes a number (0 ≤ n < 2^53) as a little-endian u64 without a BigInt. */
export function setU64(view: DataView, offset: number, n: number): void {
  view.setUint32(offset, n >>> 0, true);
  view.setUint32(offset + 4, Math.floor(n / TWO32), true);
}
