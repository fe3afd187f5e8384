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
/** VIRTIO 1.2 §5.1.3: driver can receive TSOv4 (needs GUEST_CSUM). */
export const VIRTIO_NET_F_GUEST_TSO4 = 7;
/** VIRTIO 1.2 §5.1.3: driver can receive TSOv6 (needs GUEST_CSUM). */
export const VIRTIO_NET_F_GUEST_TSO6 = 8;
/** VIRTIO 1.2 §5.1.3: driver can receive TSO with ECN (needs GUEST_TSO4 or 6). */
export const VIRTIO_NET_F_GUEST_ECN = 9;
/** VIRTIO 1.2 §5.1.3: device can receive TSOv4 (needs CSUM). */
export const VIRTIO_NET_F_HOST_TSO4 = 11;
/** VIRTIO 1.2 §5.1.3: device can receive TSOv6 (needs CSUM). */
export const VIRTIO_NET_F_HOST_TSO6 = 12;
/** VIRTIO 1.2 §5.1.3: device can receive TSO with ECN (needs HOST_TSO4 or 6). */
export const VIRTIO_NET_F_HOST_ECN = 13;
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
/** VIRTIO 1.2 §5.1.3: driver can send gratuitous packets (needs CTRL_VQ). */
export const VIRTIO_NET_F_GUEST_ANNOUNCE = 21;
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
/** VIRTIO 1.3 §5.1.3: driver can receive USOv4 packets (UDP segmentation). */
export const VIRTIO_NET_F_GUEST_USO4 = 54;
/** VIRTIO 1.3 §5.1.3: driver can receive USOv6 packets. */
export const VIRTIO_NET_F_GUEST_USO6 = 55;
/** VIRTIO 1.3 §5.1.3: device can receive USO packets (needs CSUM). */
export const VIRTIO_NET_F_HOST_USO = 56;

/** The bit for feature number `n`. */
export function bit(n: number): bigint {
  return 1n << BigInt(n);
}

/** True if `features` has feature number `n`. */
export function has(features: bigint, n: number): boolean {
  return (features & bit(n)) !== 0n;
}

/**
 * What the switch offers every vhost-user frontend, offloads aside. MQ is
 * not offered until the dataplane has a worker per queue pair.
 */
export const BASE_FEATURES: bigint = bit(VIRTIO_F_VERSION_1) |
  bit(VHOST_USER_F_PROTOCOL_FEATURES) |
  bit(VIRTIO_RING_F_INDIRECT_DESC) |
  bit(VIRTIO_RING_F_EVENT_IDX) |
  bit(VIRTIO_NET_F_MRG_RXBUF) |
  bit(VIRTIO_NET_F_MTU);

/**
 * The offload names a user switches per port, and the virtio feature bits
 * each one offers (both directions: the guest may send it, and receive it).
 * "csum" is the base of the others (§5.1.3.1: TSO needs CSUM / GUEST_CSUM,
 * ECN needs TSO), so a set without it offers no offload at all.
 */
export const OFFLOAD_FEATURES: {
  readonly csum: bigint;
  readonly tso4: bigint;
  readonly tso6: bigint;
  readonly ecn: bigint;
  readonly uso: bigint;
} = {
  csum: bit(VIRTIO_NET_F_CSUM) | bit(VIRTIO_NET_F_GUEST_CSUM),
  tso4: bit(VIRTIO_NET_F_HOST_TSO4) | bit(VIRTIO_NET_F_GUEST_TSO4),
  tso6: bit(VIRTIO_NET_F_HOST_TSO6) | bit(VIRTIO_NET_F_GUEST_TSO6),
  ecn: bit(VIRTIO_NET_F_HOST_ECN) | bit(VIRTIO_NET_F_GUEST_ECN),
  uso: bit(VIRTIO_NET_F_HOST_USO) | bit(VIRTIO_NET_F_GUEST_USO4) | bit(VIRTIO_NET_F_GUEST_USO6),
} as const;

/** An offload a user can switch on or off per port. */
export type OffloadName = keyof typeof OFFLOAD_FEATURES;

/** Every offload name, in a stable order. */
export const OFFLOAD_NAMES = Object.keys(OFFLOAD_FEATURES) as OffloadName[];

/**
 * The features offered to a frontend whose port allows `offloads`
 * (default: all). Respects §5.1.3.1's dependencies: without csum nothing
 * else is offered; ecn only with tso4 or tso6.
 */
export function offeredFeatures(offloads: readonly OffloadName[] = OFFLOAD_NAMES): bigint {
  let f = BASE_FEATURES;
  if (!offloads.includes("csum")) return f;
  f |= OFFLOAD_FEATURES.csum;
  for (const o of offloads) {
    if (o === "ecn" && !offloads.includes("tso4") && !offloads.includes("tso6")) continue;
    f |= OFFLOAD_FEATURES[o];
  }
  return f;
}

/** What the switch offers by default (every offload). */
export const OFFERED_FEATURES: bigint = offeredFeatures();

/** Names for logs. */
export function featureNames(features: bigint): string[] {
  const names: Record<number, string> = {
    [VIRTIO_NET_F_CSUM]: "CSUM",
    [VIRTIO_NET_F_GUEST_CSUM]: "GUEST_CSUM",
    [VIRTIO_NET_F_GUEST_TSO4]: "GUEST_TSO4",
    [VIRTIO_NET_F_GUEST_TSO6]: "GUEST_TSO6",
    [VIRTIO_NET_F_GUEST_ECN]: "GUEST_ECN",
    [VIRTIO_NET_F_HOST_TSO4]: "HOST_TSO4",
    [VIRTIO_NET_F_HOST_TSO6]: "HOST_TSO6",
    [VIRTIO_NET_F_HOST_ECN]: "HOST_ECN",
    [VIRTIO_NET_F_GUEST_ANNOUNCE]: "GUEST_ANNOUNCE",
    [VIRTIO_NET_F_GUEST_USO4]: "GUEST_USO4",
    [VIRTIO_NET_F_GUEST_USO6]: "GUEST_USO6",
    [VIRTIO_NET_F_HOST_USO]: "HOST_USO",
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
