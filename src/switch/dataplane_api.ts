/**
 * Messages between the control plane (main thread) and the dataplane
 * worker. Every command carries a sequence number and is answered by one
 * Reply; the worker also sends Broken events on its own.
 *
 * A command is posted, then the worker is woken: a counter in the shared
 * control block is bumped (the busy loop checks it every round) and the
 * command eventfd is written (the idle worker sleeps in epoll on it).
 *
 * @module
 */

import type { MappedRegion } from "../vhost_user/memory_table.ts";
import type { RingPart } from "../virtio/split_ring.ts";
import type { FdbEntry } from "./fdb.ts";
import type { CaptureBuffers } from "./capture_ring.ts";

/** What starting a queue needs: everything validated by the control plane. */
export interface QueueStart {
  /** Queue index: 0 = RX (guest receives), 1 = TX (guest sends). */
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

/** Commands, by op. */
export type Command =
  | {
    op: "init";
    counters: SharedArrayBuffer;
    control: SharedArrayBuffer;
    commandFd: number;
    agingMs: number;
    /** The capture ring (capture_ring.ts). */
    capture: CaptureBuffers;
  }
  | {
    op: "addPort";
    id: number;
    kind: number;
    name: string;
    maxFrame: number;
    fd: number;
    /** OFFLOAD_* bits the port may send (a TAP: its TUNSETOFFLOAD; a guest: set at queue start). */
    ingressCaps: number;
    /** OFFLOAD_* bits the port can take whole. */
    egressCaps: number;
  }
  | { op: "removePort"; id: number }
  | { op: "setMemory"; id: number; regions: MappedRegion[] | null }
  | { op: "startQueue"; id: number; start: QueueStart }
  | { op: "stopQueue"; id: number; q: number }
  | { op: "setCall"; id: number; q: number; fd: number }
  | { op: "setMaxFrame"; id: number; maxFrame: number }
  /** Log this port's writes into guest memory there (null: stop); acked between rounds. */
  | { op: "setLog"; id: number; log: LogPlace | null }
  /** Run a frame through ingress as if the port had sent it (SEND_RARP). */
  | { op: "inject"; id: number; frame: Uint8Array }
  | { op: "fdb" }
  /** Forgets the MACs learned on port `id` (-1: every port); result: how many. */
  | { op: "fdbFlush"; id: number }
  | { op: "setAging"; ms: number }
  | { op: "stop" };

/** A command with its sequence number. */
export type Envelope = Command & { seq: number };

/** The worker's answer to one command. */
export interface Reply {
  seq: number;
  ok: boolean;
  /** stopQueue: the next avail index; fdb: the entries; fdbFlush: entries removed. */
  result?: number | FdbEntry[];
  error?: string;
}

/** Sent by the worker when a port stops after a fault. */
export interface BrokenEvent {
  event: "broken";
  id: number;
  reason: string;
}

/** Control block slots (Int32Array over a SharedArrayBuffer). */
export const CONTROL = {
  /** Commands posted so far (main increments). */
  posted: 0,
  /** Rounds run so far (worker increments; for liveness checks). */
  rounds: 1,
  /** Slots. */
  length: 2,
} as const;
