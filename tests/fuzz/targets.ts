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
 *
 * Every target is a deterministic function of fast-check's seed and path,
 * except `a2`, whose chunks reach the connection with real socket timing
 * (the byte stream and fds are the same on replay; only how much arrived per
 * read may differ).
 *
 * @module
 */

import fc from "fast-check";
import { configure, type LogRecord, reset as resetLogging } from "@logtape/logtape";
import { cString, libc } from "../../ffi/libc.ts";
import { closeAll, closeFd } from "../../ffi/io.ts";
import {
  addSeals,
  fcntl,
  ftruncate,
  type Mapping,
  memfdCreate,
  mmap,
  munmap,
} from "../../ffi/memory.ts";
import { eventfdCreate } from "../../ffi/eventfd.ts";
import { MessageIo, socketPair } from "../../ffi/socket.ts";
import {
  F_SEAL_SHRINK,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  O_CLOEXEC,
  O_RDWR,
  PROT_READ,
  PROT_WRITE,
} from "../../ffi/constants.ts";
import { logger } from "../../src/log.ts";
import { Connection } from "../../src/vhost_user/connection.ts";
import {
  type DeviceBackend,
  type Message,
  NUM_RINGS,
  type Outcome,
  ProtocolError,
  VhostUserDevice,
} from "../../src/vhost_user/device.ts";
import type { MappedRegion } from "../../src/vhost_user/memory_table.ts";
import { Reactor } from "../../src/vhost_user/reactor.ts";
import { MAX_RING_SIZE, Request } from "../../src/vhost_user/protocol.ts";
import type { QueueStart } from "../../src/switch/dataplane_api.ts";
import { GuestMemory } from "../../src/virtio/guest_memory.ts";
import {
  needEvent,
  ringPartSizes,
  SplitRing,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  WalkError,
} from "../../src/virtio/split_ring.ts";
import { SegList } from "../../src/virtio/chain.ts";
import { BURST, DpPort, Engine, PortKind } from "../../src/switch/engine.ts";
import { Fdb } from "../../src/switch/fdb.ts";
import {
  COUNTER_NAMES,
  COUNTERS_PER_PORT,
  createCounterBuffer,
} from "../../src/switch/counters.ts";

// ---------------------------------------------------------------------------
// Running targets
// ---------------------------------------------------------------------------

/** How to run one target. */
export interface RunOptions {
  /** fast-check seed (printed on failure; replays the same inputs). */
  seed: number;
  /** Runs (generated inputs) before declaring success. */
  numRuns: number;
  /** fast-check replay path from a failure report ("12:3:0"). */
  path?: string;
  /** Called before every evaluation of the property (watchdog heartbeat). */
  onEval?: (failedBefore: boolean) => void;
}

/** What a target run produced. */
export interface TargetOutcome {
  details: fc.RunDetails<unknown>;
  /** Wall time of the run, setup included. */
  ms: number;
  /** Property evaluations (runs + shrinking steps). */
  evals: number;
  /** Coverage counters (how often each outcome was reached), for the summary. */
  stats: Record<string, number>;
}

/** Coverage counters of the target being run. */
let stats: Record<string, number> = {};

function count(key: string, n = 1): void {
  stats[key] = (stats[key] ?? 0) + n;
}

function resetStats(): Record<string, number> {
  stats = {};
  return stats;
}

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
export const TARGET_NAMES = ["a", "a2", "b", "b2"] as const;
/** One of TARGET_NAMES. */
export type TargetName = typeof TARGET_NAMES[number];

function params(o: RunOptions): fc.Parameters<unknown> {
  if (o.path === undefined) return { seed: o.seed, numRuns: o.numRuns };
  // Replaying a path: run just that input (its first segment is the run index)
  // and stop at the recorded failure instead of shrinking again.
  const run = Number(o.path.split(":")[0]);
  return { seed: o.seed, numRuns: run + 1, path: o.path, endOnFailure: true };
}

/** Wraps a predicate so the heartbeat sees each evaluation. */
function counted<T>(
  o: RunOptions,
  state: { evals: number; failed: boolean },
  f: (v: T) => Promise<void>,
) {
  return async (v: T): Promise<void> => {
    state.evals++;
    o.onEval?.(state.failed);
    try {
      await f(v);
    } catch (e) {
      state.failed = true;
      throw e;
    }
  };
}

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
// Process accounting and escape traps (shared)
// ---------------------------------------------------------------------------

const F_GETFD = 1;
const F_DUPFD_CLOEXEC = 1030;
const MAP_NORESERVE = 0x4000;
const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const TWO32 = 2 ** 32;

/** True if `fd` is an open descriptor of this process. */
function isOpen(fd: number): boolean {
  return libc.fcntl(fd, F_GETFD, 0) >= 0;
}

/** Open fds of this process (/proc/self/fd; the directory's own fd included). */
function fdCount(): number {
  let n = 0;
  for (const _ of Deno.readDirSync("/proc/self/fd")) n++;
  return n;
}

/** fd → target, for a readable leak report. */
function fdTable(): Map<string, string> {
  const out = new Map<string, string>();
  for (const e of Deno.readDirSync("/proc/self/fd")) {
    try {
      out.set(e.name, Deno.readLinkSync(`/proc/self/fd/${e.name}`));
    } catch { /* the directory's own fd */ }
  }
  return out;
}

/**
 * The fds that can be the fuzzer's or the switch's: memfds named vsfuzz-*,
 * /dev/zero, eventfds, and the sockets named in `sockets` (this run's pair).
 * Deno's runtime opens fds of its own at times of its choosing (its update
 * check reads CA certificates and opens a socketpair and DNS sockets a few
 * hundred ms after start), so the exact invariant is on these; the raw
 * /proc/self/fd count is reported with any failure.
 */
function ourFds(sockets: readonly string[] = []): Map<string, string> {
  const out = new Map<string, string>();
  for (const [fd, target] of fdTable()) {
    if (
      target.includes("vsfuzz") || target.startsWith("/dev/zero") ||
      target === "anon_inode:[eventfd]" || sockets.includes(target)
    ) out.set(fd, target);
  }
  return out;
}

function sameFds(a: Map<string, string>, b: Map<string, string>): boolean {
  if (a.size !== b.size) return false;
  for (const [k, v] of a) if (b.get(k) !== v) return false;
  return true;
}

function fdDiff(before: Map<string, string>, after: Map<string, string>): string {
  const out: string[] = [];
  for (const [k, v] of after) if (before.get(k) !== v) out.push(`+${k}=${v}`);
  for (const [k, v] of before) if (after.get(k) !== v) out.push(`-${k}=${v}`);
  return out.join(" ");
}

/**
 * Mappings of the files the fuzzer hands out (our memfds and /dev/zero).
 * The whole /proc/self/maps line count also moves with V8's heap, so the
 * exact invariant is on these lines; the total is reported alongside.
 */
function ourMappings(): { ours: number; total: number } {
  const lines = Deno.readTextFileSync("/proc/self/maps").split("\n");
  let ours = 0;
  for (const l of lines) if (l.includes("vsfuzz") || l.includes("/dev/zero")) ours++;
  return { ours, total: lines.length };
}

/** unhandledrejection / error listeners: anything that escapes is recorded, not fatal. */
class EscapeTrap {
  readonly seen: string[] = [];
  readonly #rej = (e: PromiseRejectionEvent) => {
    e.preventDefault();
    this.seen.push(`unhandled rejection: ${describe(e.reason)}`);
  };
  readonly #err = (e: ErrorEvent) => {
    e.preventDefault();
    this.seen.push(`uncaught error: ${describe(e.error ?? e.message)}`);
  };

  install(): void {
    globalThis.addEventListener("unhandledrejection", this.#rej);
    globalThis.addEventListener("error", this.#err);
  }

  uninstall(): void {
    globalThis.removeEventListener("unhandledrejection", this.#rej);
    globalThis.removeEventListener("error", this.#err);
  }

  take(): string[] {
    return this.seen.splice(0);
  }
}

function describe(e: unknown): string {
  return e instanceof Error ? (e.stack ?? e.message) : String(e);
}

/**
 * Error-level log records under "vswitch": the reactor logs a handler that
 * threw, the connection a close that failed — both are bugs the code only
 * survives. Lower levels (the device's refusals) are expected and dropped.
 */
const errorLogs: string[] = [];

async function captureErrorLogs(): Promise<void> {
  await configure({
    reset: true,
    sinks: {
      fuzz: (r: LogRecord) => {
        const text = r.message.map((p) => typeof p === "string" ? p : Deno.inspect(p)).join("");
        errorLogs.push(`${r.category.join(".")} ${r.level}: ${text}`);
      },
    },
    loggers: [
      { category: ["vswitch"], lowestLevel: "error", sinks: ["fuzz"] },
      { category: ["logtape", "meta"], lowestLevel: "error", sinks: ["fuzz"] },
    ],
  });
}

function fail(msg: string): never {
  throw new Error(msg);
}

const tick = () => new Promise<void>((r) => setTimeout(r, 0));

/**
 * A crash (SIGBUS, SIGSEGV) ends the process before fast-check can report;
 * with tracing on, every input is written to stderr first, synchronously,
 * so the last lines name the culprit (`deno task fuzz --trace`).
 */
export const tracing = { on: false };
const encoder = new TextEncoder();

function trace(what: () => string): void {
  if (tracing.on) Deno.stderr.writeSync(encoder.encode(what() + "\n"));
}

function show(v: unknown): string {
  return fc.stringify(v);
}

// ---------------------------------------------------------------------------
// Target a: vhost-user messages and the device state machine
// ---------------------------------------------------------------------------

/**
 * Kinds of fd a message may carry, each a real kernel object: memfds of
 * several sizes (some sealed against shrinking, CHECKLIST item 7), one of
 * 6 GiB (regions above 4 GiB, offsets ≥ 2^32), an eventfd (kick/call/err,
 * or a memory "region" that cannot be mapped) and /dev/zero (mappable,
 * not a regular file: no size to check).
 */
export const FD_KINDS = [
  "mem0",
  "mem4k",
  "mem64k",
  "mem1m",
  "mem1m-sealed",
  "mem2m-sealed",
  "mem6g-sealed",
  "eventfd",
  "devzero",
] as const;
type FdKind = typeof FD_KINDS[number];

const FILE_SIZE: Record<FdKind, number> = {
  "mem0": 0,
  "mem4k": 4 * KiB,
  "mem64k": 64 * KiB,
  "mem1m": MiB,
  "mem1m-sealed": MiB,
  "mem2m-sealed": 2 * MiB,
  "mem6g-sealed": 6 * GiB,
  "eventfd": 0,
  "devzero": MiB, // nominal: /dev/zero maps any size
};

/** One template fd per kind; messages get fresh dups (the device may close what it gets). */
class FdPool {
  readonly #fds = new Map<FdKind, number>();

  constructor() {
    for (const kind of FD_KINDS) {
      let fd: number;
      if (kind === "eventfd") fd = eventfdCreate();
      else if (kind === "devzero") {
        fd = libc.open(cString("/dev/zero"), O_RDWR | O_CLOEXEC, 0);
        if (fd < 0) throw new Error("Cannot open /dev/zero");
      } else {
        fd = memfdCreate(`vsfuzz-${kind}`);
        ftruncate(fd, FILE_SIZE[kind]); // sparse: a 6 GiB memfd costs nothing until touched
        if (kind.endsWith("sealed")) addSeals(fd, F_SEAL_SHRINK);
      }
      this.#fds.set(kind, fd);
    }
  }

  /** A new fd for the same kernel object (dup; libc `dup` is not bound, fcntl is). */
  dup(kind: FdKind): number {
    return fcntl(this.#fds.get(kind)!, F_DUPFD_CLOEXEC, 0);
  }

  /** Whether every template is still open (a device closing a foreign fd would show here). */
  allOpen(): boolean {
    for (const fd of this.#fds.values()) if (!isOpen(fd)) return false;
    return true;
  }

  close(): void {
    closeAll(this.#fds.values());
  }
}

/** One generated message: what is sent and which fds come with it. */
export interface MsgSpec {
  request: number;
  flags: number;
  payload: Uint8Array;
  fds: FdKind[];
}

const V = 1; // VERSION
const NEED_REPLY = 8;

function u64s(...vals: bigint[]): Uint8Array {
  const b = new Uint8Array(8 * vals.length);
  const v = new DataView(b.buffer);
  vals.forEach((x, i) => v.setBigUint64(8 * i, BigInt.asUintN(64, x), true));
  return b;
}

function vringState(index: number, num: number): Uint8Array {
  const b = new Uint8Array(8);
  const v = new DataView(b.buffer);
  v.setUint32(0, index >>> 0, true);
  v.setUint32(4, num >>> 0, true);
  return b;
}

const U32_MAX = 0xffff_ffff;
const u32Arb = fc.integer({ min: 0, max: U32_MAX });
/** u64 values that break arithmetic: 2^53 edges, 2^63, 2^64 − 1, and anything. */
const u64Arb = fc.oneof(
  fc.constantFrom(0n, 1n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 53n + 1n, 2n ** 63n, 2n ** 64n - 1n),
  fc.constantFrom(2n ** 64n - 0x1000n, 2n ** 32n, 2n ** 32n - 1n, 0x7fff_ffff_f000n),
  fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
);

/** Guest-physical and frontend-virtual bases of the three region slots. */
const GPA_SLOTS = [0n, 0x1_0000_0000n, 0x10_0000_0000n];
const UVA_SLOTS = [0x7f00_0000_0000n, 0x7f40_0000_0000n, 0x7f80_0000_0000n];

/**
 * Ring index u32: mostly 0/1, then values that test the bound and the
 * CVE-2020-10723 pattern (an index whose low 16 or 8 bits look valid).
 */
const ringIndexArb = fc.oneof(
  { weight: 10, arbitrary: fc.constantFrom(0, 1) },
  {
    weight: 2,
    arbitrary: fc.constantFrom(2, 0xff, 0x100, 0x101, 0x1_0000, 0x1_0001, 0x8000_0000, U32_MAX),
  },
  { weight: 1, arbitrary: u32Arb },
);

/** Ring sizes: valid powers of two and item 11's zero, non-powers and > 32768. */
const ringSizeArb = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom(1, 2, 64, 256, 1024, 32768) },
  { weight: 2, arbitrary: fc.constantFrom(0, 3, 255, 65536, 0x1_0100, 0x8000_0000, U32_MAX) },
  { weight: 1, arbitrary: u32Arb },
);

const OFFERED_FEATURE_BITS = [3n, 15n, 28n, 29n, 30n, 32n];
const featuresArb = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.subarray(OFFERED_FEATURE_BITS).map((bits) =>
      bits.reduce((a, b) => a | (1n << b), 0n)
    ),
  },
  // A bit we never offered (CSUM, CTRL_VQ, RING_PACKED) or anything: item 14.
  { weight: 1, arbitrary: fc.constantFrom(1n << 0n, 1n << 17n, 1n << 34n, 2n ** 64n - 1n) },
  { weight: 1, arbitrary: u64Arb },
);

const protocolFeaturesArb = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.subarray([0n, 3n, 4n]).map((bits) => bits.reduce((a, b) => a | (1n << b), 0n)),
  },
  // LOG_SHMFD, BACKEND_REQ, CONFIG: not offered.
  { weight: 1, arbitrary: fc.constantFrom(1n << 1n, 1n << 5n, 1n << 9n) },
  { weight: 1, arbitrary: u64Arb },
);

interface RegionSpec {
  gpa: bigint;
  size: bigint;
  uva: bigint;
  offset: bigint;
  fd: FdKind;
}

const MEM_KINDS: FdKind[] = [
  "mem1m",
  "mem1m-sealed",
  "mem2m-sealed",
  "mem2m-sealed",
  "mem6g-sealed",
  "mem64k",
  "devzero",
];

/** A region that matches its fd (so the table can be mapped), or one shape off. */
const coherentRegionArb = fc.record({
  slot: fc.integer({ min: 0, max: 2 }),
  kind: fc.constantFrom(...MEM_KINDS),
  shape: fc.constantFrom("whole", "whole", "whole", "half", "page", "tail", "past-end"),
}).map(({ slot, kind, shape }): RegionSpec => {
  const f = BigInt(FILE_SIZE[kind]);
  const [offset, size] = shape === "whole"
    ? [0n, f]
    : shape === "half"
    ? [0n, f / 2n]
    : shape === "page"
    ? [4096n, 4096n]
    : shape === "tail"
    ? [f / 2n + 100n, f / 2n - 100n] // unaligned mmap offset (skew inside the page)
    : [4096n, f]; // item 7: runs past the end of the file
  return { gpa: GPA_SLOTS[slot], size, uva: UVA_SLOTS[slot], offset, fd: kind };
});

const randomRegionArb = fc.record({
  gpa: fc.oneof(fc.constantFrom(...GPA_SLOTS), u64Arb),
  size: fc.oneof(fc.constantFrom(0n, 4096n, 0x10_0000n, 2n ** 53n), u64Arb),
  uva: fc.oneof(fc.constantFrom(...UVA_SLOTS), u64Arb),
  offset: fc.oneof(fc.constantFrom(0n, 1n, 4096n), u64Arb),
  fd: fc.constantFrom(...FD_KINDS),
});

function memTablePayload(regions: RegionSpec[], count = regions.length): Uint8Array {
  const p = new Uint8Array(8 + 32 * regions.length);
  const v = new DataView(p.buffer);
  v.setUint32(0, count >>> 0, true);
  regions.forEach((r, i) => {
    const o = 8 + 32 * i;
    v.setBigUint64(o, BigInt.asUintN(64, r.gpa), true);
    v.setBigUint64(o + 8, BigInt.asUintN(64, r.size), true);
    v.setBigUint64(o + 16, BigInt.asUintN(64, r.uva), true);
    v.setBigUint64(o + 24, BigInt.asUintN(64, r.offset), true);
  });
  return p;
}

/** SET_MEM_TABLE: coherent tables (distinct slots), or anything (items 5–8). */
const memTableArb: fc.Arbitrary<MsgSpec> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.uniqueArray(coherentRegionArb, {
      minLength: 1,
      maxLength: 3,
      selector: (r) => r.gpa,
    }),
  },
  {
    weight: 2,
    arbitrary: fc.array(fc.oneof(coherentRegionArb, randomRegionArb), { maxLength: 9 }),
  },
).chain((regions) =>
  fc.oneof(
    { weight: 6, arbitrary: fc.constant(regions.length) },
    { weight: 1, arbitrary: fc.constantFrom(0, 9, regions.length + 1, 0x8000_0001) },
  ).map((count) => ({
    request: Request.SET_MEM_TABLE,
    flags: V,
    payload: memTablePayload(regions, count),
    fds: regions.map((r) => r.fd),
  }))
);

/** A frontend-virtual address: near a slot's base (aligned or not), above 4 GiB, or anything. */
const ringAddrArb = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      slot: fc.integer({ min: 0, max: 2 }),
      page: fc.integer({ min: 0, max: 40 }),
      sub: fc.constantFrom(0, 0, 0, 0, 16, 0x800, 1, 2, 4, 8),
    }).map(({ slot, page, sub }) => UVA_SLOTS[slot] + BigInt(page * 0x1000 + sub)),
  },
  {
    weight: 1,
    arbitrary: fc.integer({ min: 0, max: 2 }).map((slot) => UVA_SLOTS[slot] + 2n ** 32n + 0x2000n),
  },
  {
    weight: 1,
    arbitrary: fc.record({ slot: fc.integer({ min: 0, max: 2 }), back: fc.nat({ max: 0x1000 }) })
      .map(({ slot, back }) => UVA_SLOTS[slot] + 0x10_0000n - BigInt(back)),
  },
  { weight: 1, arbitrary: u64Arb },
);

/**
 * Ring layouts that fit a 1 MiB (or 6 GiB) region for every size up to
 * 32768, so rings actually start; or three independent addresses.
 */
const ringLayoutArb = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      slot: fc.integer({ min: 0, max: 2 }),
      at: fc.constantFrom(0n, 0n, 0x1000n, 0x10_0000n, 2n ** 32n, 5n * 2n ** 30n),
      compact: fc.boolean(),
    }).map(({ slot, at, compact }) => {
      const b = UVA_SLOTS[slot] + at;
      return compact
        ? { desc: b, avail: b + 0x4000n, used: b + 0x5000n }
        : { desc: b, avail: b + 0x8_0000n, used: b + 0x9_0000n };
    }),
  },
  { weight: 2, arbitrary: fc.record({ desc: ringAddrArb, avail: ringAddrArb, used: ringAddrArb }) },
);

function vringAddrPayload(
  index: number,
  flags: number,
  a: { desc: bigint; avail: bigint; used: bigint },
  log = 0n,
): Uint8Array {
  const p = new Uint8Array(40);
  const v = new DataView(p.buffer);
  v.setUint32(0, index >>> 0, true);
  v.setUint32(4, flags >>> 0, true);
  // struct vhost_vring_addr: desc, used, avail, log (vhost-user.rst "Vring address description").
  v.setBigUint64(8, BigInt.asUintN(64, a.desc), true);
  v.setBigUint64(16, BigInt.asUintN(64, a.used), true);
  v.setBigUint64(24, BigInt.asUintN(64, a.avail), true);
  v.setBigUint64(32, BigInt.asUintN(64, log), true);
  return p;
}

/** SET_VRING_KICK/CALL/ERR: u64 with index in bits 0–7 and "no fd" in bit 8 (item 13). */
function vringFdArb(request: number): fc.Arbitrary<MsgSpec> {
  return fc.record({
    index: fc.oneof(
      { weight: 8, arbitrary: fc.constantFrom(0, 1) },
      { weight: 1, arbitrary: fc.constantFrom(2, 0xff, 0x200, 0x1_0000, 0x8000_0000) },
    ),
    noFd: fc.oneof({ weight: 5, arbitrary: fc.constant(false) }, {
      weight: 1,
      arbitrary: fc.constant(true),
    }),
    hi: fc.oneof({ weight: 8, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: u32Arb }),
  }).map(({ index, noFd, hi }) => {
    const p = new Uint8Array(8);
    const v = new DataView(p.buffer);
    v.setUint32(0, (index | (noFd ? 0x100 : 0)) >>> 0, true);
    v.setUint32(4, hi, true);
    return { request, flags: V, payload: p, fds: noFd ? [] : ["eventfd" as FdKind] };
  });
}

const empty = (request: number): fc.Arbitrary<MsgSpec> =>
  fc.constant<MsgSpec>({ request, flags: V, payload: new Uint8Array(0), fds: [] });
const u64Msg = (request: number, arb: fc.Arbitrary<bigint>): fc.Arbitrary<MsgSpec> =>
  arb.map((x) => ({ request, flags: V, payload: u64s(x), fds: [] }));
const stateMsg = (request: number, num: fc.Arbitrary<number>): fc.Arbitrary<MsgSpec> =>
  fc.tuple(ringIndexArb, num).map(([i, n]) => ({
    request,
    flags: V,
    payload: vringState(i, n),
    fds: [],
  }));

/** A well-formed message of one request code (vhost-user.rst "Front-end message types"). */
const wellFormedArb: fc.Arbitrary<MsgSpec> = fc.oneof(
  { weight: 1, arbitrary: empty(Request.GET_FEATURES) },
  { weight: 3, arbitrary: u64Msg(Request.SET_FEATURES, featuresArb) },
  { weight: 1, arbitrary: empty(Request.SET_OWNER) },
  { weight: 1, arbitrary: empty(Request.RESET_OWNER) },
  { weight: 4, arbitrary: memTableArb },
  {
    weight: 1,
    // SET_LOG_BASE: u64 size, u64 offset + an fd; LOG_SHMFD is never offered (item 14).
    arbitrary: fc.tuple(u64Arb, u64Arb).map(([s, o]) => ({
      request: Request.SET_LOG_BASE,
      flags: V,
      payload: u64s(s, o),
      fds: ["mem64k" as FdKind],
    })),
  },
  {
    weight: 1,
    arbitrary: fc.constant<MsgSpec>({
      request: Request.SET_LOG_FD,
      flags: V,
      payload: u64s(0n),
      fds: ["eventfd" as FdKind],
    }),
  },
  { weight: 4, arbitrary: stateMsg(Request.SET_VRING_NUM, ringSizeArb) },
  {
    weight: 4,
    arbitrary: fc.tuple(
      ringIndexArb,
      fc.oneof({ weight: 8, arbitrary: fc.constant(0) }, {
        weight: 1,
        arbitrary: fc.constantFrom(1, U32_MAX),
      }),
      ringLayoutArb,
      fc.oneof({ weight: 8, arbitrary: fc.constant(0n) }, { weight: 1, arbitrary: u64Arb }),
    ).map(([i, f, a, log]) => ({
      request: Request.SET_VRING_ADDR,
      flags: V,
      payload: vringAddrPayload(i, f, a, log),
      fds: [],
    })),
  },
  {
    weight: 2,
    arbitrary: stateMsg(
      Request.SET_VRING_BASE,
      fc.oneof(fc.constantFrom(0, 1, 0xffff, 0x1_0000, U32_MAX), fc.nat({ max: 0xffff })),
    ),
  },
  { weight: 2, arbitrary: stateMsg(Request.GET_VRING_BASE, fc.constant(0)) },
  { weight: 3, arbitrary: vringFdArb(Request.SET_VRING_KICK) },
  { weight: 3, arbitrary: vringFdArb(Request.SET_VRING_CALL) },
  { weight: 1, arbitrary: vringFdArb(Request.SET_VRING_ERR) },
  { weight: 1, arbitrary: empty(Request.GET_PROTOCOL_FEATURES) },
  { weight: 2, arbitrary: u64Msg(Request.SET_PROTOCOL_FEATURES, protocolFeaturesArb) },
  { weight: 1, arbitrary: empty(Request.GET_QUEUE_NUM) },
  {
    weight: 3,
    arbitrary: stateMsg(
      Request.SET_VRING_ENABLE,
      fc.oneof({ weight: 6, arbitrary: fc.constantFrom(0, 1) }, {
        weight: 1,
        arbitrary: fc.constantFrom(2, U32_MAX),
      }),
    ),
  },
  { weight: 1, arbitrary: u64Msg(Request.SEND_RARP, u64Arb) },
  {
    weight: 2,
    arbitrary: u64Msg(
      Request.NET_SET_MTU,
      fc.oneof(fc.constantFrom(1500n, 68n, 67n, 9000n, 65535n, 65536n, 0n, 2n ** 53n), u64Arb),
    ),
  },
  {
    // Requests 21..45 exist in the spec; we negotiate none of their features.
    weight: 2,
    arbitrary: fc.tuple(fc.integer({ min: 21, max: 45 }), fc.uint8Array({ maxLength: 40 })).map((
      [request, payload],
    ) => ({ request, flags: V, payload, fds: [] })),
  },
  {
    // Unknown codes (item 3).
    weight: 1,
    arbitrary: fc.tuple(
      fc.oneof(fc.constantFrom(0, 46, 47, 100, 0x8000_0001, U32_MAX), u32Arb),
      fc.uint8Array({ maxLength: 16 }),
    ).map(([request, payload]) => ({ request, flags: V, payload, fds: [] })),
  },
);

type Mutation =
  | { t: "none" }
  | { t: "resize"; len: number }
  | { t: "bytes"; bytes: Uint8Array }
  | { t: "u32"; at: number; v: number }
  | { t: "u64"; at: number; v: bigint };

/** Payload damage: wrong size, random bytes, a u32 with high bits, a huge u64 (items 6, 10, 28). */
const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  { weight: 16, arbitrary: fc.constant({ t: "none" as const }) },
  {
    weight: 1,
    arbitrary: fc.oneof(fc.nat({ max: 48 }), fc.constantFrom(264, 296, 300, 4096)).map((len) => ({
      t: "resize" as const,
      len,
    })),
  },
  {
    weight: 1,
    arbitrary: fc.uint8Array({ maxLength: 64 }).map((bytes) => ({ t: "bytes" as const, bytes })),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      t: fc.constant("u32" as const),
      at: fc.nat({ max: 300 }),
      v: fc.oneof(fc.constantFrom(0x100, 0x1_0000, 0x8000_0000, U32_MAX, 0x1_0001), u32Arb),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ t: fc.constant("u64" as const), at: fc.nat({ max: 300 }), v: u64Arb }),
  },
);

function mutate(p: Uint8Array, m: Mutation): Uint8Array {
  switch (m.t) {
    case "none":
      return p;
    case "resize": {
      const out = new Uint8Array(m.len);
      out.set(p.subarray(0, m.len));
      return out;
    }
    case "bytes":
      return m.bytes;
    case "u32":
    case "u64": {
      const w = m.t === "u32" ? 4 : 8;
      if (p.length < w) return p;
      const out = p.slice();
      const at = Math.floor((m.at % (p.length - w + 1)) / w) * w; // field-aligned
      const v = new DataView(out.buffer);
      if (m.t === "u32") v.setUint32(at, m.v >>> 0, true);
      else v.setBigUint64(at, m.v, true);
      return out;
    }
  }
}

/** Header flags: version 1, need-reply, and the wrong ones (item 3). */
const flagsArb = fc.oneof(
  { weight: 14, arbitrary: fc.constant(V) },
  { weight: 6, arbitrary: fc.constant(V | NEED_REPLY) },
  { weight: 1, arbitrary: fc.constantFrom(0, 2, 3, V | 4, V | 4 | NEED_REPLY, 0x101) },
  { weight: 1, arbitrary: u32Arb },
);

type FdNoise =
  | { t: "keep" }
  | { t: "drop" }
  | { t: "add"; kinds: FdKind[] }
  | { t: "set"; kinds: FdKind[] };

/** fds that disagree with the request (items 4, 5, 13). */
const fdNoiseArb: fc.Arbitrary<FdNoise> = fc.oneof(
  { weight: 16, arbitrary: fc.constant({ t: "keep" as const }) },
  { weight: 1, arbitrary: fc.constant({ t: "drop" as const }) },
  {
    weight: 1,
    arbitrary: fc.array(fc.constantFrom(...FD_KINDS), { minLength: 1, maxLength: 3 }).map((
      kinds,
    ) => ({ t: "add" as const, kinds })),
  },
  {
    weight: 1,
    arbitrary: fc.array(fc.constantFrom(...FD_KINDS), { maxLength: 10 }).map((kinds) => ({
      t: "set" as const,
      kinds,
    })),
  },
);

/** Any message of the grammar: a well-formed one, then flags, payload and fd noise. */
export const messageArb: fc.Arbitrary<MsgSpec> = fc.tuple(
  wellFormedArb,
  flagsArb,
  mutationArb,
  fdNoiseArb,
).map(([m, flags, mut, noise]) => ({
  request: m.request,
  flags: flags === V && (m.flags & NEED_REPLY) ? m.flags : flags,
  payload: mutate(m.payload, mut),
  fds: noise.t === "keep"
    ? m.fds
    : noise.t === "drop"
    ? []
    : noise.t === "add"
    ? [...m.fds, ...noise.kinds]
    : noise.kinds,
}));

/**
 * The bring-up a frontend does (vhost-user.rst "Starting and stopping
 * rings"), with the values drawn from the same vocabularies, so random
 * messages after it hit running rings, not only the initial state.
 */
const prologueArb: fc.Arbitrary<MsgSpec[]> = fc.record({
  features: featuresArb,
  proto: protocolFeaturesArb,
  needReply: fc.boolean(),
  region: coherentRegionArb,
  rings: fc.array(
    fc.record({
      size: fc.constantFrom(1, 64, 256, 1024, 32768),
      compact: fc.boolean(),
      base: fc.nat({ max: 0xffff }),
      kickFd: fc.boolean(),
    }),
    { minLength: 1, maxLength: 2 },
  ),
}).map(({ features, proto, needReply, region, rings }) => {
  const flags = needReply ? V | NEED_REPLY : V;
  const slot = GPA_SLOTS.indexOf(region.gpa);
  const out: MsgSpec[] = [
    { request: Request.GET_FEATURES, flags, payload: new Uint8Array(0), fds: [] },
    { request: Request.SET_FEATURES, flags, payload: u64s(features), fds: [] },
    { request: Request.SET_PROTOCOL_FEATURES, flags, payload: u64s(proto), fds: [] },
    {
      request: Request.SET_MEM_TABLE,
      flags,
      payload: memTablePayload([region]),
      fds: [region.fd],
    },
  ];
  rings.forEach((r, i) => {
    const b = UVA_SLOTS[slot] + BigInt(i * 0x1000);
    const layout = r.compact
      ? { desc: b, avail: b + 0x4000n, used: b + 0x5000n }
      : { desc: b, avail: b + 0x8_0000n, used: b + 0x9_0000n };
    const kick = new Uint8Array(8);
    new DataView(kick.buffer).setUint32(0, r.kickFd ? i : i | 0x100, true);
    out.push(
      { request: Request.SET_VRING_NUM, flags, payload: vringState(i, r.size), fds: [] },
      {
        request: Request.SET_VRING_ADDR,
        flags,
        payload: vringAddrPayload(i, 0, layout),
        fds: [],
      },
      { request: Request.SET_VRING_BASE, flags, payload: vringState(i, r.base), fds: [] },
      { request: Request.SET_VRING_CALL, flags, payload: u64s(BigInt(i)), fds: ["eventfd"] },
      { request: Request.SET_VRING_KICK, flags, payload: kick, fds: r.kickFd ? ["eventfd"] : [] },
      { request: Request.SET_VRING_ENABLE, flags, payload: vringState(i, 1), fds: [] },
    );
  });
  return out;
});

/** A connection's worth of messages: maybe a bring-up, then random messages. */
export const sequenceArb: fc.Arbitrary<MsgSpec[]> = fc.tuple(
  fc.option(prologueArb, { freq: 3 }),
  fc.array(messageArb, { maxLength: 24 }),
).map(([pro, rest]) => [...(pro ?? []), ...rest]);

/**
 * A DeviceBackend standing in for the dataplane worker, checking what the
 * device hands it: memory only while no ring runs (item 9), ring parts
 * inside a mapped region, aligned as §2.7 requires (desc 16, avail 2,
 * used 4), sizes a power of two ≤ 32768 (items 11, 12), live fds. It builds
 * the same GuestMemory and SplitRing the worker would and checks they read
 * and write where the device said. Violations are recorded, not thrown:
 * the device must not see an error it would not see in production.
 */
class FakeBackend implements DeviceBackend {
  regions: MappedRegion[] | null = null;
  mem: GuestMemory | null = null;
  readonly running = new Map<number, QueueStart>();
  readonly violations: string[] = [];
  starts = 0;

  #v(msg: string): void {
    this.violations.push(msg);
  }

  setMemory(regions: MappedRegion[] | null): Promise<void> {
    if (this.running.size > 0) {
      this.#v(
        `setMemory(${regions === null ? "null" : "table"}) while rings ${[
          ...this.running.keys(),
        ]} run (item 9)`,
      );
    }
    this.regions = regions;
    this.mem = null;
    if (regions !== null) {
      regions.forEach((r, i) => {
        if (
          !(Number.isSafeInteger(r.gpa) && r.gpa >= 0 && r.size > 0 && Number.isSafeInteger(r.size))
        ) {
          this.#v(`region ${i} has gpa ${r.gpa} size ${r.size}`);
          return;
        }
        // A mapping past the end of its file would SIGBUS right here (item 7).
        const p = new Deno.UnsafePointerView(Deno.UnsafePointer.create(BigInt(r.address))!);
        p.getUint8(0);
        p.getUint8(r.size - 1);
      });
      try {
        const mem = new GuestMemory(regions);
        regions.forEach((r, i) => {
          const want = [r.size, Math.floor(r.size / 2), Math.floor(r.size / 4)];
          const got = [mem.u8[i].length, mem.u16[i].length, mem.u32[i].length];
          if (want.some((w, k) => w !== got[k])) {
            this.#v(
              `GuestMemory views of region ${i} (${r.size} B) cover ${got} elements, want ${want}`,
            );
          }
        });
        this.mem = mem;
      } catch (e) {
        this.#v(`GuestMemory cannot view the table the device accepted: ${describe(e)}`);
      }
    }
    return Promise.resolve();
  }

  startQueue(s: QueueStart): Promise<void> {
    this.starts++;
    const where = `start of ring ${s.q}`;
    if (this.running.has(s.q)) this.#v(`${where}: already running`);
    if (s.q < 0 || s.q >= NUM_RINGS) this.#v(`${where}: no such ring`);
    if (s.size < 1 || s.size > MAX_RING_SIZE || (s.size & (s.size - 1)) !== 0) {
      this.#v(`${where}: size ${s.size} (item 11)`);
    }
    if (!(s.base >= 0 && s.base <= 0xffff)) this.#v(`${where}: base ${s.base}`);
    if (s.hdrLen !== 10 && s.hdrLen !== 12) this.#v(`${where}: header ${s.hdrLen}`);
    for (const fd of [s.kickFd, s.callFd]) {
      if (fd !== -1 && !isOpen(fd)) this.#v(`${where}: fd ${fd} is not open`);
    }
    const regions = this.regions;
    if (regions === null) {
      this.#v(`${where}: no memory table`);
      this.running.set(s.q, s);
      return Promise.resolve();
    }
    const sizes = ringPartSizes(s.size);
    const parts = [["desc", s.desc, sizes.desc, 16], ["avail", s.avail, sizes.avail, 2], [
      "used",
      s.used,
      sizes.used,
      4,
    ]] as const;
    let ok = true;
    for (const [name, part, len, align] of parts) {
      const r = regions[part.region];
      if (
        r === undefined || !Number.isSafeInteger(part.offset) || part.offset < 0 ||
        part.offset + len > r.size || part.offset % align !== 0
      ) {
        this.#v(
          `${where}: ${name} at region ${part.region} offset ${part.offset} (+${len}) not inside / not ${align}-aligned (item 12)`,
        );
        ok = false;
      }
    }
    if (ok && this.mem !== null) this.#useRing(s);
    this.running.set(s.q, s);
    return Promise.resolve();
  }

  // The worker's SplitRing must read avail.idx and write used.flags at the
  // offsets the device validated (typed-array views silently ignore writes
  // beyond their end, and Atomics throw: both would break the port).
  #useRing(s: QueueStart): void {
    const mem = this.mem!;
    const where =
      `ring ${s.q} (size ${s.size}, avail at ${s.avail.region}:${s.avail.offset}, used at ${s.used.region}:${s.used.offset})`;
    try {
      const ring = new SplitRing(
        mem,
        s.size,
        s.desc,
        s.avail,
        s.used,
        s.base,
        s.indirect,
        s.hdrLen + 9018,
        s.eventIdx,
      );
      const a = mem.u8[s.avail.region], ao = s.avail.offset + 2;
      const saved = [a[ao], a[ao + 1]];
      const marker = (s.base + 1) & 0xffff;
      a[ao] = marker & 0xff;
      a[ao + 1] = marker >>> 8;
      const n = ring.available();
      a[ao] = saved[0];
      a[ao + 1] = saved[1];
      if (n !== 1) this.#v(`${where}: available() = ${n} after avail.idx = base + 1`);
      if (!s.eventIdx) {
        const u = mem.u8[s.used.region], uo = s.used.offset;
        const keep = [u[uo], u[uo + 1]];
        u[uo] = 0;
        u[uo + 1] = 0;
        ring.setNoNotify(true);
        const flag = u[uo] | (u[uo + 1] << 8);
        u[uo] = keep[0];
        u[uo + 1] = keep[1];
        if (flag !== 1) this.#v(`${where}: setNoNotify(true) did not set used.flags`);
      }
    } catch (e) {
      this.#v(`${where}: SplitRing failed on a validated ring: ${describe(e)}`);
    }
  }

  stopQueue(q: number): Promise<number> {
    const s = this.running.get(q);
    if (s === undefined) {
      this.#v(`stop of ring ${q} that is not running`);
      return Promise.resolve(0);
    }
    this.running.delete(q);
    return Promise.resolve(s.base);
  }

  setCall(q: number, fd: number): Promise<void> {
    if (!this.running.has(q)) this.#v(`setCall on ring ${q} that is not running`);
    if (fd !== -1 && !isOpen(fd)) this.#v(`setCall(${q}, ${fd}): fd not open`);
    return Promise.resolve();
  }

  setMtu(mtu: number): Promise<void> {
    if (!(Number.isInteger(mtu) && mtu >= 68 && mtu <= 65535)) this.#v(`setMtu(${mtu})`);
    return Promise.resolve();
  }

  take(): string[] {
    return this.violations.splice(0);
  }
}

const fuzzLog = logger("fuzz");

/** Checks what the device holds after a message: fds it owns are open, distinct, not the caller's. */
function checkDevice(
  device: VhostUserDevice,
  backend: FakeBackend,
  leftToCaller: number[],
  ctx: string,
): void {
  const held: number[] = [];
  device.rings.forEach((r, i) => {
    for (const fd of [r.kickFd, r.callFd, r.errFd]) if (fd >= 0) held.push(fd);
    if (r.running !== backend.running.has(i)) {
      fail(
        `${ctx}: device says ring ${i} running=${r.running}, dataplane says ${
          backend.running.has(i)
        }`,
      );
    }
  });
  if (new Set(held).size !== held.length) fail(`${ctx}: device holds one fd twice: ${held}`);
  for (const fd of held) {
    if (!isOpen(fd)) fail(`${ctx}: device holds fd ${fd}, which is closed`);
    if (leftToCaller.includes(fd)) {
      fail(`${ctx}: device keeps fd ${fd} but left it in msg.fds (the caller closes those)`);
    }
  }
  const v = backend.take();
  if (v.length > 0) fail(`${ctx}: dataplane saw: ${v.join("; ")}`);
}

function checkReset(device: VhostUserDevice, backend: FakeBackend, ctx: string): void {
  if (backend.running.size > 0) {
    fail(`${ctx}: rings ${[...backend.running.keys()]} still run after reset`);
  }
  if (backend.regions !== null) fail(`${ctx}: dataplane still has the memory after reset`);
  device.rings.forEach((r, i) => {
    if (r.kickFd !== -1 || r.callFd !== -1 || r.errFd !== -1 || r.running || r.started) {
      fail(`${ctx}: ring ${i} not fresh after reset: ${JSON.stringify(r)}`);
    }
  });
  if (device.features !== 0n || device.protocolFeatures !== 0n) {
    fail(`${ctx}: features kept after reset`);
  }
}

const REPLY_CODES = new Set<number>([
  Request.GET_FEATURES,
  Request.GET_PROTOCOL_FEATURES,
  Request.GET_QUEUE_NUM,
  Request.GET_VRING_BASE,
]);

function checkOutcome(m: MsgSpec, out: Outcome, ctx: string): void {
  if (REPLY_CODES.has(m.request)) {
    if (!(out instanceof Uint8Array) || out.length !== 8) {
      fail(`${ctx}: reply ${Deno.inspect(out)} is not 8 bytes`);
    }
    if (m.request === Request.GET_VRING_BASE) {
      const idx = new DataView(out.buffer, out.byteOffset).getUint32(0, true);
      if (idx !== new DataView(m.payload.buffer, m.payload.byteOffset).getUint32(0, true)) {
        fail(`${ctx}: GET_VRING_BASE answered for ring ${idx}`);
      }
    }
  } else if (typeof out !== "boolean") {
    fail(`${ctx}: outcome ${Deno.inspect(out)} for a request without a reply`);
  }
}

/**
 * Feeds one sequence to a fresh device as Connection.#process does: fds
 * the device did not take are the caller's to close, and a ProtocolError
 * closes "the connection" (msg.fds closed, device reset); later messages
 * then play a reconnecting frontend.
 */
async function runMessages(pool: FdPool, msgs: MsgSpec[]): Promise<void> {
  const fdsBefore = fdCount();
  const oursBefore = ourFds();
  const mapsBefore = ourMappings();
  const backend = new FakeBackend();
  const device = new VhostUserDevice(backend, fuzzLog);
  try {
    for (let i = 0; i < msgs.length; i++) {
      const m = msgs[i];
      const ctx = `message ${i} (request ${m.request})`;
      trace(() => `a: ${ctx}: ${show(m)}`);
      const msg: Message = {
        request: m.request,
        flags: m.flags,
        payload: m.payload.slice(),
        fds: m.fds.map((k) => pool.dup(k)),
      };
      let outcome: Outcome | null = null;
      const startsBefore = backend.starts;
      try {
        outcome = await device.handle(msg);
      } catch (e) {
        // The one error handle() may throw: Connection closes on it, anything else is a bug.
        if (!(e instanceof ProtocolError)) {
          fail(`${ctx}: handle threw a non-ProtocolError: ${describe(e)}`);
        }
      }
      const threw = outcome === null;
      count("messages");
      count(threw ? "ProtocolError" : outcome === false ? "refused" : "accepted");
      if (m.request === Request.SET_MEM_TABLE && !threw) count("memory tables mapped");
      count("ring starts", backend.starts - startsBefore);
      if (outcome !== null) checkOutcome(m, outcome, ctx);
      checkDevice(device, backend, msg.fds, ctx);
      // Whatever the device did not keep is ours: closing one it already closed is a bug.
      for (const fd of msg.fds) {
        try {
          closeFd(fd);
        } catch (e) {
          fail(
            `${ctx}: fd ${fd} left to the caller was already closed by the device: ${describe(e)}`,
          );
        }
      }
      if (threw) {
        await device.reset();
        checkReset(device, backend, `${ctx}: reset after ProtocolError`);
      }
    }
  } finally {
    await device.reset();
  }
  checkReset(device, backend, "final reset");
  const v = backend.take();
  if (v.length > 0) fail(`final reset: dataplane saw: ${v.join("; ")}`);
  if (!pool.allOpen()) fail("a template fd of the pool was closed by the device");
  const oursAfter = ourFds();
  if (!sameFds(oursBefore, oursAfter)) {
    fail(
      `fds after reset differ (${
        fdDiff(oursBefore, oursAfter)
      }; all open fds ${fdsBefore} → ${fdCount()})`,
    );
  }
  const mapsAfter = ourMappings();
  if (mapsAfter.ours !== mapsBefore.ours) {
    fail(
      `mappings of memfds / /dev/zero ${mapsBefore.ours} → ${mapsAfter.ours} after reset (all maps lines ${mapsBefore.total} → ${mapsAfter.total})`,
    );
  }
}

async function runTargetA(o: RunOptions): Promise<TargetOutcome> {
  const t0 = performance.now();
  const st = resetStats();
  await captureErrorLogs();
  const pool = new FdPool();
  const state = { evals: 0, failed: false };
  try {
    const prop = fc.asyncProperty(
      sequenceArb,
      counted(o, state, async (msgs: MsgSpec[]) => {
        errorLogs.length = 0;
        await runMessages(pool, msgs);
        if (errorLogs.length > 0) fail(`error logs: ${errorLogs.join("\n")}`);
      }),
    );
    const details = await fc.check(prop, params(o)) as fc.RunDetails<unknown>;
    return { details, ms: performance.now() - t0, evals: state.evals, stats: st };
  } finally {
    pool.close();
    await resetLogging();
  }
}

// ---------------------------------------------------------------------------
// Target a2: message framing through a real Connection
// ---------------------------------------------------------------------------

type Piece =
  | { t: "msg"; m: MsgSpec }
  | { t: "raw"; request: number; flags: number; size: number; body: Uint8Array }
  | { t: "junk"; bytes: Uint8Array };

/** A byte stream as a frontend might write it. */
export interface StreamSpec {
  pieces: Piece[];
  /** Chunk boundaries (taken modulo the stream length). */
  cuts: number[];
  /** Yield to the event loop after chunk i when pauses[i % n] (partial reads). */
  pauses: boolean[];
  /** fds sent with the chunk holding byte `at` (more than 8 in one chunk: MSG_CTRUNC). */
  extraFds: { at: number; kinds: FdKind[] }[];
  /** shutdown(SHUT_WR) = EOF with the reply path open; close; or no EOF (the switch closes). */
  end: "shutdown" | "close" | "none";
}

const pieceArb: fc.Arbitrary<Piece> = fc.oneof(
  { weight: 6, arbitrary: messageArb.map((m) => ({ t: "msg" as const, m })) },
  {
    weight: 2,
    // A header with any fields; size may exceed 4096 (item 2) or the bytes that follow (item 1).
    arbitrary: fc.record({
      t: fc.constant("raw" as const),
      request: fc.oneof(fc.integer({ min: 0, max: 50 }), u32Arb),
      flags: flagsArb,
      size: fc.oneof(
        fc.constantFrom(0, 1, 8, 12, 40, 264, 4095, 4096, 4097, 65536, 0x8000_0000, U32_MAX),
        fc.nat({ max: 300 }),
        u32Arb,
      ),
      body: fc.uint8Array({ maxLength: 64 }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.uint8Array({ minLength: 1, maxLength: 40 }).map((bytes) => ({
      t: "junk" as const,
      bytes,
    })),
  },
);

export const streamArb: fc.Arbitrary<StreamSpec> = fc.record({
  // Sometimes a full bring-up first, so EOF and errors also hit running rings (item 29).
  pieces: fc.tuple(
    fc.option(prologueArb.map((ms) => ms.map((m) => ({ t: "msg" as const, m }))), { freq: 4 }),
    fc.array(pieceArb, { minLength: 0, maxLength: 12 }),
  ).map(([pro, rest]): Piece[] => [...(pro ?? []), ...rest]),
  cuts: fc.array(fc.nat({ max: 0xffff }), { maxLength: 8 }),
  pauses: fc.array(fc.boolean(), { minLength: 1, maxLength: 4 }),
  extraFds: fc.array(
    fc.record({
      at: fc.nat({ max: 0xffff }),
      kinds: fc.array(fc.constantFrom(...FD_KINDS), { minLength: 1, maxLength: 10 }),
    }),
    { maxLength: 2 },
  ),
  end: fc.constantFrom("shutdown", "shutdown", "close", "none"),
});

interface FdsAt {
  at: number;
  kinds: FdKind[];
  /** Noise from StreamSpec.extraFds, not a message's own fds. */
  extra?: boolean;
}

function serialize(s: StreamSpec): { bytes: Uint8Array; fdsAt: FdsAt[] } {
  const parts: Uint8Array[] = [];
  const fdsAt: FdsAt[] = [];
  let len = 0;
  for (const p of s.pieces) {
    let b: Uint8Array;
    if (p.t === "junk") b = p.bytes;
    else {
      const [request, flags, size, body] = p.t === "msg"
        ? [p.m.request, p.m.flags, p.m.payload.length, p.m.payload]
        : [p.request, p.flags, p.size, p.body];
      b = new Uint8Array(12 + body.length);
      const v = new DataView(b.buffer);
      v.setUint32(0, request >>> 0, true);
      v.setUint32(4, flags >>> 0, true);
      v.setUint32(8, size >>> 0, true);
      b.set(body, 12);
      if (p.t === "msg" && p.m.fds.length > 0) fdsAt.push({ at: len, kinds: p.m.fds });
    }
    parts.push(b);
    len += b.length;
  }
  const bytes = new Uint8Array(len);
  let o = 0;
  for (const p of parts) {
    bytes.set(p, o);
    o += p.length;
  }
  if (len > 0) {
    for (const x of s.extraFds) fdsAt.push({ at: x.at % len, kinds: x.kinds, extra: true });
  }
  return { bytes, fdsAt };
}

const SEND_MAX_FDS = 16;
/** <asm-generic/ioctls.h>: bytes waiting in a socket's receive queue. */
const FIONREAD = 0x541b;

/** Why a connection closed, in a few classes (coverage of items 1–4 and the device's errors). */
function closeClass(reason: string): string {
  if (reason === "Frontend disconnected") return "EOF";
  if (reason.includes("middle of a message")) return "EOF mid-message";
  if (reason.includes("(limit 4096)")) return "payload > 4096";
  if (reason.includes("MSG_CTRUNC")) return "MSG_CTRUNC";
  if (reason.includes("more than 8 fds")) return "> 8 fds";
  if (reason.startsWith("fuzz:")) return "closed by the switch";
  if (reason.startsWith("Cannot recvmsg")) return "recvmsg error";
  if (reason.startsWith("Internal error")) return "internal error";
  return "device ProtocolError";
}

async function runStream(
  pool: FdPool,
  reactor: Reactor,
  trap: EscapeTrap,
  s: StreamSpec,
): Promise<void> {
  const fdsBefore = fdCount();
  const mapsBefore = ourMappings();
  const [ours, theirs] = socketPair(true);
  const pair = [
    Deno.readLinkSync(`/proc/self/fd/${ours}`),
    Deno.readLinkSync(`/proc/self/fd/${theirs}`),
  ];
  const oursBefore = ourFds(pair);
  oursBefore.delete(`${ours}`);
  oursBefore.delete(`${theirs}`);
  trace(() => `a2: fds ${ours}/${theirs} (${fdsBefore} open): ${show(s)}`);
  const backend = new FakeBackend();
  const device = new VhostUserDevice(backend, fuzzLog);
  const conn = new Connection(theirs, device, reactor, fuzzLog);
  let reason: string | null = null;
  conn.closed.then((r) => (reason = r));
  const io = new MessageIo(SEND_MAX_FDS);
  const { bytes, fdsAt } = serialize(s);
  // A frontend sends each message with its own sendmsg, so a message's fds
  // arrive with its first byte: cut there, and at the random points.
  const msgStarts = fdsAt.filter((x) => !x.extra).map((x) => x.at);
  const cuts = [
    ...new Set([
      0,
      bytes.length,
      ...msgStarts,
      ...s.cuts.map((c) => bytes.length ? c % bytes.length : 0),
    ]),
  ].sort((a, b) => a - b);
  let sendFailed = "";
  for (let i = 0; i + 1 < cuts.length && !sendFailed; i++) {
    const [from, to] = [cuts[i], cuts[i + 1]];
    if (to <= from) continue;
    const kinds = fdsAt.filter((x) => x.at >= from && x.at < to).flatMap((x) => x.kinds)
      .slice(0, SEND_MAX_FDS);
    const fds = kinds.map((k) => pool.dup(k));
    try {
      let off = from;
      // A stream socket may take part of a chunk; fds go with its first byte.
      while (off < to) {
        const chunk = bytes.subarray(off, to);
        off += io.send(ours, chunk, chunk.length, off === from ? fds : []);
      }
    } catch (e) {
      // EPIPE/ECONNRESET: the switch already closed this connection, as it may.
      sendFailed = describe(e);
    } finally {
      closeAll(fds); // ours; in-flight copies belong to the kernel, then the switch
    }
    if (s.pauses[i % s.pauses.length]) await tick();
  }
  if (s.end === "shutdown") libc.shutdown(ours, 1 /* SHUT_WR */);
  else if (s.end === "close") libc.close(ours);
  if (s.end === "none") {
    // No EOF: let the connection consume what arrived, then the switch closes it.
    const n = new Uint8Array(4);
    for (let i = 0; i < 2000 && reason === null; i++) {
      if (libc.ioctl(theirs, FIONREAD, n) < 0) break; // closed meanwhile: done
      if (new DataView(n.buffer).getInt32(0, true) === 0) break;
      await tick();
    }
    for (let i = 0; i < 3; i++) await tick();
    if (reason === null) await conn.close("fuzz: end of stream");
  }
  // After EOF the connection must close by itself (items 1, 29).
  let timer: ReturnType<typeof setTimeout> | undefined;
  const closed = await Promise.race([
    conn.closed.then(() => true),
    new Promise<boolean>((r) => (timer = setTimeout(() => r(false), 5000))),
  ]);
  clearTimeout(timer);
  if (s.end !== "close") {
    // Drain the replies (the reply path stayed open), then hang up.
    const buf = new Uint8Array(256);
    for (;;) {
      let r;
      try {
        r = io.recv(ours, buf);
      } catch {
        break;
      }
      if (r === null || r.bytes === 0) {
        if (r) closeAll(r.fds);
        break;
      }
      closeAll(r.fds);
    }
    libc.close(ours);
  }
  if (!closed) {
    fail(`the connection did not close within 5 s after ${s.end === "none" ? "close()" : "EOF"}`);
  }
  count(`closed: ${closeClass(reason as string | null ?? "")}`);
  count("ring starts", backend.starts);
  await tick();
  const escaped = trap.take();
  if (escaped.length > 0) fail(`escaped: ${escaped.join("\n")}`);
  if (errorLogs.length > 0) fail(`error logs: ${errorLogs.join("\n")}`);
  // "Internal error" means handle() threw something else than ProtocolError, or a
  // reply could not be written; with our end still reading, neither may happen.
  const r = reason as string | null;
  if (r !== null && r.startsWith("Internal error") && s.end !== "close") {
    fail(`connection closed with an internal error: ${r}`);
  }
  const v = backend.take();
  if (v.length > 0) fail(`dataplane saw: ${v.join("; ")}`);
  checkReset(device, backend, "after close");
  if (!pool.allOpen()) fail("a template fd of the pool was closed");
  const oursAfter = ourFds(pair);
  if (!sameFds(oursBefore, oursAfter)) {
    fail(
      `fds after close differ (${r}; end ${s.end}; send: ${sendFailed || "ok"}): ${
        fdDiff(oursBefore, oursAfter)
      } (all open fds ${fdsBefore} → ${fdCount()})`,
    );
  }
  const mapsAfter = ourMappings();
  if (mapsAfter.ours !== mapsBefore.ours) {
    fail(`mappings of memfds / /dev/zero ${mapsBefore.ours} → ${mapsAfter.ours} after close`);
  }
}

async function runTargetA2(o: RunOptions): Promise<TargetOutcome> {
  const t0 = performance.now();
  const st = resetStats();
  await captureErrorLogs();
  const pool = new FdPool();
  const reactor = new Reactor();
  const trap = new EscapeTrap();
  trap.install();
  const state = { evals: 0, failed: false };
  try {
    const prop = fc.asyncProperty(
      streamArb,
      counted(o, state, async (s: StreamSpec) => {
        errorLogs.length = 0;
        trap.take();
        await runStream(pool, reactor, trap, s);
      }),
    );
    const details = await fc.check(prop, params(o)) as fc.RunDetails<unknown>;
    return { details, ms: performance.now() - t0, evals: state.evals, stats: st };
  } finally {
    await reactor.close();
    trap.uninstall();
    pool.close();
    await resetLogging();
  }
}

// ---------------------------------------------------------------------------
// Guest memory for targets b and b2: real anonymous mappings as regions
// ---------------------------------------------------------------------------

/** 4 GiB + 64 KiB or 6 GiB: offsets ≥ 2^32 (item 28's cousin: 32-bit truncation). */
const BIG_SIZES = [TWO32 + 64 * KiB, 6 * GiB];

interface MemRegionSpec {
  /** Size: small (pages + odd bytes) or big and sparse. */
  size: { t: "small"; pages: number; extra: number } | { t: "big"; which: number };
  /** Gap to the previous region's end (0: adjacent, a chain crossing them must fail). */
  gap: number;
  /** Host address misalignment (mmap_offset % 4096 ≠ 0 in a real table). */
  skew: number;
}

export interface MemSpec {
  first: { t: "zero" } | { t: "at"; gpa: number } | { t: "top53" };
  regions: MemRegionSpec[];
  rotate: number;
}

const memRegionArb: fc.Arbitrary<MemRegionSpec> = fc.record({
  size: fc.oneof(
    {
      weight: 16,
      arbitrary: fc.record({
        t: fc.constant("small" as const),
        pages: fc.integer({ min: 1, max: 16 }),
        extra: fc.constantFrom(0, 0, 0, 0, 4, 100, 4092, -4000, 1),
      }),
    },
    {
      // Rare: each view over 4+ GiB counts as V8 external memory and costs a full GC.
      weight: 1,
      arbitrary: fc.record({ t: fc.constant("big" as const), which: fc.nat({ max: 1 }) }),
    },
  ),
  gap: fc.oneof(
    fc.constantFrom(0, 0, 1, 16, 0x1000, TWO32),
    fc.integer({ min: 0, max: 2 ** 40 }),
  ),
  skew: fc.constantFrom(0, 0, 0, 0, 0, 0, 8, 1, 2, 4),
});

export const memSpecArb: fc.Arbitrary<MemSpec> = fc.record({
  first: fc.oneof(
    { weight: 3, arbitrary: fc.constant({ t: "zero" as const }) },
    {
      weight: 3,
      arbitrary: fc.integer({ min: 0, max: 2 ** 40 }).map((g) => ({ t: "at" as const, gpa: g })),
    },
    { weight: 1, arbitrary: fc.constant({ t: "top53" as const }) },
  ),
  regions: fc.array(memRegionArb, { minLength: 1, maxLength: 3 }),
  rotate: fc.nat({ max: 5 }),
});

interface Window {
  off: number;
  len: number;
}

/** The regions of one guest, mapped (private, anonymous, sparse) in this process. */
class FuzzMem {
  readonly maps: Mapping[] = [];
  readonly regions: MappedRegion[] = [];
  readonly views: DataView[] = [];
  readonly bytes: Uint8Array[] = [];
  /** Where the fill put bytes (whole small regions; three windows of big ones). */
  readonly windows: Window[][] = [];
  readonly gpaBig: bigint[] = [];

  constructor(spec: MemSpec) {
    const sizes = spec.regions.map((r) =>
      r.size.t === "big"
        ? BIG_SIZES[r.size.which]
        : Math.max(32, r.size.pages * 4096 + r.size.extra)
    );
    let span = 0;
    spec.regions.forEach((r, i) => (span += (i ? r.gap : 0) + sizes[i]));
    let gpa = spec.first.t === "zero" ? 0 : spec.first.t === "at" ? spec.first.gpa : 2 ** 53 - span;
    if (gpa + span > 2 ** 53) gpa = 2 ** 53 - span;
    const built: { gpa: number; size: number; skew: number }[] = [];
    spec.regions.forEach((r, i) => {
      if (i > 0) gpa += r.gap;
      built.push({ gpa, size: sizes[i], skew: r.skew });
      gpa += sizes[i];
    });
    const k = spec.rotate % built.length;
    const order = [...built.slice(k), ...built.slice(0, k)];
    for (const b of order) {
      const len = Math.ceil((b.size + b.skew) / 4096) * 4096;
      const m = mmap(
        -1,
        len,
        0,
        PROT_READ | PROT_WRITE,
        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
      );
      this.maps.push(m);
      this.regions.push({ gpa: b.gpa, size: b.size, address: m.address + b.skew });
      this.views.push(new DataView(m.buffer, b.skew, b.size));
      this.bytes.push(new Uint8Array(m.buffer, b.skew, b.size));
      this.gpaBig.push(BigInt(b.gpa));
      this.windows.push(
        b.size <= 4 * MiB ? [{ off: 0, len: b.size }] : [
          { off: 0, len: 64 * KiB },
          { off: TWO32 - 32 * KiB, len: 64 * KiB },
          { off: b.size - 64 * KiB, len: 64 * KiB },
        ],
      );
    }
  }

  get count(): number {
    return this.regions.length;
  }

  /** One past the highest guest-physical byte: unmapped. */
  get end(): number {
    let e = 0;
    for (const r of this.regions) e = Math.max(e, r.gpa + r.size);
    return e;
  }

  close(): void {
    for (const m of this.maps) munmap(m);
  }
}

/** mulberry32: the fill's PRNG (a fast-check integer seeds it, so it replays). */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const FLAG_CHOICES = [
  0,
  0,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT,
];
const LEN_CHOICES = [0, 1, 2, 10, 12, 14, 16, 24, 26, 32, 48, 60, 64, 100, 1500, 4096, 0xffff_ffff];

function writeDesc(
  v: DataView,
  off: number,
  lo: number,
  hi: number,
  len: number,
  flags: number,
  next: number,
): void {
  v.setUint32(off, lo >>> 0, true);
  v.setUint32(off + 4, hi >>> 0, true);
  v.setUint32(off + 8, len >>> 0, true);
  v.setUint16(off + 12, flags & 0xffff, true);
  v.setUint16(off + 14, next & 0xffff, true);
}

/** A 64-bit address as its low and high 32-bit words. */
function split64(addr: number | bigint): [number, number] {
  if (typeof addr === "number" && addr >= 0 && addr <= Number.MAX_SAFE_INTEGER) {
    return [addr % TWO32, Math.floor(addr / TWO32)]; // no BigInt on the fill's hot path
  }
  const b = BigInt.asUintN(64, BigInt(addr));
  return [Number(b & 0xffff_ffffn), Number(b >> 32n)];
}

/** xorshift32 over a seed: 32-bit integers, cheap enough to fill megabytes. */
function prng32(seed: number): () => number {
  let x = (seed | 0) || 0x9e37_79b9;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return x >>> 0;
  };
}

/**
 * Fills the populated windows with a mix that walks far: descriptor-like
 * 16-byte cells (addresses inside some region, lengths and flags from the
 * interesting sets, `next` near the table size), zeros (valid headers,
 * zero-length self loops; fresh anonymous memory already is) and noise.
 */
function fillMemory(mem: FuzzMem, seed: number, tableSize: number): void {
  const rnd = prng32(seed);
  const end0 = mem.end;
  for (let r = 0; r < mem.count; r++) {
    const v = mem.views[r];
    for (const w of mem.windows[r]) {
      const end = Math.min(w.off + w.len, mem.regions[r].size);
      let o = w.off;
      for (; o + 16 <= end; o += 16) {
        const x = rnd() % 100;
        if (x < 40) {
          const b = rnd();
          const reg = mem.regions[(b & 0xff) % mem.count];
          const y = rnd();
          const off = (b & 0x100) ? y % Math.min(reg.size, 64 * KiB) : reg.size - (y & 63);
          const addr = (b >>> 9) % 10 ? reg.gpa + off : end0 + (y & 4095);
          const [lo, hi] = split64(addr);
          const z = rnd();
          const len = (z & 7) ? LEN_CHOICES[(z >>> 3) % LEN_CHOICES.length] : (z >>> 3) & 2047;
          const flags = FLAG_CHOICES[(z >>> 14) % FLAG_CHOICES.length];
          const next = (z >>> 18) % (tableSize + 2);
          writeDesc(v, o, lo, hi, len, flags, next);
        } else if (x >= 75) {
          for (let k = 0; k < 16; k += 4) v.setUint32(o + k, rnd(), true);
        }
      }
      for (; o < end; o++) v.setUint8(o, rnd() & 0xff);
    }
  }
}

// Descriptor specs: resolved against the layout, so shrinking keeps their meaning.

type Where = "start" | "end" | "mid" | "hi4g";
const whereArb = fc.constantFrom<Where>("start", "start", "end", "mid", "hi4g");

type AddrSpec =
  | { t: "in"; r: number; at: Where; d: number }
  | { t: "table"; k: number; d: number }
  | { t: "ring"; part: "desc" | "avail" | "used"; d: number }
  | { t: "gap" }
  | { t: "high"; hi: number; lo: number }
  | { t: "near53"; d: number }
  | { t: "raw"; v: bigint };

type LenSpec =
  | { t: "c"; v: number }
  | { t: "toEnd"; d: number }
  | { t: "tbl"; k: number; d: number }
  | { t: "raw"; v: number };

type NextSpec = { t: "rel"; d: number } | { t: "sz"; d: number } | { t: "raw"; v: number };

export interface DescSpec {
  addr: AddrSpec;
  len: LenSpec;
  flags: number;
  next: NextSpec;
}

const addrSpecArb: fc.Arbitrary<AddrSpec> = fc.oneof(
  {
    weight: 10,
    arbitrary: fc.record({
      t: fc.constant("in" as const),
      r: fc.nat({ max: 2 }),
      at: whereArb,
      d: fc.oneof(fc.constantFrom(0, 0, 1, 12, 16, 64, 4096), fc.nat({ max: 0x8000 })),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      t: fc.constant("table" as const),
      k: fc.nat({ max: 3 }),
      d: fc.constantFrom(0, 0, 0, 0, 4, 8, 1, 16),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      t: fc.constant("ring" as const),
      part: fc.constantFrom("desc" as const, "avail" as const, "used" as const),
      d: fc.constantFrom(0, 4, 16),
    }),
  },
  { weight: 1, arbitrary: fc.constant({ t: "gap" as const }) },
  {
    // High word ≥ 2^21: an address ≥ 2^53 that a careless conversion would round (item 28).
    weight: 1,
    arbitrary: fc.record({
      t: fc.constant("high" as const),
      hi: fc.oneof(fc.constantFrom(0x20_0000, 0x20_0001, 0x8000_0000, U32_MAX), u32Arb),
      lo: u32Arb,
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ t: fc.constant("near53" as const), d: fc.nat({ max: 64 }) }),
  },
  {
    weight: 1,
    arbitrary: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }).map((v) => ({
      t: "raw" as const,
      v,
    })),
  },
);

const lenSpecArb: fc.Arbitrary<LenSpec> = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom(...LEN_CHOICES).map((v) => ({ t: "c" as const, v })) },
  {
    weight: 3,
    arbitrary: fc.constantFrom(-1, 0, 0, 1).map((d) => ({ t: "toEnd" as const, d })),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      t: fc.constant("tbl" as const),
      k: fc.nat({ max: 3 }),
      d: fc.constantFrom(0, 0, 0, -16, 16, 8, 1),
    }),
  },
  { weight: 1, arbitrary: u32Arb.map((v) => ({ t: "raw" as const, v })) },
);

const nextSpecArb: fc.Arbitrary<NextSpec> = fc.oneof(
  {
    weight: 8,
    arbitrary: fc.constantFrom(1, 1, 1, 0, -1, 2).map((d) => ({ t: "rel" as const, d })),
  },
  { weight: 2, arbitrary: fc.constantFrom(-1, 0, 1).map((d) => ({ t: "sz" as const, d })) },
  {
    weight: 1,
    arbitrary: fc.integer({ min: 0, max: 0xffff }).map((v) => ({ t: "raw" as const, v })),
  },
);

export const descSpecArb: fc.Arbitrary<DescSpec> = fc.oneof(
  {
    weight: 8,
    arbitrary: fc.record({
      addr: addrSpecArb,
      len: lenSpecArb,
      flags: fc.oneof(
        {
          weight: 10,
          arbitrary: fc.constantFrom(...FLAG_CHOICES, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_WRITE),
        },
        { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffff }) },
      ),
      next: nextSpecArb,
    }),
  },
  {
    // Item 17: a zero-length descriptor (no address to check) chaining to itself or back.
    weight: 1,
    arbitrary: fc.record({
      addr: addrSpecArb,
      len: fc.constant<LenSpec>({ t: "c", v: 0 }),
      flags: fc.constantFrom(VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE),
      next: fc.constantFrom<NextSpec>({ t: "rel", d: 0 }, { t: "rel", d: -1 }, { t: "rel", d: 1 }),
    }),
  },
);

/** Where a ring part goes: a region and a place in it, or right after the previous part. */
export interface PartSpec {
  r: number;
  at: Where | "after" | "same";
  d: number;
}

const partSpecArb: fc.Arbitrary<PartSpec> = fc.record({
  r: fc.nat({ max: 2 }),
  at: fc.constantFrom<PartSpec["at"]>("after", "after", "start", "end", "mid", "hi4g", "same"),
  d: fc.constantFrom(0, 0, 0, 16, 4096),
});

export interface TableSpec {
  r: number;
  at: Where;
  /** Misalignment: an indirect table must be 4-aligned here (the walk reads it as words). */
  d: number;
  entries: DescSpec[];
}

export interface RingSpec {
  log2: number;
  desc: PartSpec;
  avail: PartSpec;
  used: PartSpec;
  base: number;
  indirect: boolean;
  eventIdx: boolean;
  /** Explicit descriptors (index taken modulo the size). */
  descs: { i: number; d: DescSpec }[];
  /** avail: flags, idx − base and ring entries (head specs). */
  availFlags: number;
  /** idx − base: "in" is taken modulo size + 1 (a usable ring), "raw" as is (item 15). */
  availAhead: { t: "in" | "raw"; v: number };
  heads: HeadSpec[];
  /**
   * "clean": every descriptor first gets a well-formed one-buffer chain
   * (device-writable for RX, a frame with a zero header for TX) before the
   * explicit ones land, so traffic flows and the hostile parts stand out.
   */
  style: "random" | "clean";
}

type HeadSpec = { t: "i"; v: number } | { t: "sz"; d: number } | { t: "raw"; v: number };

const headSpecArb: fc.Arbitrary<HeadSpec> = fc.oneof(
  { weight: 8, arbitrary: fc.nat({ max: 64 }).map((v) => ({ t: "i" as const, v })) },
  { weight: 1, arbitrary: fc.constantFrom(0, 1, 2).map((d) => ({ t: "sz" as const, d })) },
  {
    weight: 1,
    arbitrary: fc.integer({ min: 0, max: 0xffff }).map((v) => ({ t: "raw" as const, v })),
  },
);

const tableSpecArb: fc.Arbitrary<TableSpec> = fc.record({
  r: fc.nat({ max: 2 }),
  at: whereArb,
  d: fc.constantFrom(0, 0, 0, 0, 16, 4, 8, 1, 2),
  entries: fc.array(descSpecArb, { minLength: 1, maxLength: 8 }),
});

/**
 * Rings for target b and the hostile TX ring of b2 draw many explicit
 * descriptors; the hostile RX ring of b2 few and mostly "clean", or it
 * would break before the good guest's frames ever reach it.
 */
function ringArb(maxDescs: number, cleanWeight: number): fc.Arbitrary<RingSpec> {
  return fc.record({
    log2: fc.oneof(
      { weight: 10, arbitrary: fc.integer({ min: 0, max: 4 }) },
      { weight: 4, arbitrary: fc.integer({ min: 5, max: 10 }) },
      { weight: 1, arbitrary: fc.constant(15) },
    ),
    desc: partSpecArb,
    avail: partSpecArb,
    used: partSpecArb,
    base: fc.oneof(fc.constantFrom(0, 0, 0xffff, 0xfff0), fc.integer({ min: 0, max: 0xffff })),
    indirect: fc.boolean(),
    eventIdx: fc.boolean(),
    descs: fc.array(fc.record({ i: fc.nat({ max: 64 }), d: descSpecArb }), { maxLength: maxDescs }),
    availFlags: fc.constantFrom(0, 0, 1, 0xffff),
    availAhead: fc.oneof(
      { weight: 12, arbitrary: fc.nat({ max: 64 }).map((v) => ({ t: "in" as const, v })) },
      {
        weight: 1,
        arbitrary: fc.integer({ min: 0, max: 0xffff }).map((v) => ({ t: "raw" as const, v })),
      },
    ),
    heads: fc.array(headSpecArb, { maxLength: 40 }),
    style: fc.oneof(
      { weight: 1, arbitrary: fc.constant("random" as const) },
      { weight: cleanWeight, arbitrary: fc.constant("clean" as const) },
    ),
  });
}

export const ringSpecArb: fc.Arbitrary<RingSpec> = ringArb(16, 1);
const rxRingSpecArb: fc.Arbitrary<RingSpec> = ringArb(2, 4);

interface Placed {
  region: number;
  offset: number;
  gpa: number;
  len: number;
}

/** A ring laid out in a FuzzMem: where its parts are and what the model needs. */
interface RingLayout {
  size: number;
  desc: Placed;
  avail: Placed;
  used: Placed;
  tables: Placed[];
}

function placeAt(
  mem: FuzzMem,
  r: number,
  at: Where,
  d: number,
  len: number,
  align: number,
): Placed | null {
  const size = mem.regions[r].size;
  if (len > size) return null;
  let off = at === "start"
    ? d
    : at === "end"
    ? size - len - d
    : at === "mid"
    ? Math.floor(size / 2) + d
    : size > TWO32 + len + d
    ? TWO32 + d
    : size - len - d;
  if (off < 0) off = 0;
  if (off + len > size) off = size - len;
  off -= off % align;
  if (off < 0) return null;
  return { region: r, offset: off, gpa: mem.regions[r].gpa + off, len };
}

function placePart(
  mem: FuzzMem,
  p: PartSpec,
  len: number,
  align: number,
  prev: Placed | null,
  first: Placed | null,
): Placed | null {
  if ((p.at === "after" || p.at === "same") && prev !== null) {
    const base = p.at === "same" && first !== null ? first : prev;
    let off = p.at === "same" ? base.offset : base.offset + base.len;
    off = Math.ceil(off / align) * align;
    if (off + len <= mem.regions[base.region].size) {
      return { region: base.region, offset: off, gpa: mem.regions[base.region].gpa + off, len };
    }
  }
  const at: Where = p.at === "after" || p.at === "same" ? "start" : p.at;
  for (let k = 0; k < mem.count; k++) {
    const placed = placeAt(mem, (p.r + k) % mem.count, at, p.d, len, align);
    if (placed) return placed;
  }
  return null;
}

/** Places the parts; a ring too big for every region is halved until it fits. */
function layoutRing(mem: FuzzMem, spec: RingSpec): RingLayout {
  for (let log2 = spec.log2; log2 >= 0; log2--) {
    const size = 1 << log2;
    const s = ringPartSizes(size);
    const desc = placePart(mem, spec.desc, s.desc, 16, null, null);
    if (!desc) continue;
    const avail = placePart(mem, spec.avail, s.avail, 2, desc, desc);
    if (!avail) continue;
    const used = placePart(mem, spec.used, s.used, 4, avail, desc);
    if (!used) continue;
    return { size, desc, avail, used, tables: [] };
  }
  throw new Error("Cannot place a ring of size 1: no region holds 38 bytes"); // sizes ≥ 32 B… and 4096-page regions
}

function regionOf(mem: FuzzMem, gpa: number): number {
  for (let r = 0; r < mem.count; r++) {
    const g = mem.regions[r];
    if (gpa >= g.gpa && gpa < g.gpa + g.size) return r;
  }
  return -1;
}

function resolveAddr(mem: FuzzMem, lay: RingLayout, a: AddrSpec): bigint {
  switch (a.t) {
    case "in": {
      const r = a.r % mem.count;
      const g = mem.regions[r];
      const off = a.at === "start"
        ? a.d
        : a.at === "end"
        ? g.size - a.d
        : a.at === "mid"
        ? Math.floor(g.size / 2) + a.d
        : g.size > TWO32
        ? TWO32 + a.d
        : g.size - a.d;
      return BigInt(g.gpa) + BigInt(off);
    }
    case "table": {
      const t = lay.tables.length ? lay.tables[a.k % lay.tables.length] : lay.desc;
      return BigInt(t.gpa + a.d);
    }
    case "ring":
      return BigInt(lay[a.part].gpa + a.d);
    case "gap":
      return BigInt(mem.end) + 0x10n;
    case "high":
      return (BigInt(a.hi) << 32n) | BigInt(a.lo);
    case "near53":
      return 2n ** 53n - BigInt(a.d);
    case "raw":
      return a.v;
  }
}

function resolveLen(mem: FuzzMem, lay: RingLayout, l: LenSpec, addr: bigint): number {
  switch (l.t) {
    case "c":
      return l.v;
    case "raw":
      return l.v;
    case "tbl": {
      const t = lay.tables.length ? lay.tables[l.k % lay.tables.length] : lay.desc;
      return Math.max(0, t.len + l.d);
    }
    case "toEnd": {
      if (addr >= 2n ** 53n) return 16;
      const r = regionOf(mem, Number(addr));
      if (r < 0) return 16;
      const g = mem.regions[r];
      return Math.max(0, Math.min(U32_MAX, g.gpa + g.size - Number(addr) + l.d));
    }
  }
}

function resolveNext(n: NextSpec, idx: number, tableSize: number): number {
  const v = n.t === "rel" ? idx + n.d : n.t === "sz" ? tableSize + n.d : n.v;
  return v & 0xffff;
}

function resolveHead(h: HeadSpec, size: number): number {
  return (h.t === "i" ? h.v % size : h.t === "sz" ? size + h.d : h.v) & 0xffff;
}

function putDesc(
  mem: FuzzMem,
  lay: RingLayout,
  at: Placed,
  i: number,
  tableSize: number,
  d: DescSpec,
): void {
  const addr = resolveAddr(mem, lay, d.addr);
  const [lo, hi] = split64(addr);
  writeDesc(
    mem.views[at.region],
    at.offset + 16 * i,
    lo,
    hi,
    resolveLen(mem, lay, d.len, addr),
    d.flags,
    resolveNext(d.next, i, tableSize),
  );
}

/**
 * Lays out and writes a ring: fill, indirect tables, the descriptor table
 * (explicit entries over a filled table), the avail ring.
 */
function buildRing(
  mem: FuzzMem,
  spec: RingSpec,
  tables: TableSpec[],
  seed: number,
  rx = false,
  hdrLen = 12,
): RingLayout {
  const lay = layoutRing(mem, spec);
  const placed: (Placed | null)[] = tables.map((t) => {
    const r = t.r % mem.count;
    const p = placeAt(mem, r, t.at, 0, 16 * t.entries.length + 16, 16);
    if (!p) return null; // no room: descriptors naming it point at the ring instead
    const off = p.offset + t.d;
    return { region: r, offset: off, gpa: mem.regions[r].gpa + off, len: 16 * t.entries.length };
  });
  for (const p of placed) if (p) lay.tables.push(p);
  tables.forEach((t, k) => {
    const p = placed[k];
    if (p) t.entries.forEach((d, i) => putDesc(mem, lay, p, i, t.entries.length, d));
  });
  // The table itself: filled cells (the big-region windows may not cover it), then explicit ones.
  const rnd = prng(seed ^ 0x5bd1e995); // [0, 1)
  const dv = mem.views[lay.desc.region];
  for (let i = 0; i < lay.size; i++) {
    const o = lay.desc.offset + 16 * i;
    if (rnd() < 0.5) continue; // keep what the fill put there
    const t = Math.floor(rnd() * mem.count);
    const g = mem.regions[t];
    const off = Math.floor(rnd() * Math.min(g.size, 8 * KiB));
    const [lo, hi] = split64(g.gpa + off);
    const flags = rnd() < 0.5 ? VIRTQ_DESC_F_NEXT : 0;
    writeDesc(dv, o, lo, hi, LEN_CHOICES[Math.floor(rnd() * 14)], flags, (i + 1) % (lay.size + 1));
  }
  if (spec.style === "clean") cleanChains(mem, lay, rx, hdrLen, rnd);
  for (const { i, d } of spec.descs) putDesc(mem, lay, lay.desc, i % lay.size, lay.size, d);
  const av = mem.views[lay.avail.region];
  av.setUint16(lay.avail.offset, spec.availFlags, true);
  const ahead = spec.availAhead.t === "in" ? spec.availAhead.v % (lay.size + 1) : spec.availAhead.v;
  av.setUint16(lay.avail.offset + 2, (spec.base + ahead) & 0xffff, true);
  for (let k = 0; k < lay.size; k++) {
    const h = spec.heads.length ? resolveHead(spec.heads[k % spec.heads.length], lay.size) : k;
    av.setUint16(lay.avail.offset + 4 + 2 * ((spec.base + k) % lay.size), h, true);
  }
  return lay;
}

/**
 * One well-formed buffer per descriptor, carved from the end of the largest
 * region: RX buffers device-writable; TX buffers a zero virtio-net header
 * and an Ethernet frame (broadcast or a random unicast destination, a
 * random unicast source) filling the buffer.
 */
function cleanChains(
  mem: FuzzMem,
  lay: RingLayout,
  rx: boolean,
  hdrLen: number,
  rnd: () => number,
): void {
  let r = 0;
  for (let k = 1; k < mem.count; k++) if (mem.regions[k].size > mem.regions[r].size) r = k;
  const size = Math.min(mem.regions[r].size, 4 * MiB);
  const buf = Math.max(32, Math.min(2048, Math.floor(size / (2 * lay.size)) & ~15));
  const dv = mem.views[lay.desc.region];
  for (let i = 0; i < lay.size; i++) {
    const off = mem.regions[r].size - buf * (1 + (i % Math.max(1, Math.floor(size / buf) - 1)));
    if (off < 0) return;
    const len = rx ? buf : Math.max(hdrLen + 14, Math.floor(buf * (0.3 + 0.7 * rnd())));
    if (!rx) {
      const b = mem.bytes[r];
      b.fill(0, off, off + hdrLen);
      for (let j = hdrLen; j < len; j++) b[off + j] = (i + j) & 0xff;
      if (rnd() < 0.5) b.fill(0xff, off + hdrLen, off + hdrLen + 6);
      else b[off + hdrLen] &= 0xfe; // unicast destination
      b[off + hdrLen + 6] = 0x02; // unicast, locally administered source
      b[off + hdrLen + 7] = (rnd() * 4) | 0; // few sources: the FDB sees the same MACs again
    }
    const [lo, hi] = split64(mem.regions[r].gpa + off);
    writeDesc(dv, lay.desc.offset + 16 * i, lo, hi, len, rx ? VIRTQ_DESC_F_WRITE : 0, 0);
  }
}

function makeRing(
  gm: GuestMemory,
  lay: RingLayout,
  spec: RingSpec,
  maxReadable: number,
): SplitRing {
  const part = (p: Placed) => ({ region: p.region, offset: p.offset });
  return new SplitRing(
    gm,
    lay.size,
    part(lay.desc),
    part(lay.avail),
    part(lay.used),
    spec.base,
    spec.indirect,
    maxReadable,
    spec.eventIdx,
  );
}

// ---------------------------------------------------------------------------
// The model: an independent reading of §2.7 over the same bytes
// ---------------------------------------------------------------------------

/** A byte range in one region, for read/write-set bookkeeping. */
interface Span {
  r: number;
  off: number;
  len: number;
}

function overlap(a: Span, b: Span): boolean {
  return a.r === b.r && a.off < b.off + b.len && b.off < a.off + a.len;
}

/** Spans merged per region, for fast membership and intersection tests. */
class SpanSet {
  readonly #by = new Map<number, { starts: number[]; ends: number[] }>();

  constructor(spans: readonly Span[]) {
    const groups = new Map<number, Span[]>();
    for (const sp of spans) {
      if (sp.len <= 0) continue;
      const g = groups.get(sp.r) ?? [];
      g.push(sp);
      groups.set(sp.r, g);
    }
    for (const [r, g] of groups) {
      g.sort((a, b) => a.off - b.off);
      const starts: number[] = [], ends: number[] = [];
      for (const sp of g) {
        const end = sp.off + sp.len;
        if (ends.length && sp.off <= ends[ends.length - 1]) {
          ends[ends.length - 1] = Math.max(ends[ends.length - 1], end);
        } else {
          starts.push(sp.off);
          ends.push(end);
        }
      }
      this.#by.set(r, { starts, ends });
    }
  }

  /** Whether any span intersects [off, off + len) of region r. */
  hits(r: number, off: number, len = 1): boolean {
    const g = this.#by.get(r);
    if (!g) return false;
    // Last merged span starting before off + len.
    let lo = 0, hi = g.starts.length - 1, k = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (g.starts[mid] < off + len) {
        k = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return k >= 0 && g.ends[k] > off;
  }

  /** Whether any of `spans` intersects this set. */
  meets(spans: readonly Span[]): boolean {
    return spans.some((sp) => sp.len > 0 && this.hits(sp.r, sp.off, sp.len));
  }
}

/** The walk as the model sees it: result and segments (region, offset, length). */
interface ModelWalk {
  result: number;
  segs: Span[];
}

const TWO53 = 2n ** 53n;

/** Resolves [addr, addr+len) to one region, exactly (BigInt), or null (item 19). */
function modelTranslate(mem: FuzzMem, addr: bigint, len: number): Span | null {
  for (let r = 0; r < mem.count; r++) {
    const off = addr - mem.gpaBig[r];
    if (off >= 0n && off + BigInt(len) <= BigInt(mem.regions[r].size)) {
      return { r, off: Number(off), len };
    }
  }
  return null;
}

/**
 * §2.7.5 and §2.7.5.3 with the checklist's bounds, written without looking
 * at the fast path's arithmetic: 64-bit addresses as BigInt, a hop budget of
 * the table size (item 17), indirect only alone, never nested, with a
 * length that is a non-zero multiple of 16 no larger than the ring (item
 * 18), one direction for the whole chain (item 20), a segment list of
 * `capacity` entries and `limit` bytes (item 21). `reads` collects every
 * byte range it looked at.
 */
function modelWalk(
  mem: FuzzMem,
  lay: RingLayout,
  indirect: boolean,
  head: number,
  writable: boolean,
  limit: number,
  capacity: number,
  used: number,
  reads?: Span[],
): ModelWalk {
  const segs: Span[] = [];
  let tR = lay.desc.region, tOff = lay.desc.offset, tSize = lay.size;
  let idx = head, hops = 0, nested = false, total = 0;
  for (;;) {
    if (idx >= tSize) return { result: WalkError.INDEX, segs };
    if (++hops > tSize) return { result: WalkError.LOOP, segs };
    const v = mem.views[tR];
    const o = tOff + 16 * idx;
    reads?.push({ r: tR, off: o, len: 16 });
    const addr = v.getBigUint64(o, true);
    const len = v.getUint32(o + 8, true);
    const flags = v.getUint16(o + 12, true);
    const next = v.getUint16(o + 14, true);
    if (flags & VIRTQ_DESC_F_INDIRECT) {
      if (!indirect || nested || hops !== 1 || (flags & VIRTQ_DESC_F_NEXT)) {
        return { result: WalkError.INDIRECT, segs };
      }
      if (len === 0 || len % 16 !== 0 || len / 16 > lay.size) {
        return { result: WalkError.INDIRECT, segs };
      }
      if (addr >= TWO53) return { result: WalkError.ADDRESS, segs };
      const t = modelTranslate(mem, addr, len);
      if (t === null || t.off % 4 !== 0) return { result: WalkError.ADDRESS, segs };
      tR = t.r;
      tOff = t.off;
      tSize = len / 16;
      idx = 0;
      hops = 0;
      nested = true;
      continue;
    }
    if (((flags & VIRTQ_DESC_F_WRITE) !== 0) !== writable) {
      return { result: WalkError.DIRECTION, segs };
    }
    if (len > 0) {
      if (addr >= TWO53) return { result: WalkError.ADDRESS, segs };
      const t = modelTranslate(mem, addr, len);
      if (t === null) return { result: WalkError.ADDRESS, segs };
      if (used + segs.length >= capacity) return { result: WalkError.TOO_LONG, segs };
      segs.push(t);
      total += len;
      if (total > limit) return { result: WalkError.TOO_LONG, segs };
    }
    if (!(flags & VIRTQ_DESC_F_NEXT)) return { result: total, segs };
    idx = next;
  }
}

function walkName(code: number): string {
  if (code >= 0) return "ok";
  for (const [k, v] of Object.entries(WalkError)) if (v === code) return k;
  return `${code}`;
}

/** The segments a SegList holds from `from` on, as spans, checked to lie inside their region. */
function listSpans(gm: GuestMemory, out: SegList, from: number, ctx: string): Span[] {
  const spans: Span[] = [];
  for (let k = from; k < out.count; k++) {
    const r = gm.u8.indexOf(out.views[k]);
    const off = out.offs[k], len = out.lens[k];
    if (r < 0) fail(`${ctx}: segment ${k} is not a view of any region`);
    if (out.words[k] !== gm.u32[r]) fail(`${ctx}: segment ${k}'s word view is not region ${r}'s`);
    if (!(Number.isSafeInteger(off) && off >= 0 && len > 0 && off + len <= gm.size[r])) {
      fail(`${ctx}: segment ${k} [${off}, +${len}) not inside region ${r} (${gm.size[r]} B)`);
    }
    if (out.addrs[k] !== gm.base[r] + off) {
      fail(`${ctx}: segment ${k} address ${out.addrs[k]} ≠ region base ${gm.base[r]} + ${off}`);
    }
    spans.push({ r, off, len });
  }
  return spans;
}

// ---------------------------------------------------------------------------
// Target b: chain walking and ring accesses over random guest memory
// ---------------------------------------------------------------------------

type RingOp =
  | { t: "walk"; head: HeadSpec; writable: boolean; keep: boolean }
  | { t: "available" }
  | { t: "next" }
  | { t: "unget"; n: number }
  | { t: "used"; head: number; len: number }
  | { t: "publish" }
  | { t: "notify"; on: boolean }
  | { t: "poke"; i: number; d: DescSpec }
  | { t: "idx"; v: number };

const ringOpArb: fc.Arbitrary<RingOp> = fc.oneof(
  {
    weight: 10,
    arbitrary: fc.record({
      t: fc.constant("walk" as const),
      head: headSpecArb,
      writable: fc.boolean(),
      keep: fc.oneof({ weight: 4, arbitrary: fc.constant(false) }, {
        weight: 1,
        arbitrary: fc.constant(true),
      }),
    }),
  },
  { weight: 2, arbitrary: fc.constant({ t: "available" as const }) },
  { weight: 2, arbitrary: fc.constant({ t: "next" as const }) },
  {
    weight: 1,
    arbitrary: fc.integer({ min: 0, max: 3 }).map((n) => ({ t: "unget" as const, n })),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      t: fc.constant("used" as const),
      head: fc.integer({ min: 0, max: 0xffff }),
      len: u32Arb,
    }),
  },
  { weight: 2, arbitrary: fc.constant({ t: "publish" as const }) },
  { weight: 1, arbitrary: fc.boolean().map((on) => ({ t: "notify" as const, on })) },
  {
    // The guest rewrites a descriptor between two reads (item 24).
    weight: 1,
    arbitrary: fc.record({
      t: fc.constant("poke" as const),
      i: fc.nat({ max: 64 }),
      d: descSpecArb,
    }),
  },
  {
    weight: 1,
    arbitrary: fc.integer({ min: 0, max: 0xffff }).map((v) => ({ t: "idx" as const, v })),
  },
);

/** Everything one run of target b draws. */
export interface RingCase {
  mem: MemSpec;
  fill: number;
  ring: RingSpec;
  tables: TableSpec[];
  capacity: number;
  maxReadable: number;
  ops: RingOp[];
}

export const ringCaseArb: fc.Arbitrary<RingCase> = fc.record({
  mem: memSpecArb,
  fill: fc.integer(),
  ring: ringSpecArb,
  tables: fc.array(tableSpecArb, { maxLength: 3 }),
  capacity: fc.constantFrom(1, 2, 3, 8, 128, 128),
  maxReadable: fc.constantFrom(12 + 9018, 10 + 1514, 64, 0, 65535 + 12),
  ops: fc.array(ringOpArb, { minLength: 1, maxLength: 24 }),
});

const u16At = (mem: FuzzMem, p: Placed, off: number) =>
  mem.views[p.region].getUint16(p.offset + off, true);
const u32At = (mem: FuzzMem, p: Placed, off: number) =>
  mem.views[p.region].getUint32(p.offset + off, true);

function runRingCase(c: RingCase): void {
  trace(() => `b: ${show(c)}`);
  const mem = new FuzzMem(c.mem);
  try {
    const size0 = 1 << c.ring.log2;
    fillMemory(mem, c.fill, size0);
    const lay = buildRing(mem, c.ring, c.tables, c.fill);
    const gm = new GuestMemory(mem.regions);
    const ring = makeRing(gm, lay, c.ring, c.maxReadable);
    const out = new SegList(c.capacity);
    const mask = lay.size - 1;
    let lastAvail = c.ring.base & 0xffff, usedIdx = c.ring.base & 0xffff, published = usedIdx;
    let pending = 0;
    c.ops.forEach((op, n) => {
      const ctx =
        `op ${n} (${op.t}) on ring of ${lay.size} at desc ${lay.desc.region}:${lay.desc.offset}, avail ${lay.avail.region}:${lay.avail.offset}, used ${lay.used.region}:${lay.used.offset}`;
      switch (op.t) {
        case "walk": {
          const head = resolveHead(op.head, lay.size);
          if (!op.keep) out.reset();
          const from = out.count, startTotal = out.total;
          const limit = op.writable ? Number.MAX_SAFE_INTEGER : c.maxReadable;
          const model = modelWalk(
            mem,
            lay,
            c.ring.indirect,
            head,
            op.writable,
            limit,
            c.capacity,
            from,
          );
          const got = ring.walk(head, out, op.writable);
          count(`walk ${walkName(got)}`);
          if (lay.desc.offset >= TWO32 || lay.avail.offset >= TWO32 || lay.used.offset >= TWO32) {
            count("rings above 4 GiB");
          }
          const spans = listSpans(gm, out, from, ctx);
          const isErr = (Object.values(WalkError) as number[]).includes(got);
          if (!isErr && !(Number.isSafeInteger(got) && got >= 0 && got <= limit)) {
            fail(`${ctx}: walk returned ${got}, neither a WalkError nor a count ≤ ${limit}`);
          }
          if (!isErr && got !== out.total - startTotal) {
            fail(`${ctx}: walk returned ${got}, segments hold ${out.total - startTotal}`);
          }
          const same = got === model.result && spans.length === model.segs.length &&
            spans.every((s, k) =>
              s.r === model.segs[k].r && s.off === model.segs[k].off && s.len === model.segs[k].len
            );
          if (!same) {
            fail(
              `${ctx}: walk(head ${head}, ${op.writable ? "writable" : "readable"}) = ${got} ${
                JSON.stringify(spans)
              }, model = ${model.result} ${JSON.stringify(model.segs)}`,
            );
          }
          break;
        }
        case "available": {
          const idx = u16At(mem, lay.avail, 2);
          const d = (idx - lastAvail) & 0xffff;
          const want = d > lay.size ? -1 : d; // item 15
          const got = ring.available();
          if (got !== want) {
            fail(`${ctx}: available() = ${got}, avail.idx ${idx} − last ${lastAvail} says ${want}`);
          }
          break;
        }
        case "next": {
          const want = u16At(mem, lay.avail, 4 + 2 * (lastAvail & mask));
          const got = ring.nextHead();
          lastAvail = (lastAvail + 1) & 0xffff;
          if (got !== want) {
            fail(`${ctx}: nextHead() = ${got}, avail.ring[${lastAvail - 1 & mask}] holds ${want}`);
          }
          if (ring.lastAvail !== lastAvail) {
            fail(`${ctx}: lastAvail ${ring.lastAvail} ≠ ${lastAvail}`);
          }
          break;
        }
        case "unget":
          ring.unget(op.n);
          lastAvail = (lastAvail - op.n) & 0xffff;
          break;
        case "used": {
          const e = 4 + 8 * (usedIdx & mask);
          ring.pushUsed(op.head, op.len);
          usedIdx = (usedIdx + 1) & 0xffff;
          pending++;
          const id = u32At(mem, lay.used, e), len = u32At(mem, lay.used, e + 4);
          if (id !== op.head || len !== (op.len >>> 0)) {
            fail(
              `${ctx}: used.ring[${
                (usedIdx - 1) & mask
              }] = (${id}, ${len}), pushed (${op.head}, ${op.len})`,
            );
          }
          break;
        }
        case "publish": {
          const got = ring.publish();
          if (pending === 0) {
            if (got) fail(`${ctx}: publish with nothing pending asked for an interrupt`);
            break;
          }
          pending = 0;
          const idx = u16At(mem, lay.used, 2);
          if (idx !== usedIdx) fail(`${ctx}: used.idx = ${idx} after publish, want ${usedIdx}`);
          // §2.7.7.2 / §2.7.10: used_event is avail.ring[size].
          const want = c.ring.eventIdx
            ? needEvent(u16At(mem, lay.avail, 4 + 2 * lay.size), usedIdx, published)
            : (u16At(mem, lay.avail, 0) & 1) === 0;
          published = usedIdx;
          if (got !== want) fail(`${ctx}: publish() = ${got}, want ${want}`);
          break;
        }
        case "notify": {
          ring.setNoNotify(op.on);
          if (c.ring.eventIdx) {
            // avail_event is used.ring[size].
            if (!op.on && u16At(mem, lay.used, 4 + 8 * lay.size) !== lastAvail) {
              fail(
                `${ctx}: avail_event ${
                  u16At(mem, lay.used, 4 + 8 * lay.size)
                } ≠ lastAvail ${lastAvail}`,
              );
            }
          } else if (u16At(mem, lay.used, 0) !== (op.on ? 1 : 0)) {
            fail(`${ctx}: used.flags = ${u16At(mem, lay.used, 0)} after setNoNotify(${op.on})`);
          }
          break;
        }
        case "poke":
          putDesc(mem, lay, lay.desc, op.i % lay.size, lay.size, op.d);
          break;
        case "idx":
          mem.views[lay.avail.region].setUint16(lay.avail.offset + 2, op.v, true);
          break;
      }
    });
  } finally {
    mem.close();
  }
}

function runTargetB(o: RunOptions): Promise<TargetOutcome> {
  const t0 = performance.now();
  const st = resetStats();
  const state = { evals: 0, failed: false };
  const prop = fc.asyncProperty(
    ringCaseArb,
    counted(o, state, (c: RingCase) => {
      runRingCase(c);
      return Promise.resolve();
    }),
  );
  return (fc.check(prop, params(o)) as Promise<fc.RunDetails<unknown>>).then((details) => ({
    details,
    ms: performance.now() - t0,
    evals: state.evals,
    stats: st,
  }));
}

// ---------------------------------------------------------------------------
// Target b2: the engine between a hostile and a well-formed guest
// ---------------------------------------------------------------------------

const GOOD_MAC = [0x02, 0, 0, 0, 0, 0x0b];
const GOOD_RX = 128;
const GOOD_TX = 64;
const GOOD_MAX_FRAME = 9018;
const GOOD_HDR = 12;

/**
 * A correct driver (§2.7, §5.1.6): RX buffers always posted (so the switch
 * never runs out for it), TX frames with a zero header. Its memory is
 * diffed around every round: only RX buffers it got back and the used
 * rings may change.
 */
class GoodGuest {
  readonly map: Mapping;
  readonly u8: Uint8Array;
  readonly view: DataView;
  readonly region: MappedRegion;
  readonly mem: GuestMemory;
  readonly buf: number;
  static readonly RX_DESC = 0;
  static readonly RX_AVAIL = 0x800;
  static readonly RX_USED = 0x1000;
  static readonly TX_DESC = 0x1800;
  static readonly TX_AVAIL = 0x1c00;
  static readonly TX_USED = 0x2000;
  static readonly TX_BUFS = 0x4000;
  static readonly RX_BUFS = 0x4000 + GOOD_TX * 2048;
  #rxAvail = 0;
  #rxUsed = 0;
  readonly #rxOut: number[] = [];
  #txAvail = 0;
  #txUsed = 0;
  #txNext = 0;
  readonly size: number;

  constructor(readonly gpa: number, readonly mergeable: boolean) {
    this.buf = mergeable ? 4096 : 9216;
    this.size = GoodGuest.RX_BUFS + GOOD_RX * this.buf;
    this.map = mmap(-1, this.size, 0, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
    this.u8 = new Uint8Array(this.map.buffer);
    this.view = new DataView(this.map.buffer);
    this.region = { gpa, size: this.size, address: this.map.address };
    this.mem = new GuestMemory([this.region]);
    for (let i = 0; i < GOOD_RX; i++) {
      const [lo, hi] = split64(gpa + this.rxBuf(i));
      writeDesc(this.view, GoodGuest.RX_DESC + 16 * i, lo, hi, this.buf, VIRTQ_DESC_F_WRITE, 0);
      this.#postRx(i);
    }
  }

  rxBuf(i: number): number {
    return GoodGuest.RX_BUFS + i * this.buf;
  }

  #postRx(head: number): void {
    this.view.setUint16(GoodGuest.RX_AVAIL + 4 + 2 * (this.#rxAvail % GOOD_RX), head, true);
    this.#rxAvail = (this.#rxAvail + 1) & 0xffff;
    this.view.setUint16(GoodGuest.RX_AVAIL + 2, this.#rxAvail, true);
    this.#rxOut.push(head);
  }

  ring(q: 0 | 1): SplitRing {
    const [d, a, u, n] = q === 0
      ? [GoodGuest.RX_DESC, GoodGuest.RX_AVAIL, GoodGuest.RX_USED, GOOD_RX]
      : [GoodGuest.TX_DESC, GoodGuest.TX_AVAIL, GoodGuest.TX_USED, GOOD_TX];
    return new SplitRing(
      this.mem,
      n,
      { region: 0, offset: d },
      { region: 0, offset: a },
      { region: 0, offset: u },
      0,
      false,
      GOOD_HDR + GOOD_MAX_FRAME,
      false,
    );
  }

  /** Queues broadcast frames of these lengths; returns their bytes (without header). */
  send(lengths: number[], tag: number): Uint8Array[] {
    const frames: Uint8Array[] = [];
    for (const len of lengths) {
      const f = new Uint8Array(len);
      f.fill(0xff, 0, 6);
      f.set(GOOD_MAC, 6);
      f[12] = 0x88;
      f[13] = 0xb5;
      for (let i = 14; i < len; i++) f[i] = (tag + i) & 0xff;
      const slot = this.#txNext++ % GOOD_TX;
      const at = GoodGuest.TX_BUFS + slot * 2048;
      this.u8.fill(0, at, at + GOOD_HDR);
      this.u8.set(f, at + GOOD_HDR);
      const [lo, hi] = split64(this.gpa + at);
      writeDesc(this.view, GoodGuest.TX_DESC + 16 * slot, lo, hi, GOOD_HDR + len, 0, 0);
      this.view.setUint16(GoodGuest.TX_AVAIL + 4 + 2 * (this.#txAvail % GOOD_TX), slot, true);
      this.#txAvail = (this.#txAvail + 1) & 0xffff;
      frames.push(f);
    }
    this.view.setUint16(GoodGuest.TX_AVAIL + 2, this.#txAvail, true);
    return frames;
  }

  /** TX used entries since last time: every frame sent comes back, length 0 (§2.7.8). */
  reapTx(ctx: string): void {
    const idx = this.view.getUint16(GoodGuest.TX_USED + 2, true);
    if (idx !== this.#txAvail) fail(`${ctx}: good TX used.idx ${idx}, sent ${this.#txAvail}`);
    for (; this.#txUsed !== idx; this.#txUsed = (this.#txUsed + 1) & 0xffff) {
      const e = GoodGuest.TX_USED + 4 + 8 * (this.#txUsed % GOOD_TX);
      if (
        this.view.getUint32(e, true) !== this.#txUsed % GOOD_TX ||
        this.view.getUint32(e + 4, true) !== 0
      ) {
        fail(
          `${ctx}: good TX used entry ${this.#txUsed} = (${this.view.getUint32(e, true)}, ${
            this.view.getUint32(e + 4, true)
          })`,
        );
      }
    }
  }

  /**
   * RX used entries since last time, checked to name buffers we posted,
   * in order, with lengths ≤ the buffer; reposted. Returns them.
   */
  takeRx(ctx: string): { id: number; len: number }[] {
    const idx = this.view.getUint16(GoodGuest.RX_USED + 2, true);
    const n = (idx - this.#rxUsed) & 0xffff;
    if (n > this.#rxOut.length) {
      fail(`${ctx}: good RX used.idx moved by ${n} with ${this.#rxOut.length} buffers posted`);
    }
    const out: { id: number; len: number }[] = [];
    for (let k = 0; k < n; k++) {
      const e = GoodGuest.RX_USED + 4 + 8 * ((this.#rxUsed + k) % GOOD_RX);
      const id = this.view.getUint32(e, true), len = this.view.getUint32(e + 4, true);
      const want = this.#rxOut.shift()!;
      if (id !== want) {
        fail(`${ctx}: good RX used entry names buffer ${id}, next posted is ${want}`);
      }
      if (len > this.buf || len === 0) {
        fail(`${ctx}: good RX used length ${len} (buffers of ${this.buf})`);
      }
      out.push({ id, len });
    }
    this.#rxUsed = idx;
    for (const { id } of out) this.#postRx(id);
    return out;
  }

  close(): void {
    munmap(this.map);
  }
}

/** What the hostile guest does between two rounds (item 24: after our checks, before our next read). */
type Poke =
  | { t: "post"; heads: HeadSpec[]; overflow: boolean }
  | { t: "idx"; v: number; raw: boolean }
  | { t: "desc"; i: number; d: DescSpec }
  | { t: "bytes"; r: number; at: Where; d: number; bytes: Uint8Array }
  | { t: "header"; i: number; flags: number; gso: number };

const pokeArb: fc.Arbitrary<Poke> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      t: fc.constant("post" as const),
      heads: fc.array(headSpecArb, { minLength: 1, maxLength: 40 }),
      overflow: fc.oneof({ weight: 30, arbitrary: fc.constant(false) }, {
        weight: 1,
        arbitrary: fc.constant(true),
      }),
    }),
  },
  {
    // avail.idx rewritten: within the ring (it may go backwards), or anywhere (item 15).
    weight: 1,
    arbitrary: fc.record({
      t: fc.constant("idx" as const),
      v: fc.integer({ min: 0, max: 0xffff }),
      raw: fc.oneof({ weight: 4, arbitrary: fc.constant(false) }, {
        weight: 1,
        arbitrary: fc.constant(true),
      }),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      t: fc.constant("desc" as const),
      i: fc.nat({ max: 64 }),
      d: descSpecArb,
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      t: fc.constant("bytes" as const),
      r: fc.nat({ max: 2 }),
      at: whereArb,
      d: fc.nat({ max: 4096 }),
      bytes: fc.uint8Array({ minLength: 1, maxLength: 32 }),
    }),
  },
  {
    // Header fields the switch must refuse: flags / gso_type ≠ 0 with nothing negotiated (§5.1.6.2).
    weight: 2,
    arbitrary: fc.record({
      t: fc.constant("header" as const),
      i: fc.nat({ max: 64 }),
      flags: fc.constantFrom(0, 0, 1, 2, 0x80),
      gso: fc.constantFrom(0, 0, 1, 3, 4, 0x80),
    }),
  },
);

/** One polling round: what the hostile guest changes first, what the good guest sends. */
export interface RoundSpec {
  pokes: Poke[];
  good: number[];
  /** RX buffers the hostile guest gives back this round (it may never). */
  rxPost: number;
}

/** Everything one run of target b2 draws. */
export interface EngineCase {
  mem: MemSpec;
  fill: number;
  tx: RingSpec;
  rx: RingSpec | null;
  tables: TableSpec[];
  hdrLen: 10 | 12;
  mergeable: boolean;
  maxFrame: number;
  goodMergeable: boolean;
  goodGpa: number;
  rounds: RoundSpec[];
}

export const engineCaseArb: fc.Arbitrary<EngineCase> = fc.record({
  mem: memSpecArb,
  fill: fc.integer(),
  tx: ringSpecArb,
  rx: fc.option(rxRingSpecArb, { freq: 4 }),
  tables: fc.array(tableSpecArb, { maxLength: 3 }),
  hdrLen: fc.constantFrom(10 as const, 12 as const),
  mergeable: fc.boolean(),
  maxFrame: fc.constantFrom(64, 1514, 9018, 9018, 16000),
  goodMergeable: fc.boolean(),
  goodGpa: fc.constantFrom(0, 0x4000_0000, 2 ** 40),
  rounds: fc.array(
    fc.record({
      pokes: fc.array(pokeArb, { maxLength: 3 }),
      good: fc.array(fc.integer({ min: 60, max: 1514 }), { maxLength: 4 }),
      rxPost: fc.nat({ max: 8 }),
    }),
    { minLength: 1, maxLength: 12 },
  ),
});

function applyPoke(mem: FuzzMem, lay: RingLayout, p: Poke, lastAvail: number): void {
  const av = mem.views[lay.avail.region];
  const ao = lay.avail.offset;
  switch (p.t) {
    case "post": {
      let idx = av.getUint16(ao + 2, true);
      // A driver posts into free slots; "overflow" runs avail.idx past the ring (item 15).
      const free = Math.max(0, lay.size - ((idx - lastAvail) & 0xffff));
      const heads = p.overflow ? p.heads : p.heads.slice(0, free);
      for (const h of heads) {
        av.setUint16(ao + 4 + 2 * (idx % lay.size), resolveHead(h, lay.size), true);
        idx = (idx + 1) & 0xffff;
      }
      av.setUint16(ao + 2, idx, true);
      return;
    }
    case "idx":
      av.setUint16(ao + 2, p.raw ? p.v : (lastAvail + p.v % (lay.size + 1)) & 0xffff, true);
      return;
    case "desc":
      putDesc(mem, lay, lay.desc, p.i % lay.size, lay.size, p.d);
      return;
    case "bytes": {
      const r = p.r % mem.count;
      const at = placeAt(mem, r, p.at, p.d, p.bytes.length, 1);
      if (at) mem.bytes[r].set(p.bytes, at.offset);
      return;
    }
    case "header": {
      // Rewrite the first two header bytes of the buffer descriptor i points at, if mapped.
      const v = mem.views[lay.desc.region];
      const o = lay.desc.offset + 16 * (p.i % lay.size);
      const t = modelTranslate(mem, v.getBigUint64(o, true), 2);
      if (t) {
        mem.views[t.r].setUint8(t.off, p.flags);
        mem.views[t.r].setUint8(t.off + 1, p.gso);
      }
      return;
    }
  }
}

function readSpans(
  mem: FuzzMem,
  segs: Span[],
  from: number,
  len: number,
  reads: Span[],
): Uint8Array {
  const out = new Uint8Array(len);
  let pos = 0, skip = from;
  for (const s of segs) {
    if (pos >= len) break;
    if (skip >= s.len) {
      skip -= s.len;
      continue;
    }
    const n = Math.min(s.len - skip, len - pos);
    out.set(mem.bytes[s.r].subarray(s.off + skip, s.off + skip + n), pos);
    reads.push({ r: s.r, off: s.off + skip, len: n });
    pos += n;
    skip = 0;
  }
  return out;
}

function macKey(b: Uint8Array, at: number): [number, number] {
  return [
    (b[at] << 8) | b[at + 1],
    ((b[at + 2] << 24) | (b[at + 3] << 16) | (b[at + 4] << 8) | b[at + 5]) >>> 0,
  ];
}

/** The model's expectation for one round of the hostile port's TX. */
interface TxPrediction {
  brokenAvail: boolean;
  predictable: boolean;
  taken: number;
  counts: {
    rxPackets: number;
    rxBytes: number;
    dropRunt: number;
    dropBadHeader: number;
    dropBadDescriptor: number;
    dropSameport: number;
  };
  /** Frames that reach the good guest, in order. */
  toGood: Uint8Array[];
  goodTooBig: number;
}

/**
 * Predicts the hostile TX side of a round from the bytes as they are
 * before it: which chains are taken (item 15, BURST), how each walks
 * (modelWalk), and how the engine must classify it — runt (items 22, 25),
 * a header with flags or gso_type set (§5.1.6.2, item 23), or a frame
 * that is learned (source MAC) and forwarded by the FDB. The used-ring
 * writes the engine makes during the round are tracked; a read that one
 * of them could change makes the round unpredictable (still checked for
 * every other invariant).
 */
function predictTx(
  mem: FuzzMem,
  lay: RingLayout,
  spec: RingSpec,
  ring: SplitRing,
  hostile: DpPort,
  fdb: Map<string, number>,
  goodId: number,
): TxPrediction {
  const p: TxPrediction = {
    brokenAvail: false,
    predictable: true,
    taken: 0,
    counts: {
      rxPackets: 0,
      rxBytes: 0,
      dropRunt: 0,
      dropBadHeader: 0,
      dropBadDescriptor: 0,
      dropSameport: 0,
    },
    toGood: [],
    goodTooBig: 0,
  };
  const idx = u16At(mem, lay.avail, 2);
  let n = (idx - ring.lastAvail) & 0xffff;
  if (n > lay.size) {
    p.brokenAvail = true;
    return p;
  }
  if (n > BURST) n = BURST;
  p.taken = n;
  const writes: Span[] = [];
  const mask = lay.size - 1;
  const hl = hostile.hdrLen;
  for (let k = 0; k < n; k++) {
    const reads: Span[] = [];
    const entry = 4 + 2 * ((ring.lastAvail + k) & mask);
    reads.push({ r: lay.avail.region, off: lay.avail.offset + entry, len: 2 });
    const head = u16At(mem, lay.avail, entry);
    const w = modelWalk(mem, lay, spec.indirect, head, false, hl + hostile.maxFrame, 128, 0, reads);
    if (w.result < 0) p.counts.dropBadDescriptor++;
    else {
      const frameLen = w.result - hl;
      if (frameLen < 14) p.counts.dropRunt++;
      else {
        const hdr = readSpans(mem, w.segs, 0, 2, reads);
        if ((hdr[0] | hdr[1]) !== 0) p.counts.dropBadHeader++;
        else {
          const frame = readSpans(mem, w.segs, hl, frameLen, reads);
          p.counts.rxPackets++;
          p.counts.rxBytes += frameLen;
          const [dh, dl] = macKey(frame, 0), [sh, sl] = macKey(frame, 6);
          if ((sh & 0x100) === 0) fdb.set(`${sh}:${sl}`, hostile.id);
          const out = (dh & 0x100) === 0 ? fdb.get(`${dh}:${dl}`) : undefined;
          if (out === hostile.id) p.counts.dropSameport++;
          else if (frameLen > GOOD_MAX_FRAME) p.goodTooBig++;
          else p.toGood.push(frame);
          if (out !== undefined && out !== hostile.id && out !== goodId) p.predictable = false;
        }
      }
    }
    if (reads.some((r) => writes.some((w) => overlap(r, w)))) p.predictable = false;
    writes.push({
      r: lay.used.region,
      off: lay.used.offset + 4 + 8 * ((ring.usedIdx + k) & mask),
      len: 8,
    });
  }
  return p;
}

/** A copy of the populated windows, word-aligned in mapping coordinates (compared as words). */
interface Snap {
  r: number;
  /** Byte offset in the mapping (4-aligned). */
  at: number;
  words: Int32Array;
}

function snapshot(mem: FuzzMem): Snap[] {
  const out: Snap[] = [];
  mem.windows.forEach((ws, r) => {
    const skew = mem.regions[r].address - mem.maps[r].address;
    for (const w of ws) {
      // Offsets reach 6 GiB: arithmetic, not `& ~3` (which would wrap at 2^31).
      const at = skew + w.off - ((skew + w.off) % 4);
      const end = Math.min(mem.maps[r].length, Math.ceil((skew + w.off + w.len) / 4) * 4);
      out.push({ r, at, words: new Int32Array(mem.maps[r].buffer.slice(at, end)) });
    }
  });
  return out;
}

/** Offsets of hostile memory that changed in the round but lie in no allowed span. */
function strayWrites(mem: FuzzMem, before: Snap[], allowed: SpanSet): string[] {
  const stray: string[] = [];
  for (const snap of before) {
    const { r, at, words } = snap;
    const skew = mem.regions[r].address - mem.maps[r].address;
    const now = new Int32Array(mem.maps[r].buffer, at, words.length);
    for (let i = 0; i < words.length; i++) {
      if (words[i] === now[i]) continue;
      for (let b = 0; b < 4; b++) {
        const off = at + 4 * i + b - skew; // region offset
        const shift = 8 * b;
        if (((words[i] >>> shift) & 0xff) === ((now[i] >>> shift) & 0xff)) continue;
        if (allowed.hits(r, off)) continue;
        stray.push(`${r}:${off}`);
        if (stray.length > 8) return stray;
      }
    }
  }
  return stray;
}

/** Offsets where two equal-length byte arrays (4-aligned) differ, word by word. */
function changedOffsets(
  before: Uint8Array,
  now: Uint8Array,
  skip: (off: number) => boolean,
): number[] {
  const a = new Int32Array(before.buffer, before.byteOffset, before.length >>> 2);
  const b = new Int32Array(now.buffer, now.byteOffset, now.length >>> 2);
  const out: number[] = [];
  for (let i = 0; i < a.length; i++) {
    if (a[i] === b[i]) continue;
    for (let k = 4 * i; k < 4 * i + 4; k++) {
      if (before[k] !== now[k] && !skip(k)) out.push(k);
    }
    if (out.length > 8) break;
  }
  return out;
}

const counterNames = COUNTER_NAMES as readonly string[];

function counters(c: Float64Array, id: number): Record<string, number> {
  const out: Record<string, number> = {};
  counterNames.forEach((n, i) => (out[n] = c[id * COUNTERS_PER_PORT + i]));
  return out;
}

/** The shared engine (its scratch mapping cannot be released, so one serves every run). */
let engineRig:
  | { engine: Engine; counters: Float64Array; broken: { id: number; reason: string }[] }
  | null = null;

function rig() {
  if (engineRig === null) {
    const countersBuf = new Float64Array(createCounterBuffer());
    const broken: { id: number; reason: string }[] = [];
    const engine = new Engine(
      countersBuf,
      new Fdb(8192, 300_000),
      (p, reason) => broken.push({ id: p.id, reason }),
    );
    engineRig = { engine, counters: countersBuf, broken };
  }
  return engineRig;
}

const HOSTILE = 0, GOOD = 1;

function runEngineCase(c: EngineCase, callFd: number): void {
  trace(() => `b2: ${show(c)}`);
  const { engine, counters: cnt, broken } = rig();
  broken.length = 0;
  cnt.fill(0);
  const mem = new FuzzMem(c.mem);
  const good = new GoodGuest(c.goodGpa, c.goodMergeable);
  const hostile = new DpPort(HOSTILE, PortKind.VHOST, "hostile", c.maxFrame);
  const gp = new DpPort(GOOD, PortKind.VHOST, "good", GOOD_MAX_FRAME);
  try {
    fillMemory(mem, c.fill, 1 << c.tx.log2);
    const tx = buildRing(mem, c.tx, c.tables, c.fill, false, c.hdrLen);
    const rx = c.rx ? buildRing(mem, c.rx, [], c.fill ^ 0x1234, true, c.hdrLen) : null;
    const gm = new GuestMemory(mem.regions);
    hostile.mem = gm;
    hostile.hdrLen = c.hdrLen;
    hostile.mergeable = c.mergeable;
    hostile.tx = makeRing(gm, tx, c.tx, c.hdrLen + c.maxFrame);
    hostile.rx = rx && c.rx ? makeRing(gm, rx, c.rx, c.hdrLen + c.maxFrame) : null;
    hostile.callTx = callFd;
    hostile.callRx = callFd;
    gp.mem = good.mem;
    gp.hdrLen = GOOD_HDR;
    gp.mergeable = c.goodMergeable;
    gp.rx = good.ring(0);
    gp.tx = good.ring(1);
    gp.callRx = callFd;
    engine.add(hostile);
    engine.add(gp);
    engine.updateWindow();

    let rxNext = 0;
    c.rounds.forEach((round, n) => {
      const ctx = `round ${n}`;
      for (const p of round.pokes) applyPoke(mem, tx, p, hostile.tx?.lastAvail ?? 0);
      if (rx && hostile.rx && round.rxPost > 0) {
        const heads = Array.from(
          { length: round.rxPost },
          () => ({ t: "i" as const, v: rxNext++ }),
        );
        applyPoke(mem, rx, { t: "post", heads, overflow: false }, hostile.rx.lastAvail);
      }
      const goodFrames = good.send(round.good, n * 7);
      const hostileWasBroken = hostile.broken;
      const fdb = new Map<string, number>();
      for (const e of engine.fdb.entries(0)) {
        const b = e.mac.split(":").map((x) => parseInt(x, 16));
        const [h, l] = macKey(new Uint8Array(b), 0);
        fdb.set(`${h}:${l}`, e.port);
      }
      const pred = hostileWasBroken || hostile.tx === null
        ? null
        : predictTx(mem, tx, c.tx, hostile.tx, hostile, fdb, GOOD);
      const before = { h: counters(cnt, HOSTILE), g: counters(cnt, GOOD) };
      const memBefore = snapshot(mem);
      const goodBefore = good.u8.slice();
      const txLast = hostile.tx?.lastAvail ?? 0;
      const rxLast = hostile.rx?.lastAvail ?? 0;
      // RX chains the engine may fill this round, walked beforehand: the write set's superset.
      const rxAllowed: Span[] = [];
      const rxReads: Span[] = [];
      if (rx && hostile.rx && c.rx) {
        // The engine takes at most MAX_MERGE (64) chains per frame it delivers,
        // from what avail.idx says now or, cached, from what it said before
        // (rxKnown: one avail read per burst) — even if the guest since moved
        // avail.idx back (here: its used ring overlapping its avail ring).
        const ahead = Math.max((u16At(mem, rx.avail, 2) - rxLast) & 0xffff, hostile.rxKnown);
        for (let k = 0; k < Math.min(ahead, rx.size, 64 * goodFrames.length); k++) {
          const e = 4 + 2 * ((rxLast + k) & (rx.size - 1));
          rxReads.push({ r: rx.avail.region, off: rx.avail.offset + e, len: 2 });
          const w = modelWalk(
            mem,
            rx,
            c.rx.indirect,
            u16At(mem, rx.avail, e),
            true,
            Number.MAX_SAFE_INTEGER,
            1 << 20,
            0,
            rxReads,
          );
          rxAllowed.push(...w.segs);
        }
        rxAllowed.push({ r: rx.used.region, off: rx.used.offset, len: rx.used.len });
      }
      rxAllowed.push({ r: tx.used.region, off: tx.used.offset, len: tx.used.len });

      engine.round(0);
      count("rounds");
      if (pred?.predictable && !pred.brokenAvail) count("rounds checked against the model");

      // No fault may reach the engine's safety net (item 33), and the good guest never breaks.
      for (const b of broken.splice(0)) {
        count(`broken: ${b.reason.replace(/\(.*$/, "")}`);
        if (b.reason.startsWith("exception:")) {
          fail(`${ctx}: port ${b.id} broke by an exception: ${b.reason}`);
        }
        if (b.id === GOOD) fail(`${ctx}: the good port broke: ${b.reason}`);
      }
      const after = { h: counters(cnt, HOSTILE), g: counters(cnt, GOOD) };
      for (const side of [after.h, after.g]) {
        for (const [k, v] of Object.entries(side)) {
          if (!(Number.isFinite(v) && v >= 0 && Number.isInteger(v))) {
            fail(`${ctx}: counter ${k} = ${v}`);
          }
        }
      }
      const d = (side: "h" | "g", k: string) => after[side][k] - before[side][k];

      // The good guest: everything it sent was taken and counted; nothing dropped for it.
      good.reapTx(ctx);
      if (d("g", "rxPackets") !== goodFrames.length) {
        fail(
          `${ctx}: good sent ${goodFrames.length} frames, switch counted ${d("g", "rxPackets")}`,
        );
      }
      if (d("g", "dropNoBuffer") !== 0 || d("g", "dropBadDescriptor") !== 0) {
        fail(`${ctx}: good port dropped: ${JSON.stringify(after.g)}`);
      }
      const got = good.takeRx(ctx);
      const goodAllowed: [number, number][] = [
        [GoodGuest.RX_USED, 6 + 8 * GOOD_RX],
        [GoodGuest.TX_USED, 6 + 8 * GOOD_TX],
        ...got.map(({ id, len }) => [good.rxBuf(id), len] as [number, number]),
      ];
      // Our own reposting wrote RX avail after the round; only the switch's writes matter.
      const goodStray = changedOffsets(
        goodBefore,
        good.u8,
        (i) =>
          (i >= GoodGuest.RX_AVAIL && i < GoodGuest.RX_AVAIL + 6 + 2 * GOOD_RX) ||
          goodAllowed.some(([o, l]) => i >= o && i < o + l),
      );
      if (goodStray.length > 0) {
        fail(
          `${ctx}: good guest's memory changed at offsets ${goodStray}, outside its returned RX buffers and used rings`,
        );
      }
      // Frames the good guest received: header zero but num_buffers (§5.1.6.4), then the frame.
      const frames: { bytes: Uint8Array; chains: number }[] = [];
      for (let k = 0; k < got.length;) {
        const first = got[k];
        const hb = good.u8.subarray(good.rxBuf(first.id), good.rxBuf(first.id) + GOOD_HDR);
        const nb = hb[10] | (hb[11] << 8);
        if (
          hb.subarray(0, 10).some((x) => x !== 0) || nb < 1 || k + nb > got.length ||
          (!c.goodMergeable && nb !== 1)
        ) {
          fail(`${ctx}: good RX header ${[...hb]} (entry ${k} of ${got.length})`);
        }
        const parts: Uint8Array[] = [];
        let total = 0;
        for (let j = 0; j < nb; j++) {
          const e = got[k + j];
          if (j < nb - 1 && e.len !== good.buf) {
            fail(`${ctx}: a middle RX buffer of a merged frame holds ${e.len} of ${good.buf}`);
          }
          parts.push(good.u8.subarray(good.rxBuf(e.id), good.rxBuf(e.id) + e.len));
          total += e.len;
        }
        const bytes = new Uint8Array(total);
        let o = 0;
        for (const p of parts) {
          bytes.set(p, o);
          o += p.length;
        }
        const frame = bytes.subarray(GOOD_HDR);
        if (frame.length < 14 || frame.length > GOOD_MAX_FRAME) {
          fail(`${ctx}: good received a ${frame.length}-byte frame`);
        }
        frames.push({ bytes: frame, chains: nb });
        k += nb;
      }
      count("frames hostile → good", frames.length);
      count("frames good → hostile", d("h", "txPackets"));
      for (
        const k of [
          "dropRunt",
          "dropBadHeader",
          "dropBadDescriptor",
          "dropSameport",
          "dropNoBuffer",
        ]
      ) {
        count(`hostile ${k}`, d("h", k));
      }
      if (d("g", "txPackets") !== frames.length) {
        fail(
          `${ctx}: good counted ${
            d("g", "txPackets")
          } frames sent to it, received ${frames.length}`,
        );
      }

      if (pred && pred.brokenAvail) {
        if (!hostile.broken) {
          fail(`${ctx}: avail.idx more than the ring size ahead, port not broken (item 15)`);
        }
        if (d("h", "rxPackets") !== 0 || frames.length !== 0) {
          fail(`${ctx}: frames taken from a ring with a bad avail.idx`);
        }
      } else if (pred && pred.predictable) {
        for (const [k, v] of Object.entries(pred.counts)) {
          const got = d("h", k);
          // An RX chain of the hostile port may also be bad (+1, and it breaks).
          const extra = k === "dropBadDescriptor" && hostile.broken ? 1 : 0;
          if (got < v || got > v + extra) {
            fail(`${ctx}: hostile ${k} +${got}, model +${v} (${JSON.stringify(pred.counts)})`);
          }
        }
        if (hostile.tx && ((hostile.tx.lastAvail - txLast) & 0xffff) !== pred.taken) {
          fail(
            `${ctx}: hostile TX took ${
              (hostile.tx.lastAvail - txLast) & 0xffff
            } chains, model ${pred.taken}`,
          );
        }
        if (d("g", "dropTooBig") !== pred.goodTooBig) {
          fail(`${ctx}: good dropTooBig +${d("g", "dropTooBig")}, model +${pred.goodTooBig}`);
        }
        if (frames.length !== pred.toGood.length) {
          fail(`${ctx}: good received ${frames.length} frames, model ${pred.toGood.length}`);
        }
        frames.forEach((f, k) => {
          const want = pred.toGood[k];
          if (f.bytes.length !== want.length || f.bytes.some((x, i) => x !== want[i])) {
            const at = f.bytes.findIndex((x, i) => x !== want[i]);
            fail(
              `${ctx}: frame ${k} at the good guest (${f.bytes.length} B) differs from what the hostile guest sent (${want.length} B) at byte ${at}`,
            );
          }
        });
      }
      // Hostile RX: each frame the good guest sent was delivered, dropped or broke the port.
      if (!hostileWasBroken && !hostile.broken) {
        const handled = d("h", "txPackets") + d("h", "dropNoBuffer") + d("h", "dropTooBig");
        if (handled !== goodFrames.length) {
          fail(
            `${ctx}: ${goodFrames.length} frames for the hostile guest, ${handled} delivered or dropped`,
          );
        }
      }
      // Writes into hostile memory only where the engine may write, when the write set is stable.
      const allowed = new SpanSet(rxAllowed);
      if (!allowed.meets(rxReads)) {
        const stray = strayWrites(mem, memBefore, allowed);
        if (stray.length > 0) {
          fail(
            `${ctx}: the switch wrote hostile memory outside RX buffers and used rings at ${
              stray.join(", ")
            }`,
          );
        }
      }
    });
  } finally {
    engine.remove(HOSTILE);
    engine.remove(GOOD);
    mem.close();
    good.close();
  }
}

async function runTargetB2(o: RunOptions): Promise<TargetOutcome> {
  const t0 = performance.now();
  const st = resetStats();
  const trap = new EscapeTrap();
  trap.install();
  const callFd = eventfdCreate();
  const state = { evals: 0, failed: false };
  try {
    const prop = fc.asyncProperty(
      engineCaseArb,
      counted(o, state, (c: EngineCase) => {
        runEngineCase(c, callFd);
        const escaped = trap.take();
        if (escaped.length > 0) fail(`escaped: ${escaped.join("\n")}`);
        return Promise.resolve();
      }),
    );
    const details = await fc.check(prop, params(o)) as fc.RunDetails<unknown>;
    return { details, ms: performance.now() - t0, evals: state.evals, stats: st };
  } finally {
    trap.uninstall();
    closeFd(callFd);
  }
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
};
