/**
 * The burst interface every port driver offers the engine. A driver owns
 * one queue pair of one port — a vhost-user net device's RX/TX virtqueue
 * pair (vhost_net.ts), a TAP queue (tap.ts) — and its own frame records,
 * so the engine switches bursts without knowing where frames come from.
 * Multiqueue then becomes "worker i owns queue pair i of every port":
 * each worker gets its own drivers, and nothing in a driver is shared.
 *
 * One round, per driver: `receive` (pop a burst into the driver's
 * records), the engine parses (where the driver left it to it),
 * classifies and delivers each frame in turn, `complete` (the frames
 * taken go back as used, the rest stay for the next round),
 * and after every port was polled, `flush` (one used-index publish and at
 * most one interrupt for what the port received). The egress side of a
 * driver (taking RX buffers, writing a TAP) is specific to its kind and
 * lives in the driver too; src/switch/egress.ts makes the offload
 * decision and calls it.
 *
 * @module
 */

import type { Frame } from "../frame.ts";

/**
 * Frames taken from one ingress queue per round. Bounds the work one busy
 * guest can take from the others (CHECKLIST item 27); tuned in issue 4's
 * loop benchmark.
 */
export const BURST = 32;

/** What the engine asks of every port driver. */
export interface PortDriver {
  /** The driver's frame records; `receive` fills them from index 0. */
  readonly burst: readonly Frame[];
  /**
   * Whether `receive` parses its frames (header, MACs, offload validation:
   * ingress.ts). A TAP's kernel frames are parsed as they are read, into
   * the driver's own slots. A guest's are not: the engine parses each one
   * just before it classifies and delivers it (engine.ts #poll says why).
   */
  readonly parses: boolean;
  /**
   * Takes up to `max` frames into `burst[0..n)`, parsed if `parses`. A
   * frame that failed is counted and has `out === OUT_DROP`. Returns n (0:
   * nothing waiting). A corrupt queue breaks the port and returns 0.
   */
  receive(max: number): number;
  /**
   * Ends the burst: frames [0, taken) were delivered (or dropped) and are
   * released; frames [taken, n) were held back and come first in the next
   * `receive`. Of those, [taken, seen) were counted and captured already
   * (`Frame.again` next time); the engine stops at a held frame, so the
   * ones after it were not.
   */
  complete(n: number, taken: number, seen: number): void;
  /** End of round: publishes what the port was given, with at most one interrupt. */
  flush(): void;
}
