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

import type { MappedRegion } from "../types/memory.ts";
import type { LogPlace, QueueStart } from "../types/queue.ts";
import type { FdbEntry } from "./fdb.ts";
import type { CaptureBuffers } from "./capture_ring.ts";
import type { WindowInfo } from "../virtio/address_window.ts";

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

/** A command's name. */
export type Op = Command["op"];

/** The command named `K`. */
export type CommandOf<K extends Op> = Extract<Command, { op: K }>;

/**
 * What each command answers: the one typed command set both sides use.
 * The control plane's `Dataplane.request` returns `Results[op]`; the
 * worker's handler for each op is checked against it (`satisfies`).
 */
export interface Results {
  init: void;
  addPort: void;
  removePort: void;
  setMemory: void;
  startQueue: void;
  /** The queue's next avail index (GET_VRING_BASE), or -1 if it was not running. */
  stopQueue: number;
  setCall: void;
  setMaxFrame: void;
  setLog: void;
  inject: void;
  /** The learned MACs. */
  fdb: FdbEntry[];
  /** How many entries were forgotten. */
  fdbFlush: number;
  setAging: void;
  stop: void;
}

// Every command has a result type and every result a command (a compile-time check).
const _resultsCoverCommands: [Exclude<Op, keyof Results>, Exclude<keyof Results, Op>] extends
  [never, never] ? true : never = true;
void _resultsCoverCommands;

/** A command with its sequence number. */
export type Envelope = Command & { seq: number };

/** The worker's answer to one command. */
export interface Reply {
  seq: number;
  ok: boolean;
  /** `Results[op]` of the command with this `seq`. */
  result?: Results[Op];
  error?: string;
}

/** Sent by the worker when a port stops after a fault. */
export interface BrokenEvent {
  event: "broken";
  id: number;
  reason: string;
}

/**
 * Sent by the worker when its copy windows change (a memory table, a TAP
 * or a port came or went): what every copy between buffers goes through,
 * and why pair windows are missing when they are (address_window.ts).
 */
export interface WindowEvent {
  event: "window";
  info: WindowInfo;
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
