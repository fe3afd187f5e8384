/**
 * Per-port counters in a SharedArrayBuffer: the dataplane worker writes
 * them, the main thread reads them (a torn read of one counter is
 * harmless for statistics). Directions are the switch's: `rx` is what the
 * switch received from the port (the guest's TX), `tx` what it sent to it.
 *
 * @module
 */

/** Counter names, in slot order. */
export const COUNTER_NAMES = [
  "rxPackets",
  "rxBytes",
  "txPackets",
  "txBytes",
  /** Egress: the guest had no (big enough) RX buffer. */
  "dropNoBuffer",
  /** Ingress/egress: frame beyond the port's MTU. */
  "dropTooBig",
  /** Ingress: frame shorter than an Ethernet header. */
  "dropRunt",
  /** A descriptor chain broke a rule (index, loop, address, direction, indirect). */
  "dropBadDescriptor",
  /**
   * Ingress: virtio-net header flags a driver must not set (DATA_VALID,
   * RSC_INFO, unknown bits), or an offload asked of a port that negotiated none.
   */
  "dropBadHeader",
  /** Ingress: destination is the port the frame came from. */
  "dropSameport",
  /** Egress: the TAP write failed (e.g. link down, EAGAIN). */
  "dropTapError",
  /** The queue was broken (e.g. avail index jumped); the port stopped. */
  "queueBroken",
  /** Guest interrupts sent (call eventfd writes). */
  "interrupts",
  /** Kicks / TAP wake-ups received. */
  "wakeups",
  /** Egress: offloaded (GSO) frames this port could not take whole, segmented in software. */
  "swSegmented",
  /** Egress: the segments those frames became. */
  "swSegments",
  /** Egress: partial checksums (NEEDS_CSUM) completed in software for this port. */
  "swChecksummed",
  /** Ingress: gso_type unknown, or an offload this port did not negotiate (CHECKLIST 34). */
  "dropOffloadType",
  /** Ingress: gso_size 0, too many segments, or a GSO frame beyond 64 KiB (CHECKLIST 35). */
  "dropOffloadSize",
  /** Ingress: hdr_len beyond the frame or short of its headers (CHECKLIST 35). */
  "dropOffloadHdrLen",
  /** Ingress: csum_start / csum_offset outside the frame or not at the L4 header (CHECKLIST 36). */
  "dropOffloadCsum",
  /** Ingress: the packet disagrees with its gso_type (CHECKLIST 37). */
  "dropOffloadPacket",
  /** Migration: dirty pages beyond the frontend's log, not marked (dirty_log.ts). */
  "dirtyLogBeyond",
] as const;

/** One counter's name. */
export type CounterName = typeof COUNTER_NAMES[number];

/** Slot of each counter. */
export const C = Object.fromEntries(COUNTER_NAMES.map((n, i) => [n, i])) as {
  [K in CounterName]: number;
};

/** Counters per port slot (rounded up, room to grow). */
export const COUNTERS_PER_PORT = 32;
/** Most ports one switch holds. */
export const MAX_PORTS = 64;

/** Makes the shared counter block. */
export function createCounterBuffer(): SharedArrayBuffer {
  return new SharedArrayBuffer(MAX_PORTS * COUNTERS_PER_PORT * 8);
}

/** A port's counters as a plain object (control path). */
export function readCounters(
  table: Float64Array,
  port: number,
): Record<CounterName, number> {
  const base = port * COUNTERS_PER_PORT;
  return Object.fromEntries(COUNTER_NAMES.map((n, i) => [n, table[base + i]])) as Record<
    CounterName,
    number
  >;
}
