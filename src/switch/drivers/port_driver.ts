/**
 * The burst interface every port driver offers the engine. A driver owns
 * one queue pair of one port — a vhost-user net device's RX/TX virtqueue
 * pair (vhost_net.ts), a TAP queue (tap.ts) — and its own frame records,
 * so the engine switches bursts without knowing where frames come from.
 * Multiqueue then becomes "worker i owns queue pair i of every port":
 * each worker gets its own drivers, and nothing in a driver is shared.
 *
 * One round, per driver: `receive` (pop and parse a burst into the
 * driver's records), the engine classifies and delivers them, `complete`
 * (the frames taken go back as used, the rest stay for the next round),
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
   * Takes up to `max` frames into `burst[0..n)` and parses each (header,
   * MACs, offload validation). A frame that failed is counted and has
   * `out === OUT_DROP`. Returns n (0: nothing waiting). A corrupt queue
   * breaks the port and returns 0.
   */
  receive(max: number): number;
  /**
   * Ends the burst: frames [0, taken) were delivered (or dropped) and are
   * released; frames [taken, n) were held back and come first in the next
   * `receive`.
   */
  complete(n: number, taken: number): void;
  /** End of round: publishes what the port was given, with at most one interrupt. */
  flush(): void;
}
