/**
 * Bench-only instrumentation of the dataplane worker (issue 11, point 1):
 * with `VSWITCH_PROFILE_COUNTS=FILE` in the environment, the worker wraps
 * the split ring's methods (each one touches memory shared with the
 * guest) and the engine's round
 * with counting versions, before any ring exists, and writes the running
 * totals to FILE as JSON about once a second. `bench/profile_loop.ts`
 * reads two snapshots and divides by the frames in between.
 *
 * Without the variable nothing is wrapped: the worker's hot path runs the
 * original methods and pays nothing. With it, every wrapped call costs a
 * Map lookup and a closure call, so the forwarding rate of a counting run
 * is not a figure to report (the counts per frame are).
 *
 * @module
 */

import { SplitRing } from "../virtio/split_ring.ts";
import type { Virtqueue } from "../virtio/virtqueue.ts";
import { Engine } from "./engine.ts";

/** The environment variable naming the output file. */
export const PROFILE_COUNTS_ENV = "VSWITCH_PROFILE_COUNTS";

/** Most frames counted in one bucket of the per-poll histogram (a burst). */
const HIST_MAX = 64;

/** Counts for one ring (also the shape bench/profile_loop.ts reads back). */
export interface RingCounts {
  /** `available()` calls: one Atomics.load of avail.idx each. */
  availReads: number;
  /** ... of which found nothing new. */
  availEmpty: number;
  /** `walk()` calls: chains walked (TX: frames popped; RX: buffers taken). */
  walks: number;
  /** `pushUsed()` calls: used entries written. */
  usedEntries: number;
  /** `publish()` calls that stored used.idx (pendingUsed > 0). */
  publishes: number;
  /** ... and those whose answer was "the guest wants an interrupt". */
  wantInterrupt: number;
  /** `setNoNotify()` calls (a store to used.flags or avail_event, when sleeping/waking). */
  notifyStores: number;
  /** Histogram of `available()` results (clamped to HIST_MAX), TX rings only matter. */
  hist: number[];
}

function newCounts(): RingCounts {
  return {
    availReads: 0,
    availEmpty: 0,
    walks: 0,
    usedEntries: 0,
    publishes: 0,
    wantInterrupt: 0,
    notifyStores: 0,
    hist: new Array(HIST_MAX + 1).fill(0),
  };
}

/**
 * Installs the counting wrappers if `VSWITCH_PROFILE_COUNTS` is set (and
 * readable); otherwise does nothing. Call once, before any ring is made.
 */
export function installProfileCounts(): void {
  let file: string | undefined;
  try {
    file = Deno.env.get(PROFILE_COUNTS_ENV);
  } catch {
    return; // no env permission: no profiling
  }
  if (!file) return;
  const out = file;
  const rings = new Map<Virtqueue, RingCounts>();
  const of = (r: Virtqueue): RingCounts => {
    let c = rings.get(r);
    if (c === undefined) rings.set(r, c = newCounts());
    return c;
  };
  const totals = {
    rounds: 0,
    roundsWithWork: 0,
    framesTaken: 0,
    roundHist: new Array(HIST_MAX + 1).fill(0) as number[],
  };

  const ring = SplitRing.prototype;
  const available = ring.available;
  ring.available = function (this: SplitRing): number {
    const n = available.call(this);
    const c = of(this);
    c.availReads++;
    if (n === 0) c.availEmpty++;
    if (n >= 0) c.hist[n > HIST_MAX ? HIST_MAX : n]++;
    return n;
  };
  const walk = ring.walk;
  ring.walk = function (this: SplitRing, ...args: Parameters<SplitRing["walk"]>): number {
    of(this).walks++;
    return walk.apply(this, args);
  };
  const pushUsed = ring.pushUsed;
  ring.pushUsed = function (this: SplitRing, head: number, len: number): void {
    of(this).usedEntries++;
    pushUsed.call(this, head, len);
  };
  const publish = ring.publish;
  ring.publish = function (this: SplitRing): boolean {
    const pending = this.pendingUsed;
    const want = publish.call(this);
    if (pending > 0) {
      const c = of(this);
      c.publishes++;
      if (want) c.wantInterrupt++;
    }
    return want;
  };
  const setNoNotify = ring.setNoNotify;
  ring.setNoNotify = function (this: SplitRing, on: boolean): void {
    of(this).notifyStores++;
    setNoNotify.call(this, on);
  };
  let lastWrite = performance.now();
  const round = Engine.prototype.round;
  Engine.prototype.round = function (this: Engine, now: number): number {
    const work = round.call(this, now);
    totals.rounds++;
    totals.framesTaken += work;
    totals.roundHist[work > HIST_MAX ? HIST_MAX : work]++;
    if (work > 0) totals.roundsWithWork++;
    if ((totals.rounds & 1023) === 0 && now - lastWrite >= 1000) {
      lastWrite = now;
      write(this);
    }
    return work;
  };

  const write = (engine: Engine) => {
    const ports = engine.ports.map((p) => ({
      id: p.id,
      name: p.name,
      rx: p.vq?.rx ? of(p.vq.rx) : null,
      tx: p.vq?.tx ? of(p.vq.tx) : null,
    }));
    const snapshot = { t: performance.now(), ...totals, ports };
    try {
      Deno.writeTextFileSync(`${out}.tmp`, JSON.stringify(snapshot));
      Deno.renameSync(`${out}.tmp`, out); // readers never see half a file
    } catch { /* profiling must not stop the switch */ }
  };
}
