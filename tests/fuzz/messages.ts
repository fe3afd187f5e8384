/**
 * Target `a`: the vhost-user message grammar (well-formed messages, then
 * flag, payload and fd noise; a bring-up prologue) fed to a
 * `VhostUserDevice`, with the checks on what the device holds after each
 * message and after a reset. Target `a2` reuses the grammar and checks.
 *
 * @module
 */

import fc from "fast-check";
import { reset as resetLogging } from "@logtape/logtape";
import { closeFd } from "../../ffi/io.ts";
import { logger } from "../../src/log.ts";
import {
  type Message,
  type Outcome,
  ProtocolError,
  VhostUserDevice,
} from "../../src/vhost_user/device.ts";
import { Request } from "../../src/vhost_user/protocol.ts";
import {
  captureErrorLogs,
  count,
  counted,
  describe,
  errorLogs,
  fail,
  params,
  resetStats,
  type RunOptions,
  show,
  type TargetOutcome,
  trace,
  U32_MAX,
  u32Arb,
} from "./common.ts";
import {
  FD_KINDS,
  fdCount,
  fdDiff,
  type FdKind,
  FdPool,
  FILE_SIZE,
  isOpen,
  ourFds,
  ourMappings,
  sameFds,
} from "./fds.ts";
import { FakeBackend } from "./fake_backend.ts";

// ---------------------------------------------------------------------------
// Target a: vhost-user messages and the device state machine
// ---------------------------------------------------------------------------

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
  // A bit we never offered (MQ, CTRL_VQ, RING_PACKED) or anything: item 14.
  { weight: 1, arbitrary: fc.constantFrom(1n << 22n, 1n << 17n, 1n << 34n, 2n ** 64n - 1n) },
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
export const flagsArb = fc.oneof(
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
export const prologueArb: fc.Arbitrary<MsgSpec[]> = fc.record({
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

export const fuzzLog = logger("fuzz");

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

export function checkReset(device: VhostUserDevice, backend: FakeBackend, ctx: string): void {
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

export async function runTargetA(o: RunOptions): Promise<TargetOutcome> {
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
