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

/** §5.1.6: checksum needed from csum_start (needs CSUM, not offered yet). */
export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
/** §5.1.6: gso_type none. */
export const VIRTIO_NET_HDR_GSO_NONE = 0;
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
