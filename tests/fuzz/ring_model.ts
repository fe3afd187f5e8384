/**
 * The model of targets `b` and `b2`: an independent reading of the split
 * ring's chain walk (VIRTIO 1.2 §2.7) over the same bytes, and the
 * byte-range bookkeeping (spans, span sets) its results are compared with.
 *
 * @module
 */

import type { GuestMemory } from "../../src/virtio/guest_memory.ts";
import {
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  WalkError,
} from "../../src/virtio/split_ring.ts";
import type { SegList } from "../../src/virtio/chain.ts";
import { fail } from "./common.ts";
import type { FuzzMem } from "./guest_memory.ts";
import type { RingLayout } from "./ring_layout.ts";

// ---------------------------------------------------------------------------
// The model: an independent reading of §2.7 over the same bytes
// ---------------------------------------------------------------------------

/** A byte range in one region, for read/write-set bookkeeping. */
export interface Span {
  r: number;
  off: number;
  len: number;
}

export function overlap(a: Span, b: Span): boolean {
  return a.r === b.r && a.off < b.off + b.len && b.off < a.off + a.len;
}

/** Spans merged per region, for fast membership and intersection tests. */
export class SpanSet {
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
export function modelTranslate(mem: FuzzMem, addr: bigint, len: number): Span | null {
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
export function modelWalk(
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

export function walkName(code: number): string {
  if (code >= 0) return "ok";
  for (const [k, v] of Object.entries(WalkError)) if (v === code) return k;
  return `${code}`;
}

/** The segments a SegList holds from `from` on, as spans, checked to lie inside their region. */
export function listSpans(gm: GuestMemory, out: SegList, from: number, ctx: string): Span[] {
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
