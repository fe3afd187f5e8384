/**
 * Seeded, reproducible fuzz targets for the hostile-input checklist
 * (/work/shared/CHECKLIST.md), built on fast-check properties:
 *
 * - `a`  vhost-user messages against `VhostUserDevice` with a fake backend
 *        (items 3–14): a message grammar, real memfds / eventfds / /dev/zero
 *        as attached fds, fd and mapping accounting.
 * - `a2` message framing through a real `Connection` over a socketpair and a
 *        `Reactor` (items 1–4): random byte streams, header fields, truncated
 *        payloads, EOF mid-message, fds in random chunks.
 * - `b`  the split ring (VIRTIO 1.2 §2.7) over random guest memory (items
 *        15–21, 28): chain walks checked against an independent model, avail
 *        and used ring accesses checked at their true offsets.
 * - `b2` the forwarding `Engine` between one hostile and one well-formed
 *        guest (items 22–27, 33): a model of the hostile TX ring, the
 *        virtio-net header checks (§5.1.6) and the FDB predicts the counters
 *        and every frame the good guest receives; write sets are diffed.
 * - `c`  virtio-net header validation (items 23, 34–37) over random headers
 *        and almost-valid frames: capture reads only the frame, codes are
 *        known, acceptance equals an independent model's.
 * - `c2` checksum completion and software segmentation (item 38) of what
 *        `c` accepts: MTU, reference checksums, rebuilt headers, payload
 *        concatenation, guard bytes around every destination segment.
 *
 * Every target is a deterministic function of fast-check's seed and path,
 * except `a2`, whose chunks reach the connection with real socket timing
 * (the byte stream and fds are the same on replay; only how much arrived per
 * read may differ).
 *
 * This file is the registry (TARGETS, TARGET_NAMES, failureReport); the
 * targets live in messages.ts (`a`), framing.ts (`a2`), rings.ts (`b`) and
 * engine.ts (`b2`), offload.ts (`c`, `c2`), over common.ts, fds.ts, fake_backend.ts,
 * guest_memory.ts, ring_layout.ts, ring_model.ts and good_guest.ts.
 *
 * @module
 */

import fc from "fast-check";
import { describe, type RunOptions, type TargetOutcome } from "./common.ts";
import { runTargetA } from "./messages.ts";
import { runTargetA2 } from "./framing.ts";
import { runTargetB } from "./rings.ts";
import { runTargetB2 } from "./engine.ts";
import { runTargetC, runTargetC2 } from "./offload.ts";

export { tracing } from "./common.ts";

/** One fuzz target. */
export interface Target {
  name: TargetName;
  /** One line: what it covers. */
  title: string;
  /** Runs for `deno task fuzz` when --runs is not given. */
  defaultRuns: number;
  /** Runs the fixed-seed unit test does (keeps `deno test` under a minute). */
  testRuns: number;
  run(opts: RunOptions): Promise<TargetOutcome>;
}

/** Target names, in the order `all` runs them. */
export const TARGET_NAMES = ["a", "a2", "b", "b2", "c", "c2"] as const;
/** One of TARGET_NAMES. */
export type TargetName = typeof TARGET_NAMES[number];

/**
 * The failure report: fast-check's (seed, path, counterexample, error) and
 * the command that replays it.
 */
export function failureReport(target: TargetName, outcome: TargetOutcome): string {
  const d = outcome.details;
  const text = fc.defaultReportMessage(d) ?? "(no report)";
  const replay = d.counterexamplePath === null
    ? ""
    : `\nReplay: deno task fuzz --target ${target} --seed ${d.seed} --path ${d.counterexamplePath}`;
  const error = d.errorInstance === null ? "" : `\nError: ${describe(d.errorInstance)}`;
  return `Target ${target} failed (seed ${d.seed}, path ${d.counterexamplePath}):\n${text}${error}${replay}`;
}

// ---------------------------------------------------------------------------
// Registry
// ---------------------------------------------------------------------------

/** Every target, by name. */
export const TARGETS: Record<TargetName, Target> = {
  a: {
    name: "a",
    title: "vhost-user messages → VhostUserDevice (fake backend, real fds)",
    defaultRuns: 20_000,
    testRuns: 1500,
    run: runTargetA,
  },
  a2: {
    name: "a2",
    title: "byte streams + fds → Connection over a socketpair (Reactor)",
    defaultRuns: 2_000,
    testRuns: 300,
    run: runTargetA2,
  },
  b: {
    name: "b",
    title: "split ring over random guest memory (walk vs model, avail/used)",
    defaultRuns: 20_000,
    testRuns: 3000,
    run: runTargetB,
  },
  b2: {
    name: "b2",
    title: "Engine: hostile + well-formed guest (model, counters, write sets)",
    defaultRuns: 2_000,
    testRuns: 300,
    run: runTargetB2,
  },
  c: {
    name: "c",
    title: "virtio-net header validation vs a model (random headers, almost-valid frames)",
    defaultRuns: 20_000,
    testRuns: 3000,
    run: runTargetC,
  },
  c2: {
    name: "c2",
    title: "checksum completion + segmentation (MTU, reference checksums, payload, guards)",
    defaultRuns: 5_000,
    testRuns: 600,
    run: runTargetC2,
  },
};
