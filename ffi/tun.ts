/**
 * /dev/net/tun: TAP devices with virtio-net headers (Documentation/networking/tuntap.rst).
 *
 * @module
 */

import { cString, libc } from "./libc.ts";
import { check } from "./errno.ts";
import {
  IFF_MULTI_QUEUE,
  IFF_NO_PI,
  IFF_TAP,
  IFF_VNET_HDR,
  O_CLOEXEC,
  O_NONBLOCK,
  O_RDWR,
  TUN_F_USO4,
  TUN_F_USO6,
  TUNSETIFF,
  TUNSETOFFLOAD,
  TUNSETVNETHDRSZ,
} from "./constants.ts";
import { IFREQ } from "./structs.ts";

/** Options for `openTap`. */
export interface TapOptions {
  /** Prepend a virtio-net header to every frame (IFF_VNET_HDR). Default true. */
  vnetHdr?: boolean;
  /** One fd per queue (IFF_MULTI_QUEUE). Default false. */
  multiQueue?: boolean;
}

/** An open TAP queue. */
export interface Tap {
  /** The fd (non-blocking, close-on-exec). */
  fd: number;
  /** The interface name the kernel gave (may differ from the request if it had %d). */
  name: string;
}

/**
 * Opens /dev/net/tun and attaches to (or creates) TAP `name` with
 * IFF_TAP | IFF_NO_PI [| IFF_VNET_HDR] [| IFF_MULTI_QUEUE].
 */
export function openTap(name: string, options: TapOptions = {}): Tap {
  const nameBytes = new TextEncoder().encode(name);
  if (nameBytes.length === 0 || nameBytes.length >= IFREQ.nameCapacity) {
    throw new RangeError(`Cannot open TAP ${name}: name must be 1..15 bytes`);
  }
  const fd = check(
    "open",
    libc.open(cString("/dev/net/tun"), O_RDWR | O_NONBLOCK | O_CLOEXEC, 0),
    "/dev/net/tun",
  );
  try {
    const ifr = new Uint8Array(IFREQ.size);
    ifr.set(nameBytes, IFREQ.ifr_name);
    let flags = IFF_TAP | IFF_NO_PI;
    if (options.vnetHdr ?? true) flags |= IFF_VNET_HDR;
    if (options.multiQueue) flags |= IFF_MULTI_QUEUE;
    new DataView(ifr.buffer).setInt16(IFREQ.ifr_flags, flags, true);
    check("ioctl", libc.ioctl(fd, TUNSETIFF, ifr), `TUNSETIFF ${name} on /dev/net/tun`);
    const end = ifr.indexOf(0);
    const actual = new TextDecoder().decode(ifr.subarray(0, end < 0 ? IFREQ.nameCapacity : end));
    return { fd, name: actual };
  } catch (e) {
    libc.close(fd);
    throw e;
  }
}

/** TUNSETVNETHDRSZ: the header size the TAP prepends (10, or 12 with num_buffers). */
export function setVnetHdrSize(fd: number, size: number): void {
  const arg = new Uint8Array(4);
  new DataView(arg.buffer).setInt32(0, size, true);
  check("ioctl", libc.ioctl(fd, TUNSETVNETHDRSZ, arg), `TUNSETVNETHDRSZ ${size}`);
}

/** TUNSETOFFLOAD: which offloads (TUN_F_*) we accept in frames the kernel sends us. */
export function setOffload(fd: number, flags: number): void {
  check("ioctl", libc.ioctl_int(fd, TUNSETOFFLOAD, flags), `TUNSETOFFLOAD ${flags}`);
}

/**
 * TUNSETOFFLOAD with `flags`, or without the USO flags when the kernel
 * does not know them (EINVAL before Linux 6.2). Returns the flags set.
 */
export function setOffloadBest(fd: number, flags: number): number {
  if (libc.ioctl_int(fd, TUNSETOFFLOAD, flags) >= 0) return flags;
  const older = flags & ~(TUN_F_USO4 | TUN_F_USO6);
  setOffload(fd, older);
  return older;
}

// <linux/sockios.h>, <net/if.h>
const SIOCGIFFLAGS = 0x8913;
const SIOCSIFFLAGS = 0x8914;
const SIOCGIFMTU = 0x8921;
const IFF_UP = 0x1;
const AF_INET = 2;
const SOCK_DGRAM = 2;

function ifreqFor(name: string): Uint8Array<ArrayBuffer> {
  const ifr = new Uint8Array(new ArrayBuffer(IFREQ.size));
  ifr.set(new TextEncoder().encode(name).subarray(0, IFREQ.nameCapacity - 1), IFREQ.ifr_name);
  return ifr;
}

function withInetSocket<T>(fn: (s: number) => T): T {
  const s = check("socket", libc.socket(AF_INET, SOCK_DGRAM | 0o2000000, 0), "AF_INET dgram");
  try {
    return fn(s);
  } finally {
    libc.close(s);
  }
}

/** Sets IFF_UP on interface `name` (SIOCGIFFLAGS / SIOCSIFFLAGS). */
export function setLinkUp(name: string): void {
  withInetSocket((s) => {
    const ifr = ifreqFor(name);
    check("ioctl", libc.ioctl(s, SIOCGIFFLAGS, ifr), `SIOCGIFFLAGS ${name}`);
    const v = new DataView(ifr.buffer);
    v.setInt16(IFREQ.ifr_flags, v.getInt16(IFREQ.ifr_flags, true) | IFF_UP, true);
    check("ioctl", libc.ioctl(s, SIOCSIFFLAGS, ifr), `SIOCSIFFLAGS ${name} up`);
  });
}

/** The interface's MTU (SIOCGIFMTU; ifr_mtu shares ifr_flags' offset). */
export function getMtu(name: string): number {
  return withInetSocket((s) => {
    const ifr = ifreqFor(name);
    check("ioctl", libc.ioctl(s, SIOCGIFMTU, ifr), `SIOCGIFMTU ${name}`);
    return new DataView(ifr.buffer).getInt32(IFREQ.ifr_flags, true);
  });
}
