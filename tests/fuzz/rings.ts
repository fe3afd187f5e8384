/**
 * Target `b`: random operations on one split ring over random guest
 * memory — chain walks checked against the model, avail and used ring
 * accesses checked at their true offsets.
 *
 * @module
 */

import fc from "fast-check";
import { GuestMemory } from "../../src/virtio/guest_memory.ts";
import { needEvent, WalkError } from "../../src/virtio/split_ring.ts";
import { SegList } from "../../src/virtio/chain.ts";
import {
  count,
  counted,
  fail,
  params,
  resetStats,
  type RunOptions,
  show,
  type TargetOutcome,
  trace,
  TWO32,
  u32Arb,
} from "./common.ts";
import { fillMemory, FuzzMem, type MemSpec, memSpecArb } from "./guest_memory.ts";
import {
  buildRing,
  type DescSpec,
  descSpecArb,
  type HeadSpec,
  headSpecArb,
  makeRing,
  putDesc,
  resolveHead,
  type RingSpec,
  ringSpecArb,
  type TableSpec,
  tableSpecArb,
  u16At,
  u32At,
} from "./ring_layout.ts";
import { listSpans, modelWalk, walkName } from "./ring_model.ts";

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

export function runTargetB(o: RunOptions): Promise<TargetOutcome> {
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
