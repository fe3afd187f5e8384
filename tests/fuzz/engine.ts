/**
 * Target `b2`: the forwarding `Engine` between a hostile guest (rings
 * from ring_layout.ts, rewritten between rounds) and a `GoodGuest`; a
 * model predicts the counters and the frames the good guest receives, and
 * write sets are diffed.
 *
 * @module
 */

import fc from "fast-check";
import { closeFd } from "../../ffi/io.ts";
import { eventfdCreate } from "../../ffi/eventfd.ts";
import { GuestMemory } from "../../src/virtio/guest_memory.ts";
import type { SplitRing } from "../../src/virtio/split_ring.ts";
import { BURST, DpPort, Engine, PortKind } from "../../src/switch/engine.ts";
import { Fdb } from "../../src/switch/fdb.ts";
import {
  COUNTER_NAMES,
  COUNTERS_PER_PORT,
  createCounterBuffer,
} from "../../src/switch/counters.ts";
import {
  count,
  counted,
  EscapeTrap,
  fail,
  params,
  resetStats,
  type RunOptions,
  show,
  type TargetOutcome,
  trace,
} from "./common.ts";
import { fillMemory, FuzzMem, type MemSpec, memSpecArb } from "./guest_memory.ts";
import {
  buildRing,
  type DescSpec,
  descSpecArb,
  type HeadSpec,
  headSpecArb,
  makeRing,
  placeAt,
  putDesc,
  resolveHead,
  type RingLayout,
  type RingSpec,
  ringSpecArb,
  rxRingSpecArb,
  type TableSpec,
  tableSpecArb,
  u16At,
  type Where,
  whereArb,
} from "./ring_layout.ts";
import { modelTranslate, modelWalk, overlap, type Span, SpanSet } from "./ring_model.ts";
import { GOOD_HDR, GOOD_MAX_FRAME, GOOD_RX, GOOD_TX, GoodGuest } from "./good_guest.ts";

// ---------------------------------------------------------------------------
// Target b2: the engine between a hostile and a well-formed guest
// ---------------------------------------------------------------------------

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
  const hl = hostile.vq!.hdrLen;
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
    engine.add(hostile);
    engine.add(gp);
    hostile.mem = gm;
    hostile.vq!.hdrLen = c.hdrLen;
    hostile.vq!.mergeable = c.mergeable;
    hostile.vq!.tx = makeRing(gm, tx, c.tx, c.hdrLen + c.maxFrame);
    hostile.vq!.rx = rx && c.rx ? makeRing(gm, rx, c.rx, c.hdrLen + c.maxFrame) : null;
    hostile.vq!.callTx = callFd;
    hostile.vq!.callRx = callFd;
    gp.mem = good.mem;
    gp.vq!.hdrLen = GOOD_HDR;
    gp.vq!.mergeable = c.goodMergeable;
    gp.vq!.rx = good.ring(0);
    gp.vq!.tx = good.ring(1);
    gp.vq!.callRx = callFd;
    engine.updateWindow();

    let rxNext = 0;
    c.rounds.forEach((round, n) => {
      const ctx = `round ${n}`;
      for (const p of round.pokes) applyPoke(mem, tx, p, hostile.vq!.tx?.lastAvail ?? 0);
      if (rx && hostile.vq!.rx && round.rxPost > 0) {
        const heads = Array.from(
          { length: round.rxPost },
          () => ({ t: "i" as const, v: rxNext++ }),
        );
        applyPoke(mem, rx, { t: "post", heads, overflow: false }, hostile.vq!.rx.lastAvail);
      }
      const goodFrames = good.send(round.good, n * 7);
      const hostileWasBroken = hostile.broken;
      const fdb = new Map<string, number>();
      for (const e of engine.fdb.entries(0)) {
        const b = e.mac.split(":").map((x) => parseInt(x, 16));
        const [h, l] = macKey(new Uint8Array(b), 0);
        fdb.set(`${h}:${l}`, e.port);
      }
      const pred = hostileWasBroken || hostile.vq!.tx === null
        ? null
        : predictTx(mem, tx, c.tx, hostile.vq!.tx as SplitRing, hostile, fdb, GOOD);
      const before = { h: counters(cnt, HOSTILE), g: counters(cnt, GOOD) };
      const memBefore = snapshot(mem);
      const goodBefore = good.u8.slice();
      const txLast = hostile.vq!.tx?.lastAvail ?? 0;
      const rxLast = hostile.vq!.rx?.lastAvail ?? 0;
      // RX chains the engine may fill this round, walked beforehand: the write set's superset.
      const rxAllowed: Span[] = [];
      const rxReads: Span[] = [];
      if (rx && hostile.vq!.rx && c.rx) {
        // The engine takes at most MAX_MERGE (64) chains per frame it delivers,
        // from what avail.idx says now or, cached, from what it said before
        // (rxKnown: one avail read per burst) — even if the guest since moved
        // avail.idx back (here: its used ring overlapping its avail ring).
        const ahead = Math.max((u16At(mem, rx.avail, 2) - rxLast) & 0xffff, hostile.vq!.rxKnown);
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
        if (hostile.vq!.tx && ((hostile.vq!.tx.lastAvail - txLast) & 0xffff) !== pred.taken) {
          fail(
            `${ctx}: hostile TX took ${
              (hostile.vq!.tx.lastAvail - txLast) & 0xffff
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

export async function runTargetB2(o: RunOptions): Promise<TargetOutcome> {
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
