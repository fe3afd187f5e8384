/**
 * What a device knows of one vring, message by message ("Ring states" in
 * vhost-user.rst): its size, addresses, base, eventfds and whether it is
 * enabled, started (has a kick fd) and running in the dataplane.
 *
 * @module
 */

import { ProtocolError, requestName, VRING_NOFD_MASK } from "./protocol.ts";

/** One vring's state. */
export interface Vring {
  size: number;
  desc: number;
  used: number;
  avail: number;
  hasAddr: boolean;
  /** log_guest_addr when VHOST_VRING_F_LOG is set, else -1. */
  logAddr: number;
  base: number;
  kickFd: number;
  callFd: number;
  errFd: number;
  enabled: boolean;
  started: boolean;
  running: boolean;
}

/** A vring as it is before any message. */
export function freshVring(): Vring {
  return {
    size: 0,
    desc: 0,
    used: 0,
    avail: 0,
    hasAddr: false,
    logAddr: -1,
    base: 0,
    kickFd: -1,
    callFd: -1,
    errFd: -1,
    enabled: false,
    started: false,
    running: false,
  };
}

/**
 * The ring a SET_VRING_KICK / CALL / ERR payload names (bits 0–7) and its
 * no-fd bit (8), checked against the fds that came with it (items 10, 13).
 * Throws ProtocolError.
 */
export function vringFdTarget(
  request: number,
  view: DataView,
  fdCount: number,
  rings: number,
): { index: number; noFd: boolean } {
  const lo = view.getUint32(0, true);
  const hi = view.getUint32(4, true);
  // Only bits 0–8 are defined; anything above is a malformed index (item 10).
  if (hi !== 0 || (lo & ~0x1ff) !== 0) {
    throw new ProtocolError(
      `Cannot accept ${requestName(request)}: payload 0x${hi.toString(16)}${lo.toString(16)}`,
    );
  }
  const index = lo & 0xff;
  if (index >= rings) {
    throw new ProtocolError(`Cannot accept ${requestName(request)} for ring ${index}`);
  }
  const noFd = (lo & VRING_NOFD_MASK) !== 0;
  if (noFd !== (fdCount === 0) || fdCount > 1) {
    throw new ProtocolError(
      `Cannot accept ${requestName(request)}: no-fd bit ${
        noFd ? "set" : "clear"
      } with ${fdCount} fds`,
    );
  }
  return { index, noFd };
}
