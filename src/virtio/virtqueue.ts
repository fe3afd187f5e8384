/**
 * The device side of a virtqueue, as the switch uses it: take available
 * buffers, walk their chains, hand them back used, publish, and control
 * notifications. The split ring (VIRTIO 1.2 §2.7, split_ring.ts)
 * implements it today; a packed ring (§2.8) can implement the same calls
 * later (its avail/used wrap counters stay inside it), and the port
 * drivers above never learn which one they drive.
 *
 * Every call is on the data path and must not allocate; indices are
 * numbers, free-running modulo 2^16 as in both ring formats.
 *
 * @module
 */

import type { GuestMemory } from "./guest_memory.ts";
import type { SegList } from "./chain.ts";
import type { DirtyLog } from "./dirty_log.ts";
import type { QueueStart, RingPart } from "../types/queue.ts";

/** How to build a virtqueue: where it lives and what was negotiated for it. */
export interface VirtqueueOptions {
  /** The guest's memory (the ring parts and every buffer lie in it). */
  mem: GuestMemory;
  /** Queue size: a power of two, at most 32768 (validated by the control plane). */
  size: number;
  /** Descriptor table, driver area and device area (validated: in one region, aligned). */
  desc: RingPart;
  avail: RingPart;
  used: RingPart;
  /** The next avail index (SET_VRING_BASE); default 0. */
  base?: number;
  /** VIRTIO_F_INDIRECT_DESC negotiated. */
  indirect: boolean;
  /** VIRTIO_F_EVENT_IDX negotiated (§2.7.7, §2.7.10). */
  eventIdx: boolean;
  /** Largest byte count a device-readable chain may have (CHECKLIST 21). */
  maxReadable: number;
  /** The used ring's log_guest_addr when VHOST_VRING_F_LOG is on, else -1 (default). */
  logUsed?: number;
}

/**
 * The options for the queue the control plane validated in `start`, over
 * `mem`; `maxReadable` bounds its device-readable chains.
 */
export function queueOptions(
  mem: GuestMemory,
  start: QueueStart,
  maxReadable: number,
): VirtqueueOptions {
  return {
    mem,
    size: start.size,
    desc: start.desc,
    avail: start.avail,
    used: start.used,
    base: start.base,
    indirect: start.indirect,
    eventIdx: start.eventIdx,
    maxReadable,
    logUsed: start.logUsed,
  };
}

/** The device side of one virtqueue. */
export interface Virtqueue {
  /** Queue size. */
  readonly size: number;
  /** The next avail entry to be taken (what GET_VRING_BASE reports). */
  readonly lastAvail: number;
  /** Used entries written and not yet published. */
  readonly pendingUsed: number;
  /** Chains the driver has made available and we have not taken; -1 if its index is corrupt (item 15). */
  available(): number;
  /** Takes the next available chain's head (the caller checked `available`). */
  nextHead(): number;
  /** Gives back the last `n` heads taken, to be taken again. */
  unget(n: number): void;
  /** Appends the chain's buffers to `out`; its byte count, or a negative WalkError. */
  walk(head: number, out: SegList, writable: boolean): number;
  /** Marks a chain used with `len` bytes written (visible after `publish`). */
  pushUsed(head: number, len: number): void;
  /** Makes every pending used entry visible at once; true if the driver wants an interrupt. */
  publish(): boolean;
  /** Asks the driver not to kick (polling) or to kick for the next buffer. */
  setNoNotify(on: boolean): void;
  /** Logs the ring's own writes into `log` while a migration runs (null: stop). */
  setLog(log: DirtyLog | null): void;
}
