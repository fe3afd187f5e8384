/**
 * Split rings in a `FuzzMem` for targets `b` and `b2`: the descriptor,
 * table and ring specs (arbitraries resolved against the layout), placing
 * a ring's parts, writing the descriptors and the avail ring, and the
 * `SplitRing` over it.
 *
 * @module
 */

import fc from "fast-check";
import type { GuestMemory } from "../../src/virtio/guest_memory.ts";
import {
  ringPartSizes,
  SplitRing,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
} from "../../src/virtio/split_ring.ts";
import { KiB, MiB, TWO32, U32_MAX, u32Arb } from "./common.ts";
import {
  FLAG_CHOICES,
  type FuzzMem,
  LEN_CHOICES,
  prng,
  split64,
  writeDesc,
} from "./guest_memory.ts";

// Descriptor specs: resolved against the layout, so shrinking keeps their meaning.

export type Where = "start" | "end" | "mid" | "hi4g";
export const whereArb = fc.constantFrom<Where>("start", "start", "end", "mid", "hi4g");

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

export type HeadSpec = { t: "i"; v: number } | { t: "sz"; d: number } | { t: "raw"; v: number };

export const headSpecArb: fc.Arbitrary<HeadSpec> = fc.oneof(
  { weight: 8, arbitrary: fc.nat({ max: 64 }).map((v) => ({ t: "i" as const, v })) },
  { weight: 1, arbitrary: fc.constantFrom(0, 1, 2).map((d) => ({ t: "sz" as const, d })) },
  {
    weight: 1,
    arbitrary: fc.integer({ min: 0, max: 0xffff }).map((v) => ({ t: "raw" as const, v })),
  },
);

export const tableSpecArb: fc.Arbitrary<TableSpec> = fc.record({
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
export const rxRingSpecArb: fc.Arbitrary<RingSpec> = ringArb(2, 4);

interface Placed {
  region: number;
  offset: number;
  gpa: number;
  len: number;
}

/** A ring laid out in a FuzzMem: where its parts are and what the model needs. */
export interface RingLayout {
  size: number;
  desc: Placed;
  avail: Placed;
  used: Placed;
  tables: Placed[];
}

export function placeAt(
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

export function resolveHead(h: HeadSpec, size: number): number {
  return (h.t === "i" ? h.v % size : h.t === "sz" ? size + h.d : h.v) & 0xffff;
}

export function putDesc(
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
export function buildRing(
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

export function makeRing(
  gm: GuestMemory,
  lay: RingLayout,
  spec: RingSpec,
  maxReadable: number,
): SplitRing {
  const part = (p: Placed) => ({ region: p.region, offset: p.offset });
  return new SplitRing({
    mem: gm,
    size: lay.size,
    desc: part(lay.desc),
    avail: part(lay.avail),
    used: part(lay.used),
    base: spec.base,
    indirect: spec.indirect,
    maxReadable,
    eventIdx: spec.eventIdx,
  });
}

export const u16At = (mem: FuzzMem, p: Placed, off: number) =>
  mem.views[p.region].getUint16(p.offset + off, true);
export const u32At = (mem: FuzzMem, p: Placed, off: number) =>
  mem.views[p.region].getUint32(p.offset + off, true);
