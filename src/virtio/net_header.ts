/**
 * The virtio-net header (VIRTIO 1.2 §5.1.6): 10 bytes, or 12 with
 * num_buffers (VERSION_1 or MRG_RXBUF).
 *
 * ```
 * u8 flags; u8 gso_type; le16 hdr_len; le16 gso_size;
 * le16 csum_start; le16 csum_offset; le16 num_buffers;
 * ```
 *
 * @module
 */

import { has, VIRTIO_F_VERSION_1, VIRTIO_NET_F_MRG_RXBUF } from "./features.ts";
import type { SegList } from "./chain.ts";

/** §5.1.6.2: the checksum from csum_start on is still to be computed (needs CSUM). */
export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
/**
 * §5.1.6.4: the device validated the checksum (device → driver only; a driver
 * MUST NOT set it, §5.1.6.2.1, and the device ignores it, §5.1.6.2.2).
 */
export const VIRTIO_NET_HDR_F_DATA_VALID = 2;
/** §5.1.6.4: csum_start/csum_offset carry RSC counts (device → driver only). */
export const VIRTIO_NET_HDR_F_RSC_INFO = 4;
/** §5.1.6: gso_type none. */
export const VIRTIO_NET_HDR_GSO_NONE = 0;
/** §5.1.6: TCPv4 segmentation (TSO). */
export const VIRTIO_NET_HDR_GSO_TCPV4 = 1;
/** §5.1.6: UDP fragmentation (legacy UFO; refused here). */
export const VIRTIO_NET_HDR_GSO_UDP = 3;
/** §5.1.6: TCPv6 segmentation. */
export const VIRTIO_NET_HDR_GSO_TCPV6 = 4;
/** §5.1.6: UDP segmentation (USO, one datagram per segment). */
export const VIRTIO_NET_HDR_GSO_UDP_L4 = 5;
/** §5.1.6: bit of gso_type: the TCP packet has ECN (CWR) set. */
export const VIRTIO_NET_HDR_GSO_ECN = 0x80;
/** Offset of num_buffers. */
export const NUM_BUFFERS_OFFSET = 10;
/** The header with num_buffers. */
export const NET_HDR_SIZE = 12;
/** The legacy header without it. */
export const NET_HDR_LEGACY_SIZE = 10;

/** The header size the negotiated features imply (§5.1.6). */
export function netHeaderSize(features: bigint): number {
  return has(features, VIRTIO_F_VERSION_1) || has(features, VIRTIO_NET_F_MRG_RXBUF)
    ? NET_HDR_SIZE
    : NET_HDR_LEGACY_SIZE;
}

/** Ethernet header bytes (dst, src, type). */
export const ETH_HLEN = 14;
/** Room for an 802.1Q tag and the Ethernet header above the MTU. */
export const ETH_OVERHEAD = 18;

/**
 * One virtio-net header as numbers: read once from the chain (CHECKLIST
 * items 24, 40), then only these fields are used. One instance per engine,
 * reused for every frame.
 */
export class NetHeader {
  /** VIRTIO_NET_HDR_F_* bits. */
  flags = 0;
  /** VIRTIO_NET_HDR_GSO_* value, ECN bit included. */
  gsoType = 0;
  /** Header length hint (§5.1.6.2: not to be relied on). */
  hdrLen = 0;
  /** MSS of a GSO frame. */
  gsoSize = 0;
  /** Where checksumming starts (NEEDS_CSUM). */
  csumStart = 0;
  /** Where, after csum_start, the checksum goes (NEEDS_CSUM). */
  csumOffset = 0;
  /** Buffers of a received frame (12-byte header only). */
  numBuffers = 0;

  /**
   * Reads the `size`-byte header (10 or 12, default 12) at logical position
   * `pos` of `list`, once: one bounds check and direct loads when it lies in
   * segment 0, byte by byte across segments otherwise (item 22). Bytes past
   * the list's end read as 0; numBuffers is 0 for a 10-byte header.
   */
  read(list: SegList, pos: number, size: number = NET_HDR_SIZE): void {
    if (list.count > 0 && list.lens[0] - pos >= size) {
      const v = list.views[0];
      const o = list.offs[0] + pos;
      this.flags = v[o];
      this.gsoType = v[o + 1];
      this.hdrLen = v[o + 2] | (v[o + 3] << 8);
      this.gsoSize = v[o + 4] | (v[o + 5] << 8);
      this.csumStart = v[o + 6] | (v[o + 7] << 8);
      this.csumOffset = v[o + 8] | (v[o + 9] << 8);
      this.numBuffers = size >= NET_HDR_SIZE ? v[o + 10] | (v[o + 11] << 8) : 0;
      return;
    }
    this.flags = list.byteAt(pos);
    this.gsoType = list.byteAt(pos + 1);
    this.hdrLen = list.byteAt(pos + 2) | (list.byteAt(pos + 3) << 8);
    this.gsoSize = list.byteAt(pos + 4) | (list.byteAt(pos + 5) << 8);
    this.csumStart = list.byteAt(pos + 6) | (list.byteAt(pos + 7) << 8);
    this.csumOffset = list.byteAt(pos + 8) | (list.byteAt(pos + 9) << 8);
    this.numBuffers = size >= NET_HDR_SIZE
      ? list.byteAt(pos + 10) | (list.byteAt(pos + 11) << 8)
      : 0;
  }

  /**
   * Writes these fields as a `size`-byte header (10 or 12, default 12) at
   * logical position `pos` of `list` (little-endian, §5.1.6), across
   * segments if need be; nothing is written past the list's end.
   */
  write(list: SegList, pos: number, size: number = NET_HDR_SIZE): void {
    if (list.count > 0 && list.lens[0] - pos >= size) {
      const v = list.views[0];
      const o = list.offs[0] + pos;
      v[o] = this.flags;
      v[o + 1] = this.gsoType;
      v[o + 2] = this.hdrLen & 0xff;
      v[o + 3] = this.hdrLen >>> 8;
      v[o + 4] = this.gsoSize & 0xff;
      v[o + 5] = this.gsoSize >>> 8;
      v[o + 6] = this.csumStart & 0xff;
      v[o + 7] = this.csumStart >>> 8;
      v[o + 8] = this.csumOffset & 0xff;
      v[o + 9] = this.csumOffset >>> 8;
      if (size >= NET_HDR_SIZE) {
        v[o + 10] = this.numBuffers & 0xff;
        v[o + 11] = this.numBuffers >>> 8;
      }
      return;
    }
    setByteAt(list, pos, this.flags);
    setByteAt(list, pos + 1, this.gsoType);
    setByteAt(list, pos + 2, this.hdrLen & 0xff);
    setByteAt(list, pos + 3, this.hdrLen >>> 8);
    setByteAt(list, pos + 4, this.gsoSize & 0xff);
    setByteAt(list, pos + 5, this.gsoSize >>> 8);
    setByteAt(list, pos + 6, this.csumStart & 0xff);
    setByteAt(list, pos + 7, this.csumStart >>> 8);
    setByteAt(list, pos + 8, this.csumOffset & 0xff);
    setByteAt(list, pos + 9, this.csumOffset >>> 8);
    if (size >= NET_HDR_SIZE) {
      setByteAt(list, pos + 10, this.numBuffers & 0xff);
      setByteAt(list, pos + 11, this.numBuffers >>> 8);
    }
  }

  /** Sets every field to 0 (a header that asks for nothing). */
  clear(): void {
    this.flags = 0;
    this.gsoType = 0;
    this.hdrLen = 0;
    this.gsoSize = 0;
    this.csumStart = 0;
    this.csumOffset = 0;
    this.numBuffers = 0;
  }

  /** Copies every field of `h`. */
  copyFrom(h: NetHeader): void {
    this.flags = h.flags;
    this.gsoType = h.gsoType;
    this.hdrLen = h.hdrLen;
    this.gsoSize = h.gsoSize;
    this.csumStart = h.csumStart;
    this.csumOffset = h.csumOffset;
    this.numBuffers = h.numBuffers;
  }
}

/** Writes one byte at logical position `pos` of `list` (slow path; nothing past the end). */
function setByteAt(list: SegList, pos: number, b: number): void {
  for (let i = 0; i < list.count; i++) {
    const l = list.lens[i];
    if (pos < l) {
      list.views[i][list.offs[i] + pos] = b;
      return;
    }
    pos -= l;
  }
}
