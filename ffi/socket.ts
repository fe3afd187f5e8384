/**
 * AF_UNIX stream sockets and SCM_RIGHTS fd passing (unix(7), cmsg(3)).
 *
 * @module
 */

import { bufferAddress, closeAll } from "./io.ts";
import { errno, libc } from "./libc.ts";
import { check, SysError } from "./errno.ts";
import {
  AF_UNIX,
  MSG_CMSG_CLOEXEC,
  MSG_CTRUNC,
  MSG_NOSIGNAL,
  SCM_RIGHTS,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  SOCK_STREAM,
  SOL_SOCKET,
} from "./constants.ts";
import {
  CMSGHDR,
  cmsgLen,
  cmsgSpace,
  getU64,
  IOVEC,
  MSGHDR,
  setU64,
  SOCKADDR_UN,
} from "./structs.ts";

const encoder = new TextEncoder();

/** Encodes a `struct sockaddr_un`; throws if the path does not fit. */
export function sockaddrUn(path: string): Uint8Array<ArrayBuffer> {
  const bytes = encoder.encode(path);
  if (bytes.length === 0 || bytes.length >= SOCKADDR_UN.pathCapacity) {
    throw new RangeError(
      `Cannot use socket path ${path}: ${bytes.length} bytes, limit ${
        SOCKADDR_UN.pathCapacity - 1
      }`,
    );
  }
  const addr = new Uint8Array(new ArrayBuffer(SOCKADDR_UN.size));
  new DataView(addr.buffer).setUint16(SOCKADDR_UN.sun_family, AF_UNIX, true);
  addr.set(bytes, SOCKADDR_UN.sun_path);
  return addr;
}

/** A new AF_UNIX stream socket, close-on-exec, non-blocking unless told otherwise. */
export function unixSocket(nonblocking = true): number {
  const type = SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0);
  return check("socket", libc.socket(AF_UNIX, type, 0), "AF_UNIX stream");
}

/** socketpair(2): two connected AF_UNIX stream sockets. */
export function socketPair(nonblocking = false): [number, number] {
  const sv = new Uint8Array(8);
  const type = SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0);
  check("socketpair", libc.socketpair(AF_UNIX, type, 0, sv), "AF_UNIX stream");
  const v = new DataView(sv.buffer);
  return [v.getInt32(0, true), v.getInt32(4, true)];
}

/** bind(2) + listen(2) on a path: a listening socket (non-blocking). */
export function listenUnix(path: string, backlog = 16): number {
  const fd = unixSocket(true);
  try {
    const addr = sockaddrUn(path);
    check("bind", libc.bind(fd, addr, SOCKADDR_UN.size), path);
    check("listen", libc.listen(fd, backlog), path);
    return fd;
  } catch (e) {
    libc.close(fd);
    throw e;
  }
}

/**
 * accept4(2) on a non-blocking listener: the new connection's fd
 * (non-blocking, close-on-exec), or -1 when none is pending (EAGAIN).
 */
export function acceptUnix(listenFd: number): number {
  const fd = libc.accept4(listenFd, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd >= 0) return fd;
  const e = errno();
  if (e === 11 /* EAGAIN */ || e === 103 /* ECONNABORTED */) return -1;
  throw new SysError("accept4", e, `on fd ${listenFd}`);
}

/**
 * connect(2) to a socket path. Returns the connected fd; throws SysError
 * (ENOENT, ECONNREFUSED, …) when nobody listens there.
 */
export function connectUnix(path: string, nonblocking = true): number {
  // Connect blocking (it completes at once for AF_UNIX), then switch modes.
  const fd = unixSocket(false);
  try {
    check("connect", libc.connect(fd, sockaddrUn(path), SOCKADDR_UN.size), path);
    if (nonblocking) check("fcntl", libc.fcntl(fd, 4, /* F_SETFL */ 0o4000 /* O_NONBLOCK */));
    return fd;
  } catch (e) {
    libc.close(fd);
    throw e;
  }
}

/** The outcome of one `recv`. */
export interface Received {
  /** Bytes received into the buffer (0 means the peer closed). */
  bytes: number;
  /** File descriptors that came with them (SCM_RIGHTS), in order. */
  fds: number[];
}

/**
 * A reusable msghdr + iovec + control buffer for one socket's sendmsg /
 * recvmsg with SCM_RIGHTS. Holds every buffer the kernel sees alive.
 */
export class MessageIo {
  readonly #hdr = new Uint8Array(new ArrayBuffer(MSGHDR.size));
  readonly #hdrView = new DataView(this.#hdr.buffer);
  readonly #iov = new Uint8Array(new ArrayBuffer(IOVEC.size));
  readonly #iovView = new DataView(this.#iov.buffer);
  readonly #control: Uint8Array<ArrayBuffer>;
  readonly #controlView: DataView;

  /** @param maxFds the most fds one message may carry; more is MSG_CTRUNC. */
  constructor(readonly maxFds: number) {
    this.#control = new Uint8Array(new ArrayBuffer(cmsgSpace(4 * Math.max(1, maxFds))));
    this.#controlView = new DataView(this.#control.buffer);
  }

  #prepare(buf: Uint8Array, len: number, controlLen: number): void {
    this.#hdr.fill(0);
    setU64(this.#iovView, IOVEC.iov_base, bufferAddress(buf));
    setU64(this.#iovView, IOVEC.iov_len, len);
    setU64(this.#hdrView, MSGHDR.msg_iov, bufferAddress(this.#iov));
    setU64(this.#hdrView, MSGHDR.msg_iovlen, 1);
    if (controlLen > 0) {
      setU64(this.#hdrView, MSGHDR.msg_control, bufferAddress(this.#control));
      setU64(this.#hdrView, MSGHDR.msg_controllen, controlLen);
    }
  }

  /**
   * sendmsg(2) of `len` bytes of `buf` with `fds` attached (SCM_RIGHTS).
   * Returns bytes sent; throws SysError (EAGAIN when the socket is full).
   */
  send(fd: number, buf: Uint8Array, len = buf.length, fds: readonly number[] = []): number {
    if (fds.length > this.maxFds) {
      throw new RangeError(`Cannot send ${fds.length} fds: limit ${this.maxFds}`);
    }
    const controlLen = fds.length > 0 ? cmsgSpace(4 * fds.length) : 0;
    this.#prepare(buf, len, controlLen);
    if (fds.length > 0) {
      this.#control.fill(0);
      setU64(this.#controlView, CMSGHDR.cmsg_len, cmsgLen(4 * fds.length));
      this.#controlView.setInt32(CMSGHDR.cmsg_level, SOL_SOCKET, true);
      this.#controlView.setInt32(CMSGHDR.cmsg_type, SCM_RIGHTS, true);
      for (let i = 0; i < fds.length; i++) {
        this.#controlView.setInt32(CMSGHDR.data + 4 * i, fds[i], true);
      }
    }
    return check("sendmsg", libc.sendmsg(fd, this.#hdr, MSG_NOSIGNAL), `on fd ${fd}`);
  }

  /**
   * recvmsg(2) of up to `len` bytes into `buf`, collecting SCM_RIGHTS fds
   * (close-on-exec). Returns -1 for EAGAIN. If the control data was
   * truncated (MSG_CTRUNC: more fds than `maxFds`), every fd that did
   * arrive is closed and a SysError-like Error is thrown.
   */
  recv(fd: number, buf: Uint8Array, len = buf.length): Received | null {
    this.#prepare(buf, len, this.#control.length);
    this.#control.fill(0);
    const n = libc.recvmsg(fd, this.#hdr, MSG_CMSG_CLOEXEC);
    if (n < 0) {
      const e = errno();
      if (e === 11 /* EAGAIN */) return null;
      throw new SysError("recvmsg", e, `on fd ${fd}`);
    }
    const fds = this.#parseFds();
    const flags = this.#hdrView.getInt32(MSGHDR.msg_flags, true);
    if (flags & MSG_CTRUNC) {
      closeAll(fds);
      throw new Error(
        `Cannot receive message on fd ${fd}: control data truncated (MSG_CTRUNC), ` +
          `more than ${this.maxFds} fds sent; closed the ${fds.length} that arrived`,
      );
    }
    return { bytes: n, fds };
  }

  #parseFds(): number[] {
    const fds: number[] = [];
    const v = this.#controlView;
    const total = Math.min(getU64(this.#hdrView, MSGHDR.msg_controllen), this.#control.length);
    let off = 0;
    while (off + CMSGHDR.size <= total) {
      const len = getU64(v, off + CMSGHDR.cmsg_len);
      if (len < CMSGHDR.size || off + len > total) break;
      if (
        v.getInt32(off + CMSGHDR.cmsg_level, true) === SOL_SOCKET &&
        v.getInt32(off + CMSGHDR.cmsg_type, true) === SCM_RIGHTS
      ) {
        const count = (len - CMSGHDR.size) >> 2;
        for (let i = 0; i < count; i++) fds.push(v.getInt32(off + CMSGHDR.data + 4 * i, true));
      }
      off += (len + 7) & ~7;
    }
    return fds;
  }
}
