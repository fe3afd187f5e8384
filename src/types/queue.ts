/**
 * What starting a virtqueue takes, as plain data: where its parts lie and
 * what was negotiated for it. The vhost-user device validates and fills
 * it on the control path; the switch's workers build their rings from it.
 * Neutral ground: it imports nothing, so src/vhost_user and src/switch do
 * not import each other for it (issue 11).
 *
 * @module
 */

/** Where one part of a ring lives: region index and byte offset. */
export interface RingPart {
  region: number;
  offset: number;
}

/** What starting a queue needs: everything validated by the control plane. */
export interface QueueStart {
  /** Queue index: even = RX (guest receives), odd = TX (guest sends); 2n, 2n+1 is queue pair n. */
  q: number;
  size: number;
  desc: RingPart;
  avail: RingPart;
  used: RingPart;
  /** Next avail index (SET_VRING_BASE). */
  base: number;
  /** Kick eventfd, or -1 (polling only). */
  kickFd: number;
  /** Call eventfd, or -1. */
  callFd: number;
  hdrLen: number;
  mergeable: boolean;
  indirect: boolean;
  eventIdx: boolean;
  /** Every negotiated virtio feature (the dataplane derives offload capabilities). */
  features: bigint;
  /** The used ring's log_guest_addr when VHOST_VRING_F_LOG is set, else -1. */
  logUsed: number;
}

/** A dirty log mapped by the control plane: address of its first byte, size in bytes. */
export interface LogPlace {
  address: number;
  size: number;
}
