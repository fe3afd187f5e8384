/**
 * Guest memory for targets `b` and `b2`: `FuzzMem` (random regions as
 * real anonymous mappings), its fill, the PRNGs, and how a descriptor is
 * written.
 *
 * @module
 */

import fc from "fast-check";
import { type Mapping, mmap, munmap } from "../../ffi/memory.ts";
import { MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE } from "../../ffi/constants.ts";
import type { MappedRegion } from "../../src/types/memory.ts";
import {
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
} from "../../src/virtio/split_ring.ts";
import { GiB, KiB, MiB, TWO32 } from "./common.ts";

// ---------------------------------------------------------------------------
// Guest memory for targets b and b2: real anonymous mappings as regions
// ---------------------------------------------------------------------------

const MAP_NORESERVE = 0x4000;

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
export class FuzzMem {
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
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export const FLAG_CHOICES = [
  0,
  0,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT,
];
export const LEN_CHOICES = [
  0,
  1,
  2,
  10,
  12,
  14,
  16,
  24,
  26,
  32,
  48,
  60,
  64,
  100,
  1500,
  4096,
  0xffff_ffff,
];

export function writeDesc(
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
export function split64(addr: number | bigint): [number, number] {
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
export function fillMemory(mem: FuzzMem, seed: number, tableSize: number): void {
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
