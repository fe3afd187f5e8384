/**
 * What a virtio-net header asks for, checked against the packet it came
 * with and the features the ingress port negotiated (CHECKLIST items 23,
 * 34–37), and what one egress port can take as it is.
 *
 * The header is read once into a `NetHeader` (net_header.ts) and the
 * packet parsed once from a copy of its first bytes (packet.ts); these
 * functions look only at those numbers.
 *
 * Decisions taken from VIRTIO 1.2 §5.1.6.2 (packet transmission):
 * - DATA_VALID and RSC_INFO are device → driver bits; a driver MUST NOT set
 *   them (§5.1.6.2.1) and the device MUST ignore flag bits it does not
 *   recognise (§5.1.6.2.2): they are ignored, never passed on.
 * - A GSO type other than NONE requires NEEDS_CSUM (§5.1.6.2.1 "the driver
 *   MUST also set the VIRTIO_NET_HDR_F_NEEDS_CSUM bit"): refused without.
 * - hdr_len is a hint the device "MUST NOT rely on" (§5.1.6.2.2) unless
 *   GUEST_HDRLEN: header lengths come from our own parse. For GSO frames it
 *   must still lie inside the frame and not be shorter than the real
 *   headers (item 35). Linux sends skb_headlen() (virtio_net_hdr_from_skb),
 *   which is at least the headers — except behind a TAP, where a
 *   hardware-accelerated VLAN tag is inserted after hdr_len was taken: 4
 *   bytes per tag are allowed for that. For GSO_NONE, Linux sends 0: not
 *   checked.
 * - Legacy UFO (GSO_UDP) is never negotiated and refused; USO (UDP_L4)
 *   needs HOST_USO.
 *
 * @module
 */

import type { NetHeader } from "../virtio/net_header.ts";
import {
  ETH_HLEN,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_ECN,
  VIRTIO_NET_HDR_GSO_NONE,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_GSO_TCPV6,
  VIRTIO_NET_HDR_GSO_UDP_L4,
} from "../virtio/net_header.ts";
import { IPPROTO_TCP, IPPROTO_UDP, type PacketInfo } from "./packet.ts";

/** Capability bits: what an ingress port negotiated (HOST_*), or an egress port takes (GUEST_*, TUN_F_*). */
export const OFFLOAD_CSUM = 1;
export const OFFLOAD_TSO4 = 2;
export const OFFLOAD_TSO6 = 4;
export const OFFLOAD_ECN = 8;
export const OFFLOAD_USO4 = 16;
export const OFFLOAD_USO6 = 32;

/**
 * Most TCP segments one GSO frame may become: 64 KiB of payload at Linux's
 * smallest sending MSS (TCP_MIN_SND_MSS = 48, the tcp_min_snd_mss sysctl
 * default since the 2019 SACK fixes), ⌈65535 / 48⌉ = 1366. Bounds the work
 * per frame (item 35) without refusing what a Linux guest can send.
 */
export const MAX_TCP_SEGMENTS = 1366;
/** Most UDP segments per USO frame: Linux's UDP_MAX_SEGMENTS (udp_send_skb refuses more). */
export const MAX_UDP_SEGMENTS = 128;
/** Most payload bytes of a GSO frame (the 16-bit IP length fields bound it too). */
export const MAX_GSO_PAYLOAD = 65535;

/** Why a header was refused (0: it was not). */
export const OffloadError = {
  OK: 0,
  /** Item 34: unknown gso_type, UFO, a type or the ECN bit not negotiated. */
  GSO_TYPE: 1,
  /** Item 35: gso_size 0, too many segments, or payload above 64 KiB. */
  GSO_SIZE: 2,
  /** Item 35: hdr_len beyond the frame or shorter than the real headers. */
  HDR_LEN: 3,
  /** Item 36: NEEDS_CSUM without CSUM, or csum_start / csum_offset out of place. */
  CSUM: 4,
  /** Item 37: the packet disagrees with the GSO type (or cannot be segmented). */
  PACKET: 5,
  /** §5.1.6.2.1: a GSO type without NEEDS_CSUM. */
  GSO_NO_CSUM: 6,
} as const;

/** OffloadError names by code (counters, logs). */
export const OFFLOAD_ERROR_NAMES: readonly string[] = [
  "ok",
  "gso_type",
  "gso_size",
  "hdr_len",
  "csum",
  "packet",
  "gso_no_csum",
];

/** What to do with a frame for one egress port (`egressAction`). */
export const EgressAction = {
  /** Pass it with its header (flags and GSO fields as validated). */
  PASS: 0,
  /** Complete the checksum in software (completeChecksum), pass without flags. */
  CHECKSUM: 1,
  /** Segment in software (writeSegment): full checksums, or partial if the port has CSUM. */
  SEGMENT: 2,
} as const;

/** The capability a GSO type needs (0: not a known GSO type), for the IP version of the packet. */
function gsoCap(base: number, ipVersion: number): number {
  if (base === VIRTIO_NET_HDR_GSO_TCPV4) return OFFLOAD_TSO4;
  if (base === VIRTIO_NET_HDR_GSO_TCPV6) return OFFLOAD_TSO6;
  if (base === VIRTIO_NET_HDR_GSO_UDP_L4) return ipVersion === 6 ? OFFLOAD_USO6 : OFFLOAD_USO4;
  return 0;
}

/**
 * Checks header `h` against the parsed packet `info` (packet.ts) of a
 * frame of `frameLen` bytes from a port that negotiated `ingressCaps`
 * (OFFLOAD_* bits). Returns 0 or an OffloadError code. Never throws.
 * A header with neither NEEDS_CSUM nor a GSO type is always accepted (the
 * packet need not even be parsed).
 */
export function validateOffload(
  h: NetHeader,
  info: PacketInfo,
  frameLen: number,
  ingressCaps: number,
): number {
  const needsCsum = (h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0;
  const gt = h.gsoType;
  const base = gt & ~VIRTIO_NET_HDR_GSO_ECN;
  const ecn = (gt & VIRTIO_NET_HDR_GSO_ECN) !== 0;
  if (base === VIRTIO_NET_HDR_GSO_NONE) {
    if (ecn) return OffloadError.GSO_TYPE;
    if (!needsCsum) return OffloadError.OK;
    if ((ingressCaps & OFFLOAD_CSUM) === 0) return OffloadError.CSUM;
    const start = h.csumStart;
    // Item 36: not inside the Ethernet header, and the field inside the frame.
    if (start < ETH_HLEN || start >= frameLen || start + h.csumOffset + 2 > frameLen) {
      return OffloadError.CSUM;
    }
    return OffloadError.OK;
  }
  // Item 34. UDP_L4 needs USO for either IP version here (HOST_USO covers both).
  const anyCap = base === VIRTIO_NET_HDR_GSO_UDP_L4 ? OFFLOAD_USO4 | OFFLOAD_USO6 : gsoCap(base, 0);
  if (anyCap === 0 || (ingressCaps & anyCap) === 0) return OffloadError.GSO_TYPE;
  if (ecn && (base === VIRTIO_NET_HDR_GSO_UDP_L4 || (ingressCaps & OFFLOAD_ECN) === 0)) {
    return OffloadError.GSO_TYPE;
  }
  if (!needsCsum) return OffloadError.GSO_NO_CSUM;
  if ((ingressCaps & OFFLOAD_CSUM) === 0) return OffloadError.CSUM;
  // Item 37: the packet must be what the type says, whole and consistent.
  if (info.error !== 0) return OffloadError.PACKET;
  const tcp = info.l4Proto === IPPROTO_TCP;
  if (base === VIRTIO_NET_HDR_GSO_TCPV4 && (info.ipVersion !== 4 || !tcp)) {
    return OffloadError.PACKET;
  }
  if (base === VIRTIO_NET_HDR_GSO_TCPV6 && (info.ipVersion !== 6 || !tcp)) {
    return OffloadError.PACKET;
  }
  if (base === VIRTIO_NET_HDR_GSO_UDP_L4) {
    if (info.l4Proto !== IPPROTO_UDP) return OffloadError.PACKET;
    if ((ingressCaps & gsoCap(base, info.ipVersion)) === 0) return OffloadError.GSO_TYPE;
  }
  // No Ethernet padding in a GSO frame: every byte after the headers is payload.
  if (info.l3Off + info.l3Len !== frameLen) return OffloadError.PACKET;
  // Item 36 for GSO: the checksum is the L4 one, where the protocol has it.
  if (h.csumStart !== info.l4Off || h.csumOffset !== (tcp ? 16 : 6)) return OffloadError.CSUM;
  // Item 35.
  const gsoSize = h.gsoSize;
  const payload = frameLen - info.payloadOff;
  if (gsoSize === 0 || payload > MAX_GSO_PAYLOAD) return OffloadError.GSO_SIZE;
  if (Math.ceil(payload / gsoSize) > (tcp ? MAX_TCP_SEGMENTS : MAX_UDP_SEGMENTS)) {
    return OffloadError.GSO_SIZE;
  }
  if (h.hdrLen > frameLen || h.hdrLen < info.payloadOff - 4 * info.vlanTags) {
    return OffloadError.HDR_LEN;
  }
  return OffloadError.OK;
}

/**
 * What an egress port with capabilities `egressCaps` needs done to a frame
 * whose header `h` passed `validateOffload`: an EgressAction.
 */
export function egressAction(h: NetHeader, info: PacketInfo, egressCaps: number): number {
  const base = h.gsoType & ~VIRTIO_NET_HDR_GSO_ECN;
  if (base === VIRTIO_NET_HDR_GSO_NONE) {
    if ((h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) === 0) return EgressAction.PASS;
    return (egressCaps & OFFLOAD_CSUM) !== 0 ? EgressAction.PASS : EgressAction.CHECKSUM;
  }
  const need = gsoCap(base, info.ipVersion) | OFFLOAD_CSUM |
    ((h.gsoType & VIRTIO_NET_HDR_GSO_ECN) !== 0 ? OFFLOAD_ECN : 0);
  return (egressCaps & need) === need ? EgressAction.PASS : EgressAction.SEGMENT;
}

/**
 * The header to send with a frame that goes out as it came (EgressAction
 * PASS), rebuilt from validated values only (CHECKLIST items 38, 39): the
 * guest's flag bits other than NEEDS_CSUM (DATA_VALID, RSC_INFO, unknown
 * ones) are dropped, a GSO frame gets hdr_len = the real L2–L4 header length
 * (exact, so also right for GUEST_HDRLEN), a checksum-only frame hdr_len 0
 * (as Linux's virtio_net_hdr_from_skb). `h` must have passed
 * `validateOffload` with `info`; `out.numBuffers` is left to the caller.
 */
export function passHeader(h: NetHeader, info: PacketInfo, out: NetHeader): void {
  const needsCsum = (h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0;
  const base = h.gsoType & ~VIRTIO_NET_HDR_GSO_ECN;
  if (!needsCsum) {
    out.flags = 0;
    out.gsoType = VIRTIO_NET_HDR_GSO_NONE;
    out.hdrLen = 0;
    out.gsoSize = 0;
    out.csumStart = 0;
    out.csumOffset = 0;
    return;
  }
  out.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  out.csumStart = h.csumStart;
  out.csumOffset = h.csumOffset;
  if (base === VIRTIO_NET_HDR_GSO_NONE) {
    out.gsoType = VIRTIO_NET_HDR_GSO_NONE;
    out.hdrLen = 0;
    out.gsoSize = 0;
  } else {
    out.gsoType = h.gsoType;
    out.hdrLen = info.payloadOff;
    out.gsoSize = h.gsoSize;
  }
}
