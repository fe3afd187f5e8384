/**
 * Software fallbacks for an egress port that cannot take an offloaded
 * frame as it is: checksum completion (VIRTIO 1.2 §5.1.6.2, NEEDS_CSUM) and
 * segmentation of TCPv4 / TCPv6 / UDP (USO) GSO frames, written straight
 * into the destination's buffers.
 *
 * Every segment's headers are rebuilt from the validated header copy
 * (packet.ts `captureHeaders`, never re-read from the guest: CHECKLIST items
 * 24, 38, 40); only the payload bytes come from the source, copied once.
 * Reads stay inside the frame and writes inside the destination list
 * (item 38). Nothing here allocates.
 *
 * Segment k of a frame with payload P and MSS m carries payload bytes
 * [k·m, min(P, (k+1)·m)); a frame without payload is one segment. Per
 * segment (as Linux's tcp_gso_segment / __udp_gso_segment do):
 * - IPv4: total length, identification + k (mod 2^16), header checksum;
 * - IPv6: payload length;
 * - TCP: sequence number + k·m (mod 2^32); FIN and PSH only on the last
 *   segment, CWR only on the first (ECN, RFC 3168 §6.1.2);
 * - UDP: length;
 * - the L4 checksum: complete, or (for an egress with GUEST_CSUM) the
 *   pseudo-header sum only, to be passed with NEEDS_CSUM (`partialHeader`).
 *
 * @module
 */

import { copySegments, type SegList } from "../virtio/chain.ts";
import {
  type NetHeader,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_NONE,
} from "../virtio/net_header.ts";
import {
  complement16,
  finish,
  fold16,
  pseudoSumV4,
  pseudoSumV6,
  sumBytes,
  sumSegments,
} from "./checksum.ts";
import {
  IPPROTO_TCP,
  MAX_HEADER_BYTES,
  type PacketInfo,
  TCP_CWR,
  TCP_FIN,
  TCP_PSH,
} from "./packet.ts";

const TWO31 = 0x8000_0000;
/** The headers of the segment being written (one per thread, reused). */
const scratch = new Uint8Array(MAX_HEADER_BYTES);

/** Bytes of payload a frame of `frameLen` bytes carries after its headers. */
function payloadLen(info: PacketInfo, frameLen: number): number {
  const p = frameLen - info.payloadOff;
  return p > 0 ? p : 0;
}

/** Segments a validated GSO frame becomes (at least 1). */
export function segmentCount(h: NetHeader, info: PacketInfo, frameLen: number): number {
  const p = payloadLen(info, frameLen);
  const m = h.gsoSize;
  if (p === 0 || m <= 0) return 1;
  return Math.ceil(p / m);
}

/** Payload bytes of segment k (0 past the last segment). */
function segmentPayload(h: NetHeader, info: PacketInfo, frameLen: number, k: number): number {
  const p = payloadLen(info, frameLen);
  const m = h.gsoSize;
  if (m <= 0) return k === 0 ? p : 0;
  const start = k * m;
  if (start >= p) return 0;
  return p - start < m ? p - start : m;
}

/** Bytes of segment k's frame, L2–L4 headers included (0 if k is past the last). */
export function segmentFrameLen(
  h: NetHeader,
  info: PacketInfo,
  frameLen: number,
  k: number,
): number {
  if (k < 0 || k >= segmentCount(h, info, frameLen)) return 0;
  return info.payloadOff + segmentPayload(h, info, frameLen, k);
}

/**
 * Whether every segment fits an egress MTU (item 38): a full segment's IP
 * packet, gso_size + L3 + L4 headers, at most `mtu` bytes (as Linux's
 * skb_gso_validate_network_len; a frame whose payload is below gso_size is
 * judged by gso_size too).
 */
export function segmentsFitMtu(h: NetHeader, info: PacketInfo, mtu: number): boolean {
  return h.gsoSize + info.payloadOff - info.l3Off <= mtu;
}

/**
 * The virtio-net header to send a segment written with `fullChecksum`
 * false: NEEDS_CSUM from the L4 header, no GSO (§5.1.6.2). `numBuffers` is
 * left to the caller.
 */
export function partialHeader(info: PacketInfo, out: NetHeader): void {
  out.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  out.gsoType = VIRTIO_NET_HDR_GSO_NONE;
  out.hdrLen = info.payloadOff;
  out.gsoSize = 0;
  out.csumStart = info.l4Off;
  out.csumOffset = info.l4Proto === IPPROTO_TCP ? 16 : 6;
}

/**
 * Writes `n` bytes of `bytes` (e.g. validated headers, never guest memory)
 * to logical position `pos` of `dst`, nothing past its end.
 */
export function writeBytes(dst: SegList, pos: number, bytes: Uint8Array, n: number): void {
  let i = 0;
  const count = dst.count;
  while (i < count && pos >= dst.lens[i]) pos -= dst.lens[i++];
  let done = 0;
  while (done < n && i < count) {
    let m = dst.lens[i] - pos;
    if (m > n - done) m = n - done;
    const v = dst.views[i];
    const d0 = dst.offs[i] + pos;
    const end = done + m;
    if (d0 + m < TWO31) {
      let d = d0 | 0; // small-integer indices: a float index costs ~2× per byte
      for (; done < end; done++) v[d++] = bytes[done];
    } else {
      let d = d0;
      for (; done < end; done++) v[d++] = bytes[done];
    }
    pos = 0;
    i++;
  }
}

/** Stores a big-endian 16-bit value at logical position `pos` of `dst` (nothing past its end). */
function store16(dst: SegList, pos: number, value: number): void {
  let i = 0;
  const count = dst.count;
  while (i < count && pos >= dst.lens[i]) pos -= dst.lens[i++];
  if (i >= count) return;
  if (pos + 1 < dst.lens[i]) {
    const o = dst.offs[i] + pos;
    dst.views[i][o] = value >>> 8;
    dst.views[i][o + 1] = value & 0xff;
    return;
  }
  dst.views[i][dst.offs[i] + pos] = value >>> 8; // the last byte of segment i
  if (i + 1 < count && dst.lens[i + 1] > 0) dst.views[i + 1][dst.offs[i + 1]] = value & 0xff;
}

/**
 * Completes the checksum of a NEEDS_CSUM frame that was already copied to
 * `dst` at logical position `framePos` (§5.1.6.2: the field at csum_start +
 * csum_offset holds the pseudo-header sum; the ones' complement sum from
 * csum_start to the end of the frame, complemented, goes there; 0 is sent
 * as 0xffff). Works on the destination copy only, never on the guest's
 * buffers, and touches only [framePos, framePos + frameLen) of `dst`.
 * Returns false (and writes nothing) if the field lies outside the frame
 * or `dst` is shorter than the frame.
 */
export function completeChecksum(
  dst: SegList,
  framePos: number,
  frameLen: number,
  csumStart: number,
  csumOffset: number,
): boolean {
  if (
    csumStart < 0 || csumOffset < 0 || csumStart + csumOffset + 2 > frameLen ||
    framePos + frameLen > dst.total
  ) {
    return false;
  }
  const sum = sumSegments(dst, framePos + csumStart, frameLen - csumStart, 0);
  store16(dst, framePos + csumStart + csumOffset, finish(sum));
  return true;
}

/**
 * Writes segment `k` of the validated GSO frame (header `h`, parse `info`,
 * header copy `hdr`) into `dst` at logical position `dstPos`: the rebuilt
 * L2–L4 headers, then the segment's payload copied from `src` (the frame
 * starts at logical position `srcFramePos` there and is `frameLen` bytes
 * long), then the L4 checksum — complete if `fullChecksum`, else the
 * pseudo-header sum (send with `partialHeader`). Returns the bytes written
 * (segmentFrameLen), or 0 if k is past the last segment, `dst` has fewer
 * than that many bytes from `dstPos`, or `src` is shorter than the frame
 * (then nothing is written).
 */
export function writeSegment(
  h: NetHeader,
  info: PacketInfo,
  hdr: Uint8Array,
  src: SegList,
  srcFramePos: number,
  frameLen: number,
  k: number,
  dst: SegList,
  dstPos: number,
  fullChecksum: boolean,
): number {
  if (k < 0 || k >= segmentCount(h, info, frameLen)) return 0;
  const hl = info.payloadOff;
  const pay = segmentPayload(h, info, frameLen, k);
  const segLen = hl + pay;
  if (
    hl > MAX_HEADER_BYTES || hl > hdr.length || dstPos + segLen > dst.total ||
    srcFramePos + frameLen > src.total
  ) {
    return 0;
  }
  const last = k === segmentCount(h, info, frameLen) - 1;
  const s = scratch;
  for (let i = 0; i < hl; i++) s[i] = hdr[i];
  const l3 = info.l3Off, l4 = info.l4Off;
  const l4Len = segLen - l4;
  const tcp = info.l4Proto === IPPROTO_TCP;
  let pseudo: number;
  if (info.ipVersion === 4) {
    const total = segLen - l3;
    s[l3 + 2] = total >>> 8;
    s[l3 + 3] = total & 0xff;
    const id = (info.ipId + k) & 0xffff;
    s[l3 + 4] = id >>> 8;
    s[l3 + 5] = id & 0xff;
    s[l3 + 10] = 0;
    s[l3 + 11] = 0;
    const c = complement16(sumBytes(s, l3, info.ipHdrLen));
    s[l3 + 10] = c >>> 8;
    s[l3 + 11] = c & 0xff;
    pseudo = pseudoSumV4(s, l3, info.l4Proto, l4Len);
  } else {
    const plen = segLen - l3 - 40;
    s[l3 + 4] = plen >>> 8;
    s[l3 + 5] = plen & 0xff;
    pseudo = pseudoSumV6(s, l3, info.l4Proto, l4Len);
  }
  let csumAt: number;
  if (tcp) {
    const seq = (info.tcpSeq + k * h.gsoSize) >>> 0;
    s[l4 + 4] = seq >>> 24;
    s[l4 + 5] = (seq >>> 16) & 0xff;
    s[l4 + 6] = (seq >>> 8) & 0xff;
    s[l4 + 7] = seq & 0xff;
    let f = info.tcpFlags;
    if (!last) f &= ~(TCP_FIN | TCP_PSH);
    if (k > 0) f &= ~TCP_CWR;
    s[l4 + 13] = f;
    csumAt = l4 + 16;
  } else {
    s[l4 + 4] = l4Len >>> 8;
    s[l4 + 5] = l4Len & 0xff;
    csumAt = l4 + 6;
  }
  s[csumAt] = 0;
  s[csumAt + 1] = 0;
  if (pay > 0) {
    copySegments(dst, dstPos + hl, src, srcFramePos + hl + k * h.gsoSize, pay);
  }
  let c: number;
  if (fullChecksum) {
    // The L4 header has an even length, so the payload starts on a word boundary.
    const headSum = pseudo + sumBytes(s, l4, hl - l4);
    c = finish(pay > 0 ? sumSegments(dst, dstPos + hl, pay, headSum) : headSum);
  } else {
    c = fold16(pseudo);
  }
  s[csumAt] = c >>> 8;
  s[csumAt + 1] = c & 0xff;
  writeBytes(dst, dstPos, s, hl);
  return segLen;
}
