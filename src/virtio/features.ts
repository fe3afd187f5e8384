/**
 * Virtio feature bits (VIRTIO 1.2 §6 reserved bits, §5.1.3 network device
 * bits) and the vhost-user transport bit. Features are 64-bit; they are
 * handled as BigInt on the control path only.
 *
 * @module
 */

/** VIRTIO 1.2 §5.1.3: device handles packets with partial checksum. */
export const VIRTIO_NET_F_CSUM = 0;
/** VIRTIO 1.2 §5.1.3: driver handles packets with partial checksum. */
export const VIRTIO_NET_F_GUEST_CSUM = 1;
/** VIRTIO 1.2 §5.1.3: device reports its maximum MTU in config space. */
export const VIRTIO_NET_F_MTU = 3;
/** VIRTIO 1.2 §5.1.3: device has a given MAC address. */
export const VIRTIO_NET_F_MAC = 5;
/** VIRTIO 1.2 §5.1.3: driver can merge receive buffers. */
export const VIRTIO_NET_F_MRG_RXBUF = 15;
/** VIRTIO 1.2 §5.1.3: control virtqueue. */
export const VIRTIO_NET_F_CTRL_VQ = 17;
/** VIRTIO 1.2 §5.1.3: multiqueue with automatic steering. */
export const VIRTIO_NET_F_MQ = 22;
/** VIRTIO 1.2 §6: indirect descriptors (§2.7.5.3). */
export const VIRTIO_RING_F_INDIRECT_DESC = 28;
/** VIRTIO 1.2 §6: used_event / avail_event (§2.7.7, §2.7.10). */
export const VIRTIO_RING_F_EVENT_IDX = 29;
/** vhost-user: the frontend may send GET/SET_PROTOCOL_FEATURES. */
export const VHOST_USER_F_PROTOCOL_FEATURES = 30;
/** VIRTIO 1.2 §6: compliant with virtio 1.x (little-endian rings). */
export const VIRTIO_F_VERSION_1 = 32;
/** VIRTIO 1.2 §6: packed virtqueue layout (§2.8). */
export const VIRTIO_F_RING_PACKED = 34;

/** The bit for feature number `n`. */
export function bit(n: number): bigint {
  return 1n << BigInt(n);
}

/** True if `features` has feature number `n`. */
export function has(features: bigint, n: number): boolean {
  return (features & bit(n)) !== 0n;
}

/**
 * What the switch offers a vhost-user frontend today. Offloads (CSUM, TSO)
 * and MQ are not offered until the dataplane implements them.
 */
export const OFFERED_FEATURES: bigint = bit(VIRTIO_F_VERSION_1) |
  bit(VHOST_USER_F_PROTOCOL_FEATURES) |
  bit(VIRTIO_RING_F_INDIRECT_DESC) |
  bit(VIRTIO_RING_F_EVENT_IDX) |
  bit(VIRTIO_NET_F_MRG_RXBUF) |
  bit(VIRTIO_NET_F_MTU);

/** Names for logs. */
export function featureNames(features: bigint): string[] {
  const names: Record<number, string> = {
    [VIRTIO_NET_F_CSUM]: "CSUM",
    [VIRTIO_NET_F_GUEST_CSUM]: "GUEST_CSUM",
    [VIRTIO_NET_F_MTU]: "MTU",
    [VIRTIO_NET_F_MAC]: "MAC",
    [VIRTIO_NET_F_MRG_RXBUF]: "MRG_RXBUF",
    [VIRTIO_NET_F_CTRL_VQ]: "CTRL_VQ",
    [VIRTIO_NET_F_MQ]: "MQ",
    [VIRTIO_RING_F_INDIRECT_DESC]: "INDIRECT_DESC",
    [VIRTIO_RING_F_EVENT_IDX]: "EVENT_IDX",
    [VHOST_USER_F_PROTOCOL_FEATURES]: "PROTOCOL_FEATURES",
    [VIRTIO_F_VERSION_1]: "VERSION_1",
    [VIRTIO_F_RING_PACKED]: "RING_PACKED",
  };
  const out: string[] = [];
  for (let i = 0; i < 64; i++) if (has(features, i)) out.push(names[i] ?? `bit${i}`);
  return out;
}
