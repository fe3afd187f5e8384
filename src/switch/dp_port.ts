/**
 * A port as the dataplane worker sees it: what it negotiated, where its
 * counters live, its backpressure state, and its driver (a vhost-user net
 * queue pair or a TAP queue, src/switch/drivers/), which owns the rings or
 * the fd. One class for both kinds keeps the engine's call sites
 * monomorphic; the driver call is the one place that sees two classes.
 *
 * @module
 */

import type { GuestMemory } from "../virtio/guest_memory.ts";
import type { DirtyLog } from "../virtio/dirty_log.ts";
import type { VhostNetQueuePair } from "./drivers/vhost_net.ts";
import type { TapQueue } from "./drivers/tap.ts";
import type { PortDriver } from "./drivers/port_driver.ts";
import {
  OFFLOAD_CSUM,
  OFFLOAD_ECN,
  OFFLOAD_TSO4,
  OFFLOAD_TSO6,
  OFFLOAD_USO4,
  OFFLOAD_USO6,
} from "../net/offload.ts";
import {
  has,
  VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_GUEST_ECN,
  VIRTIO_NET_F_GUEST_TSO4,
  VIRTIO_NET_F_GUEST_TSO6,
  VIRTIO_NET_F_GUEST_USO4,
  VIRTIO_NET_F_GUEST_USO6,
  VIRTIO_NET_F_HOST_ECN,
  VIRTIO_NET_F_HOST_TSO4,
  VIRTIO_NET_F_HOST_TSO6,
  VIRTIO_NET_F_HOST_USO,
} from "../virtio/features.ts";
import { COUNTERS_PER_PORT } from "./counters.ts";

/** Port kinds. */
export const PortKind = { VHOST: 0, TAP: 1 } as const;

/** A port in the dataplane. */
export class DpPort {
  /** Guest memory (vhost ports with a memory table). */
  mem: GuestMemory | null = null;
  /** The vhost-user net queue pair's driver (vhost ports; set by Engine.add). */
  vq: VhostNetQueuePair | null = null;
  /** The TAP queue's driver (TAP ports; set by Engine.add). */
  tap: TapQueue | null = null;
  /** Whichever of the two this port has: what the engine polls. */
  driver: PortDriver | null = null;
  /** Stopped after a fault; the others keep forwarding. */
  broken = false;
  /**
   * Offloads (OFFLOAD_* bits) this port may send us: a guest's CSUM and
   * HOST_* features, the TAP's TUNSETOFFLOAD flags. Anything else in its
   * virtio-net headers is dropped (CHECKLIST 34).
   */
  ingressCaps = 0;
  /**
   * Offloads this port can take as they are: a guest's GUEST_* features,
   * what the TAP's kernel accepts. Frames needing more are completed or
   * segmented in software for this port.
   */
  egressCaps = 0;
  /** The dirty-page log while the guest migrates (null: not logging). */
  log: DirtyLog | null = null;
  /** When frames for this guest began to be held back for want of RX buffers (-1: not). */
  stallSince = -1;
  /** Until then, frames for this guest are dropped, never held (it stalled too long). */
  lossyUntil = 0;
  /** First counter slot. */
  readonly cbase: number;

  constructor(
    /** Port id (counter slot, FDB value). */
    readonly id: number,
    /** PortKind. */
    readonly kind: number,
    /** Name, for reports. */
    readonly name: string,
    /** Largest frame (Ethernet header included) this port sends or takes whole. */
    public maxFrame: number,
    /** TAP fd (-1 for vhost), handed to its driver. */
    readonly fd = -1,
  ) {
    this.cbase = id * COUNTERS_PER_PORT;
  }
}

/** What a guest with `features` may send us (VIRTIO 1.2 §5.1.3: CSUM, HOST_*). */
export function guestIngressCaps(features: bigint): number {
  if (!has(features, VIRTIO_NET_F_CSUM)) return 0;
  let c = OFFLOAD_CSUM;
  if (has(features, VIRTIO_NET_F_HOST_TSO4)) c |= OFFLOAD_TSO4;
  if (has(features, VIRTIO_NET_F_HOST_TSO6)) c |= OFFLOAD_TSO6;
  if (has(features, VIRTIO_NET_F_HOST_ECN)) c |= OFFLOAD_ECN;
  if (has(features, VIRTIO_NET_F_HOST_USO)) c |= OFFLOAD_USO4 | OFFLOAD_USO6;
  return c;
}

/** What a guest with `features` can receive (GUEST_CSUM, GUEST_*). */
export function guestEgressCaps(features: bigint): number {
  if (!has(features, VIRTIO_NET_F_GUEST_CSUM)) return 0;
  let c = OFFLOAD_CSUM;
  if (has(features, VIRTIO_NET_F_GUEST_TSO4)) c |= OFFLOAD_TSO4;
  if (has(features, VIRTIO_NET_F_GUEST_TSO6)) c |= OFFLOAD_TSO6;
  if (has(features, VIRTIO_NET_F_GUEST_ECN)) c |= OFFLOAD_ECN;
  if (has(features, VIRTIO_NET_F_GUEST_USO4)) c |= OFFLOAD_USO4;
  if (has(features, VIRTIO_NET_F_GUEST_USO6)) c |= OFFLOAD_USO6;
  return c;
}
