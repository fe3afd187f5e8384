/**
 * CHECKLIST items 15–28: a negotiated guest that writes hostile rings,
 * descriptors and headers into its own memory. Each case asserts the
 * specific outcome (the chain dropped and counted under the right reason
 * while the port keeps forwarding, or the queue broken and the port
 * dropped); `Stage.runCase` adds that the good guests kept exchanging
 * frames, the switch process stayed up and nothing leaked.
 */
import { assert, assertEquals } from "@std/assert";
import { ethFrame, F, macBytes, Req, type VirtioNetDriver } from "../helpers/frontend.ts";
import { A, BAD, type Case, hostileTest, sleep, type Stage, WAIT_MS } from "./harness.ts";

const NEXT = 1, WRITE = 2, INDIRECT = 4;
/** Descriptor slots the cases write by hand (the driver's own sends use low ones). */
const D = 250;
const SIZE = 256;
/** The engine's per-queue burst (src/switch/engine.ts BURST): the work budget of item 27. */
const BURST = 32;
/** Item 27: attacker frames served, and a↔b frames exchanged meanwhile, before it stops. */
const FLOOD = 20_000;
const FAIR = 200;
/** Item 27's attacker: the usual features without EVENT_IDX. */
const NO_EVENT_IDX = (1n << BigInt(F.VERSION_1)) | (1n << BigInt(F.INDIRECT_DESC)) |
  (1n << BigInt(F.MRG_RXBUF)) | (1n << BigInt(F.PROTOCOL_FEATURES));

/** Resolves once `done` holds; throws after `ms` (a bound on waiting, not a speed check). */
async function waitUntil(what: string, done: () => boolean, ms = WAIT_MS): Promise<void> {
  const deadline = Date.now() + ms;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`Timed out after ${ms} ms waiting for ${what}`);
    await sleep(1);
  }
}

/** Puts a 12-byte header (zero unless given) and `frame` in guest memory; returns its gpa. */
function place(g: VirtioNetDriver, frame: Uint8Array, header?: number[]): number {
  const gpa = g.mem.alloc(12 + frame.length, 16);
  g.mem.bytes.fill(0, gpa, gpa + 12);
  if (header) g.mem.bytes.set(header, gpa);
  g.mem.bytes.set(frame, gpa + 12);
  return gpa;
}

/** Writes descriptor `i` of the TX table. */
function desc(g: VirtioNetDriver, i: number, addr: number, len: number, flags = 0, next = 0) {
  g.tx.writeDesc(g.tx.desc, i, addr, len, flags, next);
}

/** Makes `head` available on TX and kicks. */
function post(g: VirtioNetDriver, head: number): void {
  g.tx.pushRaw(head);
  g.tx.notify();
}

/** A good frame from the attacker still reaches a: the port kept working. */
async function stillForwards(s: Stage, g: VirtioNetDriver, tag: number): Promise<void> {
  g.send(ethFrame(A, BAD, 46, tag));
  await s.pump.extraAtA((f) => f[14] === tag && f[6] === 0x02 && f[11] === 0x66);
}

/** Waits for exactly `n` more drops of `counter` on the attacker's port. */
async function dropped(s: Stage, counter: Parameters<Stage["delta"]>[1], n: number) {
  assertEquals(await s.until("bad", counter, n), n, counter);
}

/** The attacker's guest, negotiated, with RX buffers and its MAC learned. */
async function attacker(s: Stage, o: Parameters<Stage["guest"]>[0] = {}) {
  const g = await s.guest(o);
  g.fillRx(32);
  await stillForwards(s, g, 0x01);
  return g;
}

const frame = () => ethFrame(A, BAD, 46, 0x99);

const cases: Case[] = [
  {
    item: 15,
    name: "avail idx more than the ring size ahead: TX queue broken, port dropped",
    run: async (s) => {
      const g = await attacker(s);
      g.tx.setAvailIdx(g.tx.availIdx + SIZE + 1);
      g.tx.notify();
      assertEquals(await s.until("bad", "queueBroken", 1), 1);
      await s.sp.waitLog(/Port bad stopped after a fault: TX avail index more than/, s.logFrom);
      assert(await g.conn.closedByPeer(), "the switch dropped the attacker's connection");
    },
  },
  {
    item: 16,
    name: "head index and next index beyond the table",
    run: async (s) => {
      const g = await attacker(s);
      post(g, SIZE); // head == size
      await dropped(s, "dropBadDescriptor", 1);
      desc(g, D, place(g, frame()), 12, NEXT, 0xffff); // next far beyond
      post(g, D);
      await dropped(s, "dropBadDescriptor", 2);
      await stillForwards(s, g, 0x16);
    },
  },
  {
    item: 17,
    name: "chains that loop, including a zero-length descriptor pointing at itself",
    run: async (s) => {
      const g = await attacker(s);
      const at = place(g, frame());
      desc(g, D, at, 12, NEXT, D + 1);
      desc(g, D + 1, at + 12, 60, NEXT, D); // D → D+1 → D → …
      post(g, D);
      desc(g, D + 2, 0, 0, NEXT, D + 2); // zero length, next = itself
      post(g, D + 2);
      await dropped(s, "dropBadDescriptor", 2);
      await stillForwards(s, g, 0x17);
    },
  },
  {
    item: 18,
    name: "indirect tables: length 0, not ×16, beyond the ring size, nested, with NEXT",
    run: async (s) => {
      const g = await attacker(s);
      const at = place(g, frame());
      const table = g.mem.alloc(16 * (SIZE + 1), 16);
      g.tx.writeDesc(table, 0, at, 72, 0, 0); // a fine entry
      const variants: [number, number][] = [
        [0, INDIRECT],
        [24, INDIRECT],
        [16 * (SIZE + 1), INDIRECT],
        [16, INDIRECT | NEXT],
      ];
      variants.forEach(([len, flags], i) => {
        desc(g, D + i, table, len, flags, D);
        post(g, D + i);
      });
      const nested = g.mem.alloc(16, 16);
      g.tx.writeDesc(nested, 0, table, 16, INDIRECT, 0); // an indirect entry in a table
      desc(g, D + 4, nested, 16, INDIRECT);
      post(g, D + 4);
      await dropped(s, "dropBadDescriptor", 5);
      desc(g, D + 5, table, 16, INDIRECT); // the fine table itself is fine
      post(g, D + 5);
      assertEquals(await s.until("bad", "rxPackets", 2), 2, "one good indirect frame taken");
    },
  },
  {
    item: 18,
    name: "an indirect descriptor when INDIRECT_DESC was not negotiated",
    run: async (s) => {
      const g = await attacker(s, { features: (1n << 32n) | (1n << 30n) | (1n << 15n) });
      const table = g.mem.alloc(16, 16);
      g.tx.writeDesc(table, 0, place(g, frame()), 72, 0, 0);
      desc(g, D, table, 16, INDIRECT);
      post(g, D);
      await dropped(s, "dropBadDescriptor", 1);
      await stillForwards(s, g, 0x18);
    },
  },
  {
    item: 19,
    name: "addr + len overflowing, crossing a region boundary, unmapped",
    run: async (s) => {
      const g = await attacker(s, { regions: 2 }); // 16 MiB as two regions of 8 MiB
      desc(g, D, 2 ** 53 - 4096, 8192); // addr + len passes 2^53
      desc(g, D + 1, 8 * 1024 * 1024 - 16, 72); // straddles the two regions
      desc(g, D + 2, 1 << 30, 72); // nothing there
      for (let i = 0; i < 3; i++) post(g, D + i);
      await dropped(s, "dropBadDescriptor", 3);
      await stillForwards(s, g, 0x19);
    },
  },
  {
    item: 20,
    name: "a writable buffer in a TX chain, and a write descriptor after a read one",
    run: async (s) => {
      const g = await attacker(s);
      const at = place(g, frame());
      desc(g, D, at, 72, WRITE);
      desc(g, D + 1, at, 12, NEXT, D + 2);
      desc(g, D + 2, at + 12, 60, WRITE);
      post(g, D);
      post(g, D + 1);
      await dropped(s, "dropBadDescriptor", 2);
      await stillForwards(s, g, 0x20);
    },
  },
  {
    item: 20,
    name: "a read-only buffer in the RX ring: RX queue broken, port dropped",
    run: async (s) => {
      const g = await s.guest();
      g.rx.add([{ gpa: g.mem.alloc(2048, 64), len: 2048, writable: false }]);
      await stillForwards(s, g, 0x21); // teaches the switch BAD's port
      s.da.send(ethFrame(BAD, A, 46, 0x22));
      assertEquals(await s.until("bad", "queueBroken", 1), 1);
      await s.sp.waitLog(/Port bad stopped after a fault: bad RX descriptor chain \(DIRECTION\)/);
      assert(await g.conn.closedByPeer());
    },
  },
  {
    item: 21,
    name: "a chain of more than 2^32 bytes (two 4 GiB descriptors)",
    run: async (s) => {
      // 4.1 GiB of sparse memfd: only the pages touched are ever allocated.
      const g = await attacker(s, { memMiB: 4200 });
      const at = place(g, frame());
      desc(g, D, at, 12, NEXT, D + 1);
      desc(g, D + 1, 0x1000, 0xffffffff, NEXT, D + 2);
      desc(g, D + 2, 0x1000, 0xffffffff);
      post(g, D);
      await dropped(s, "dropBadDescriptor", 1);
      await stillForwards(s, g, 0x21);
    },
  },
  {
    item: 21,
    name: "frames beyond the port's MTU, in both directions",
    run: async (s) => {
      const g = await attacker(s, { mtu: 1500 });
      s.da.send(ethFrame(BAD, A, 2000)); // to the attacker: more than its MTU
      await dropped(s, "dropTooBig", 1);
      g.send(ethFrame(A, BAD, 9100)); // from it: more than any MTU we allow
      // Counted as too big, or as a chain longer than the ring allows (hdr + max frame).
      let d = 0;
      for (const until = Date.now() + WAIT_MS; d < 1 && Date.now() < until; await sleep(10)) {
        d = await s.delta("bad", "dropTooBig") - 1 + await s.delta("bad", "dropBadDescriptor");
      }
      assertEquals(d, 1, "the oversized TX frame was dropped and counted");
      await stillForwards(s, g, 0x23);
    },
  },
  {
    item: 22,
    name: "a TX chain no longer than the header; a header split across descriptors is fine",
    run: async (s) => {
      const g = await attacker(s);
      desc(g, D, place(g, frame()), 12);
      post(g, D);
      await dropped(s, "dropRunt", 1);
      g.send(ethFrame(A, BAD, 46, 0x24), { split: [4, 5, 3, 20] });
      const f = await s.pump.extraAtA((x) => x[14] === 0x24);
      assertEquals(f, ethFrame(A, BAD, 46, 0x24));
    },
  },
  {
    item: 23,
    name: "headers asking for checksum or GSO we never negotiated, with nonsense offsets",
    run: async (s) => {
      const g = await attacker(s);
      // flags NEEDS_CSUM, csum_start 200 / csum_offset 90: beyond the 60-byte frame.
      g.send(frame(), { header: new Uint8Array([1, 0, 0, 0, 0, 0, 200, 0, 90, 0, 0, 0]) });
      // gso_type TCPV4 with gso_size 0 and hdr_len 9999.
      g.send(frame(), { header: new Uint8Array([0, 1, 0x0f, 0x27, 0, 0, 0, 0, 0, 0, 0, 0]) });
      await dropped(s, "dropBadHeader", 2);
      await stillForwards(s, g, 0x25);
    },
  },
  {
    item: 24,
    name: "double fetch: the guest rewrites a descriptor and a header while we read them",
    run: async (s) => {
      const g = await attacker(s);
      const real = ethFrame(A, BAD, 46, 0x26);
      const at = place(g, real);
      desc(g, D, at, 72);
      const worker = new Worker(new URL("./flipper_worker.ts", import.meta.url).href, {
        type: "module",
      });
      const flips = new Promise<number>((r) => (worker.onmessage = (e) => r(e.data)));
      worker.postMessage({
        address: g.mem.map.address,
        length: g.mem.size,
        ms: 1500,
        words: [
          // the descriptor's length: whole frame, out of the region, a runt, a short frame
          { offset: g.tx.desc + 16 * D + 8, values: [72, 0xffffffff, 20, 40] },
          // the header's flags/gso_type/hdr_len word: fine, then NEEDS_CSUM
          { offset: at, values: [0, 1, 0, 0x101] },
        ],
      });
      let posted = 0;
      const start = g.tx.usedIdx();
      while (posted < 400) {
        for (let i = 0; i < 50; i++) post(g, D); // the same head, again and again
        posted += 50;
        await waitUntil("the chains to return", () => ((g.tx.usedIdx() - start) & 0xffff) >= posted)
          .catch(() => {}); // the assertion below says how many did
      }
      console.log(`  flipper rewrote the words ${await flips} times`);
      worker.terminate();
      assertEquals((g.tx.usedIdx() - start) & 0xffff, 400, "every chain returned once");
      let sum = 0;
      for (const c of ["rxPackets", "dropRunt", "dropBadDescriptor", "dropBadHeader"] as const) {
        sum += await s.delta("bad", c);
      }
      assertEquals(sum, 400 + 1, "each chain counted exactly once (plus the learning frame)");
      for (const f of s.pump.extraA.filter((f) => f[14] === 0x26)) {
        assert(f.length === 60 || f.length === 28, `a frame of ${f.length} bytes`);
        assertEquals(f, real.subarray(0, f.length), "bytes from the guest's buffer only");
      }
    },
  },
  {
    item: 25,
    name: "frames shorter than 14 bytes",
    run: async (s) => {
      const g = await attacker(s);
      g.send(new Uint8Array(10));
      g.send(new Uint8Array(13));
      await dropped(s, "dropRunt", 2);
      await stillForwards(s, g, 0x27);
    },
  },
  {
    item: 26,
    name: "an empty RX ring: frames to it dropped and counted, nobody blocked",
    run: async (s) => {
      const g = await s.guest(); // no RX buffers at all
      await stillForwards(s, g, 0x28);
      for (let i = 0; i < 10; i++) s.da.send(ethFrame(BAD, A, 46));
      await dropped(s, "dropNoBuffer", 10);
    },
  },
  {
    item: 26,
    name: "RX buffers too small without MRG_RXBUF",
    run: async (s) => {
      const g = await s.guest({ mrgRxbuf: false, rxBufSize: 256 });
      g.fillRx(8);
      await stillForwards(s, g, 0x29);
      s.da.send(ethFrame(BAD, A, 1000));
      await dropped(s, "dropNoBuffer", 1);
      s.da.send(ethFrame(BAD, A, 100, 0x2a));
      const got = await g.receiveAtLeast(1);
      assertEquals(got[0], ethFrame(BAD, A, 100, 0x2a), "a frame that fits still arrives");
    },
  },
  {
    item: 27,
    name: "a guest that keeps its TX ring full and kicks without pause",
    run: async (s) => {
      // No EVENT_IDX: then the switch interrupts the guest after every TX used-index
      // publish (§2.7.7), and the guest's call eventfd counts those publishes exactly,
      // however fast or busy the machine is.
      const g = await attacker(s, { features: NO_EVENT_IDX });
      const at = place(g, ethFrame(BAD, BAD, 46)); // to itself: switched, then dropped
      for (let i = 0; i < SIZE; i++) desc(g, i, at, 72);
      g.tx.interrupts(); // reset: count from here
      let publishes = 0;
      // The flood: the ring refilled and kicked without pause until the switch served
      // FLOOD frames and a and b exchanged FAIR frames meanwhile. If the attacker could
      // starve them, FAIR never comes (the wait bound is for a stuck switch, not speed).
      const pumpAtStart = s.pump.got;
      const flood0 = await s.delta("bad", "dropSameport");
      const deadline = Date.now() + 120_000;
      let head = 0, flooded = 0, next = 0;
      while (flooded < FLOOD || s.pump.got - pumpAtStart < FAIR) {
        if (Date.now() > deadline) {
          throw new Error(
            `Cannot finish the flood: ${flooded} attacker frames, ` +
              `${s.pump.got - pumpAtStart} between a and b in 120 s`,
          );
        }
        const room = SIZE - ((g.tx.availIdx - g.tx.usedIdx()) & 0xffff);
        for (let i = 0; i < room; i++) g.tx.pushRaw(head++ % SIZE);
        g.tx.notify();
        publishes += g.tx.interrupts();
        if (Date.now() >= next) {
          flooded = await s.delta("bad", "dropSameport") - flood0;
          next = Date.now() + 50;
        }
        await sleep(0);
      }
      await waitUntil("the flood to drain", () => g.tx.usedIdx() === g.tx.availIdx);
      flooded = await s.delta("bad", "dropSameport") - flood0;
      publishes += g.tx.interrupts();
      console.log(
        `  flood: ${flooded} frames from the attacker in ${publishes} publishes, ` +
          `${s.pump.got - pumpAtStart} between a and b`,
      );
      // At most BURST per round and one publish per round: publishes ≥ frames / BURST.
      assert(
        publishes * BURST >= flooded,
        `at most ${BURST} frames per publish: ${flooded} frames, ${publishes} publishes`,
      );
      // The budget itself, where speed cannot hide it: the whole ring made available with
      // one avail.idx store takes SIZE / BURST rounds, each its own publish and interrupt.
      // Without the budget one round takes the whole ring (checked by removing it: 1 each).
      const batches = 8;
      g.tx.interrupts();
      for (let b = 0; b < batches; b++) {
        const base = g.tx.availIdx;
        for (let i = 0; i < SIZE; i++) {
          g.mem.view.setUint16(g.tx.avail + 4 + 2 * ((base + i) % SIZE), i, true);
        }
        g.tx.setAvailIdx(base + SIZE);
        g.tx.notify();
        await waitUntil(`batch ${b} to drain`, () => g.tx.usedIdx() === g.tx.availIdx);
      }
      // The last interrupt is written just after the last used.idx store: wait for it.
      let rounds = 0;
      const want = batches * SIZE / BURST;
      await waitUntil(`${want} publishes`, () => (rounds += g.tx.interrupts()) >= want, 5000)
        .catch(() => {});
      assertEquals(
        rounds,
        want,
        `${batches} full rings: ${rounds} publishes, not ${SIZE / BURST} each`,
      );
    },
  },
  {
    item: 28,
    name: "descriptor addresses at or above 2^53 (high word checked before converting)",
    run: async (s) => {
      const g = await attacker(s);
      desc(g, D, 2 ** 53 + 0x1000, 72); // exactly representable, but not exact once added to
      g.mem.view.setUint32(g.tx.desc + 16 * (D + 1), 0x1000, true);
      g.mem.view.setUint32(g.tx.desc + 16 * (D + 1) + 4, 0xffffffff, true); // 2^64 - 2^32 + …
      g.mem.view.setUint32(g.tx.desc + 16 * (D + 1) + 8, 72, true);
      g.mem.view.setUint32(g.tx.desc + 16 * (D + 1) + 12, 0, true);
      post(g, D);
      post(g, D + 1);
      await dropped(s, "dropBadDescriptor", 2);
      await stillForwards(s, g, 0x2c);
    },
  },
  {
    item: 28,
    name: "rings and buffers more than 4 GiB into a region (offsets past 32 bits)",
    run: async (s) => {
      // Sparse 4.2 GiB memfd; everything the guest uses lies beyond 2^32 in it. Offsets
      // cut to 32 bits (`>>> 2`) would read and write the ring at offset mod 2^32.
      const g = await attacker(s, { memMiB: 4300, firstGpa: 2 ** 32 + 0x1000 });
      s.da.send(ethFrame(BAD, A, 1000, 0x2d));
      const got = await g.receiveAtLeast(1);
      assertEquals(got.at(-1), ethFrame(BAD, A, 1000, 0x2d), "received above 4 GiB");
      assertEquals(await s.delta("bad", "queueBroken"), 0);
    },
  },
  {
    item: 28,
    name: "a ring address beyond 2^53 in SET_VRING_ADDR",
    run: async (s) => {
      const g = await s.guest();
      const p = new Uint8Array(40);
      const v = new DataView(p.buffer);
      v.setUint32(0, 1, true);
      v.setBigUint64(8, 1n << 60n, true);
      g.conn.send(Req.SET_VRING_ADDR, p);
      await s.closedWith(g.conn, /address of ring 1: beyond 2\^53/);
    },
  },
];

// Used by item 24's frame check and kept honest here: BAD's bytes as the frames carry them.
assertEquals(macBytes(BAD)[5], 0x66);

hostileTest(
  "hostile rings, descriptors and headers (CHECKLIST 15-28): the attacker's port only",
  cases,
);
