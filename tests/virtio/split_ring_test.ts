import { assertEquals } from "@std/assert";
import { GuestMemory } from "../../src/virtio/guest_memory.ts";
import {
  needEvent,
  SplitRing,
  VIRTQ_DESC_F_INDIRECT as IND,
  VIRTQ_DESC_F_NEXT as NEXT,
  VIRTQ_DESC_F_WRITE as WRITE,
  WalkError,
} from "../../src/virtio/split_ring.ts";
import { SegList } from "../../src/virtio/chain.ts";
import { TestMemory } from "../helpers/memfd_memory.ts";

const SIZE = 8;
const DESC = 0, AVAIL = 0x1000, USED = 0x2000, DATA = 0x4000;

function setup(indirect = true, split?: number, base = 0, eventIdx = false) {
  const tm = new TestMemory(0x20000);
  const mem = new GuestMemory(tm.regions(0, split));
  const ring = new SplitRing({
    mem,
    size: SIZE,
    desc: { region: 0, offset: DESC },
    avail: { region: 0, offset: AVAIL },
    used: { region: 0, offset: USED },
    base,
    indirect,
    maxReadable: 9018 + 12,
    eventIdx,
  });
  const avail = (heads: number[]) => {
    heads.forEach((h, i) => tm.view.setUint16(AVAIL + 4 + 2 * i, h, true));
    tm.view.setUint16(AVAIL + 2, heads.length, true);
  };
  return { tm, mem, ring, avail, out: new SegList(128) };
}

function walk(s: ReturnType<typeof setup>, head: number, writable = false): number {
  s.out.reset();
  return s.ring.walk(head, s.out, writable);
}

Deno.test("a well-formed chain of three descriptors is walked in order", () => {
  const s = setup();
  s.tm.desc(DESC, 0, DATA, 12, NEXT, 5);
  s.tm.desc(DESC, 5, DATA + 100, 60, NEXT, 2);
  s.tm.desc(DESC, 2, DATA + 300, 0, 0, 0); // zero length is legal
  assertEquals(walk(s, 0), 72);
  assertEquals(s.out.count, 2);
  assertEquals([s.out.offs[0], s.out.offs[1]], [DATA, DATA + 100]);
  s.tm.close();
});

Deno.test("avail index more than the ring size ahead is reported (item 15)", () => {
  const s = setup();
  s.avail([0, 1]);
  assertEquals(s.ring.available(), 2);
  s.tm.view.setUint16(AVAIL + 2, SIZE + 1, true);
  assertEquals(s.ring.available(), -1);
  s.tm.view.setUint16(AVAIL + 2, 0xffff, true); // wrapped far behind
  assertEquals(s.ring.available(), -1);
  s.tm.close();
});

Deno.test("bad chains are rejected with the right reason (items 16-21, 28)", () => {
  const cases: [string, (s: ReturnType<typeof setup>) => void, number, boolean?][] = [
    ["head beyond table", () => {}, WalkError.INDEX],
    ["next beyond table", (s) => s.tm.desc(DESC, 0, DATA, 10, NEXT, SIZE), WalkError.INDEX],
    ["loop", (s) => {
      s.tm.desc(DESC, 0, DATA, 10, NEXT, 1);
      s.tm.desc(DESC, 1, DATA, 10, NEXT, 0);
    }, WalkError.LOOP],
    ["zero-length self loop", (s) => s.tm.desc(DESC, 0, DATA, 0, NEXT, 0), WalkError.LOOP],
    ["unmapped address", (s) => s.tm.desc(DESC, 0, 0x100000, 10, 0, 0), WalkError.ADDRESS],
    [
      "address beyond 2^53",
      (s) => s.tm.desc(DESC, 0, 2 ** 53 + 2 ** 33, 10, 0, 0),
      WalkError.ADDRESS,
    ],
    ["addr+len past the end", (s) => s.tm.desc(DESC, 0, 0x20000 - 4, 10, 0, 0), WalkError.ADDRESS],
    ["writable in TX chain", (s) => s.tm.desc(DESC, 0, DATA, 10, WRITE, 0), WalkError.DIRECTION],
    ["indirect with NEXT", (s) => s.tm.desc(DESC, 0, DATA, 32, IND | NEXT, 1), WalkError.INDIRECT],
    ["indirect length 0", (s) => s.tm.desc(DESC, 0, DATA, 0, IND, 0), WalkError.INDIRECT],
    ["indirect not x16", (s) => s.tm.desc(DESC, 0, DATA, 24, IND, 0), WalkError.INDIRECT],
    [
      "indirect bigger than ring",
      (s) => s.tm.desc(DESC, 0, DATA, 16 * (SIZE + 1), IND, 0),
      WalkError.INDIRECT,
    ],
    ["nested indirect", (s) => {
      s.tm.desc(DESC, 0, DATA, 32, IND, 0);
      s.tm.desc(DATA, 0, DATA + 0x100, 16, IND, 0);
    }, WalkError.INDIRECT],
    ["indirect after a direct descriptor", (s) => {
      s.tm.desc(DESC, 0, DATA, 10, NEXT, 1);
      s.tm.desc(DESC, 1, DATA + 0x100, 16, IND, 0);
    }, WalkError.INDIRECT],
    ["indirect table loop", (s) => {
      s.tm.desc(DESC, 0, DATA, 32, IND, 0);
      s.tm.desc(DATA, 0, DATA + 0x200, 10, NEXT, 1);
      s.tm.desc(DATA, 1, DATA + 0x200, 10, NEXT, 0);
    }, WalkError.LOOP],
    ["too long a frame", (s) => s.tm.desc(DESC, 0, DATA, 10000, 0, 0), WalkError.TOO_LONG],
  ];
  for (const [name, build, expected] of cases) {
    const s = setup();
    build(s);
    assertEquals(walk(s, name === "head beyond table" ? SIZE : 0), expected, name);
    s.tm.close();
  }
});

Deno.test("indirect tables work when negotiated and are refused when not", () => {
  const s = setup(true);
  s.tm.desc(DESC, 0, DATA, 32, IND, 0);
  s.tm.desc(DATA, 0, DATA + 0x200, 12, NEXT, 1);
  s.tm.desc(DATA, 1, DATA + 0x300, 50, 0, 0);
  assertEquals(walk(s, 0), 62);
  s.tm.close();
  const t = setup(false);
  t.tm.desc(DESC, 0, DATA, 32, IND, 0);
  assertEquals(walk(t, 0), WalkError.INDIRECT);
  t.tm.close();
});

Deno.test("a buffer crossing a region boundary is rejected (item 19)", () => {
  const s = setup(true, 0x8000);
  s.tm.desc(DESC, 0, 0x8000 - 8, 16, 0, 0);
  assertEquals(walk(s, 0), WalkError.ADDRESS);
  s.tm.desc(DESC, 0, 0x8000, 16, 0, 0);
  assertEquals(walk(s, 0), 16, "inside the second region is fine");
  assertEquals(s.mem.region, 1);
  s.tm.close();
});

Deno.test("used entries are published with one index store; NO_INTERRUPT honoured", () => {
  const s = setup();
  s.ring.pushUsed(3, 100);
  s.ring.pushUsed(4, 0);
  assertEquals(s.tm.view.getUint16(USED + 2, true), 0, "not visible before publish");
  assertEquals(s.ring.publish(), true);
  assertEquals(s.tm.view.getUint16(USED + 2, true), 2);
  assertEquals(s.tm.view.getUint32(USED + 4, true), 3);
  assertEquals(s.tm.view.getUint32(USED + 8, true), 100);
  s.tm.view.setUint16(AVAIL, 1, true); // VRING_AVAIL_F_NO_INTERRUPT
  s.ring.pushUsed(5, 0);
  assertEquals(s.ring.publish(), false);
  assertEquals(s.ring.publish(), false, "nothing pending");
  s.ring.setNoNotify(true);
  assertEquals(s.tm.view.getUint16(USED, true), 1);
  s.tm.close();
});

Deno.test("EVENT_IDX: need-event rule with wraparound, avail_event written before sleeping", () => {
  assertEquals(needEvent(5, 6, 5), true, "event just published");
  assertEquals(needEvent(4, 6, 5), false, "event already passed");
  assertEquals(needEvent(6, 6, 5), false, "event not reached yet");
  assertEquals(needEvent(0xffff, 1, 0xfffe), true, "wraparound");
  assertEquals(needEvent(2, 1, 0xfffe), false);
  const { tm, ring } = setup(true, undefined, 7, true);
  ring.setNoNotify(false);
  assertEquals(tm.view.getUint16(USED + 4 + 8 * SIZE, true), 7, "avail_event = next avail index");
  tm.view.setUint16(AVAIL + 4 + 2 * SIZE, 8, true); // used_event: interrupt after the 2nd entry
  ring.pushUsed(0, 0);
  assertEquals(ring.publish(), false);
  ring.pushUsed(1, 0);
  assertEquals(ring.publish(), true);
  tm.close();
});
