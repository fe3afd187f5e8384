/**
 * The per-frame record: everything the dataplane learns about one frame,
 * written once by the parser and read by every later stage (classify,
 * deliver, segment). One record per burst slot, preallocated, reused for
 * every frame: nothing here allocates per frame.
 *
 * The virtio-net header (VIRTIO 1.2 §5.1.6) and, for offloaded frames, the
 * L2–L4 headers are copied out of guest memory once into the record
 * (CHECKLIST items 24 and 40); every decision and every header the switch
 * writes later is made from these copies, never from a second read.
 *
 * @module
 */

import { SegList } from "../virtio/chain.ts";
import { NetHeader } from "../virtio/net_header.ts";
import { MAX_HEADER_BYTES, PacketInfo } from "../net/packet.ts";

/** Most segments one chain (or one mergeable frame) may have. */
export const MAX_SEGS = 128;

/**
 * Largest frame a GSO header may describe: IPv4's total length and IPv6's
 * payload length are 16 bits, so 65535 plus the IPv6 header (40) and the
 * Ethernet header with two VLAN tags (22), rounded up. Also what the TAP's
 * kernel may hand us with TSO on, and the TX chain limit for guests.
 */
export const MAX_GSO_FRAME = 65535 + 128;

/** `Frame.out` when the frame goes to every port but its own. */
export const OUT_FLOOD = -1;
/** `Frame.out` when the frame was dropped (and counted) already. */
export const OUT_DROP = -2;

/** One frame in flight through the switch. */
export class Frame {
  /** Where the frame's bytes live (the vnet header first, at position 0). */
  readonly segs: SegList = new SegList(MAX_SEGS);
  /** The virtio-net header as the ingress port sent it, read once. */
  readonly hdr: NetHeader = new NetHeader();
  /** L2–L4 layout, parsed only for offloaded frames. */
  readonly pkt: PacketInfo = new PacketInfo();
  /** A copy of the frame's first bytes (L2–L4 headers) for offloaded frames. */
  readonly headers: Uint8Array = new Uint8Array(MAX_HEADER_BYTES);
  /** Valid bytes in `headers`. */
  headerBytes = 0;
  /** The ring head the frame came from (vhost ingress). */
  head = 0;
  /** The driver buffer holding the frame (a TAP's staging slot). */
  slot = 0;
  /** Position of the Ethernet header in `segs` (the ingress header length). */
  pos = 0;
  /** Ethernet frame length (without the virtio-net header). */
  len = 0;
  /** Destination MAC: top 16 bits and low 32 bits. */
  dstHi = 0;
  dstLo = 0;
  /** Source MAC. */
  srcHi = 0;
  srcLo = 0;
  /** NEEDS_CSUM or a GSO type was asked for (and passed validation). */
  offload = false;
  /** The TAP's kernel vouched for the checksum (VIRTIO_NET_HDR_F_DATA_VALID). */
  dataValid = false;
  /**
   * Held back in the previous round and taken again (its guest had no RX
   * buffer): counted and captured already, so not again.
   */
  again = false;
  /** Destination port id, OUT_FLOOD or OUT_DROP. */
  out = OUT_DROP;
}

/** A burst of frame records. */
export function makeBurst(n: number): Frame[] {
  return Array.from({ length: n }, () => new Frame());
}
