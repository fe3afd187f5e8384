/**
 * CHECKLIST items 1–14: hostile vhost-user messages. Each case sends what
 * a broken or malicious frontend would and asserts the specific outcome
 * (the connection closed with a reason naming the fault, or the request
 * refused and the connection kept); `Stage.runCase` adds that the good
 * guests kept exchanging frames meanwhile, the switch process stayed up,
 * and every fd and mapping the attacker sent was released.
 */
import { assert, assertEquals } from "@std/assert";
import { ftruncate, memfdCreate } from "../../ffi/memory.ts";
import { eventfdCreate, eventfdRead } from "../../ffi/eventfd.ts";
import { closeAll } from "../../ffi/io.ts";
import { ethFrame, F, PF, type RawFrontend, Req, u64, vringState } from "../helpers/frontend.ts";
import { A, BAD, type Case, hostileTest, sleep, WAIT_MS } from "./harness.ts";

/** A message with a hand-made header: any request, flags and declared size. */
function rawMsg(request: number, flags: number, size: number, payload: Uint8Array): Uint8Array {
  const b = new Uint8Array(12 + payload.length);
  const v = new DataView(b.buffer);
  v.setUint32(0, request, true);
  v.setUint32(4, flags, true);
  v.setUint32(8, size, true);
  b.set(payload, 12);
  return b;
}

type Region = [gpa: bigint, size: bigint, uva: bigint, offset: bigint];

/** A SET_MEM_TABLE payload; `count` may lie about the number of regions. */
function memTable(regions: Region[], count = regions.length): Uint8Array {
  const p = new Uint8Array(8 + 32 * regions.length);
  const v = new DataView(p.buffer);
  v.setUint32(0, count, true);
  regions.forEach((r, i) => r.forEach((x, j) => v.setBigUint64(8 + 32 * i + 8 * j, x, true)));
  return p;
}

/** Fresh memfds of `size` bytes, to attach to a message (sent, then closed here). */
function memfds(n: number, size = 1 << 20): number[] {
  return Array.from({ length: n }, () => {
    const fd = memfdCreate("hostile");
    ftruncate(fd, size);
    return fd;
  });
}

/** Sends with fds, then closes our copies: the switch must close its own. */
function sendWithFds(c: RawFrontend, code: number, payload: Uint8Array, fds: number[]): void {
  try {
    c.send(code, payload, fds);
  } finally {
    closeAll(fds);
  }
}

/** GET_FEATURES, SET_FEATURES and REPLY_ACK, as a frontend would start. */
async function negotiate(c: RawFrontend): Promise<void> {
  c.send(Req.GET_FEATURES);
  await c.reply();
  c.send(Req.SET_FEATURES, u64((1n << BigInt(F.VERSION_1)) | (1n << BigInt(F.PROTOCOL_FEATURES))));
  c.send(Req.SET_PROTOCOL_FEATURES, u64(1n << BigInt(PF.REPLY_ACK)));
}

/** Sends a request asking for an ack; returns the ack's status (0 = success). */
async function acked(c: RawFrontend, code: number, payload: Uint8Array): Promise<bigint> {
  c.send(code, payload, [], 1 | 8);
  const r = await c.reply();
  assertEquals(r.request, code);
  return new DataView(r.payload.buffer).getBigUint64(0, true);
}

const MiB = 1n << 20n;
const UVA = 0x7f00_0000_0000n;
const ONE: Region = [0n, MiB, UVA, 0n];

const cases: Case[] = [
  {
    item: 1,
    name: "a short header, then EOF",
    run: async (s) => {
      const c = s.raw();
      c.sendRaw(new Uint8Array([1, 0, 0, 0, 1]));
      await sleep(100);
      assert((await s.sp.stats()).bad.connected, "a partial header just waits for more");
      c.close();
      await s.sp.waitLog(/in the middle of a message/, s.logFrom);
    },
  },
  {
    item: 1,
    name: "a truncated payload, then EOF",
    run: async (s) => {
      const c = s.raw();
      c.sendRaw(rawMsg(Req.SET_FEATURES, 1, 8, new Uint8Array(4)));
      await sleep(50);
      c.close();
      await s.sp.waitLog(/in the middle of a message/, s.logFrom);
    },
  },
  {
    item: 2,
    name: "a payload size above 4096",
    run: async (s) => {
      const c = s.raw();
      c.sendRaw(rawMsg(Req.SET_MEM_TABLE, 1, 5000, new Uint8Array(0)));
      await s.closedWith(c, /payload of 5000 bytes \(limit 4096\)/);
    },
  },
  {
    item: 3,
    name: "an unknown request code",
    run: async (s) => {
      const c = s.raw();
      c.send(9999);
      await s.closedWith(c, /request 9999: unknown/);
    },
  },
  {
    item: 3,
    name: "version bits other than 1",
    run: async (s) => {
      const c = s.raw();
      c.send(Req.GET_FEATURES, undefined, [], 2);
      await s.closedWith(c, /version 2/);
    },
  },
  {
    item: 3,
    name: "the reply flag on a request",
    run: async (s) => {
      const c = s.raw();
      c.send(Req.GET_FEATURES, undefined, [], 1 | 4);
      await s.closedWith(c, /reply flag set on a request/);
    },
  },
  {
    item: 4,
    name: "fds attached to a request that takes none",
    run: async (s) => {
      const c = s.raw();
      const fds = [eventfdCreate(), eventfdCreate()];
      sendWithFds(c, Req.GET_FEATURES, new Uint8Array(0), fds);
      await s.closedWith(c, /2 unexpected fds/);
    },
  },
  {
    item: 4,
    name: "more fds than the control buffer holds (MSG_CTRUNC)",
    run: async (s) => {
      const c = s.raw();
      sendWithFds(c, Req.SET_MEM_TABLE, memTable([ONE]), memfds(12));
      await s.closedWith(c, /MSG_CTRUNC/);
    },
  },
  {
    item: 5,
    name: "SET_MEM_TABLE with 0 regions",
    run: async (s) => {
      const c = s.raw();
      c.send(Req.SET_MEM_TABLE, memTable([]));
      await s.closedWith(c, /0 regions \(1\.\.8\)/);
    },
  },
  {
    item: 5,
    name: "SET_MEM_TABLE with 9 regions",
    run: async (s) => {
      const c = s.raw();
      const regions = Array.from(
        { length: 9 },
        (_, i): Region => [BigInt(i) * MiB, MiB, UVA + BigInt(i) * MiB, 0n],
      );
      sendWithFds(c, Req.SET_MEM_TABLE, memTable(regions), memfds(8));
      await s.closedWith(c, /9 regions \(1\.\.8\)/);
    },
  },
  {
    item: 5,
    name: "SET_MEM_TABLE whose fd count differs from its region count",
    run: async (s) => {
      const c = s.raw();
      const two: Region[] = [ONE, [MiB, MiB, UVA + MiB, 0n]];
      sendWithFds(c, Req.SET_MEM_TABLE, memTable(two), memfds(1));
      await s.closedWith(c, /2 regions but 1 fds/);
    },
  },
  {
    item: 5,
    name: "SET_MEM_TABLE whose size does not match its region count",
    run: async (s) => {
      const c = s.raw();
      sendWithFds(c, Req.SET_MEM_TABLE, memTable([ONE], 2), memfds(2));
      await s.closedWith(c, /2 regions need 72 bytes, got 40/);
    },
  },
  {
    item: 6,
    name: "a region of size 0",
    run: async (s) => {
      const c = s.raw();
      sendWithFds(c, Req.SET_MEM_TABLE, memTable([[0n, 0n, UVA, 0n]]), memfds(1));
      await s.closedWith(c, /region 0: size 0/);
    },
  },
  {
    item: 6,
    name: "guest address + size that overflows 64 bits",
    run: async (s) => {
      const c = s.raw();
      const r: Region = [(1n << 64n) - 4096n, MiB, UVA, 0n];
      sendWithFds(c, Req.SET_MEM_TABLE, memTable([r]), memfds(1));
      await s.closedWith(c, /guestPhysAddr beyond 2\^53/);
    },
  },
  {
    item: 6,
    name: "user address + size past 2^53 (each below it)",
    run: async (s) => {
      const c = s.raw();
      const r: Region = [0n, MiB, (1n << 53n) - 4096n, 0n];
      sendWithFds(c, Req.SET_MEM_TABLE, memTable([r]), memfds(1));
      await s.closedWith(c, /address \+ size overflows/);
    },
  },
  {
    item: 6,
    name: "mmap offset that overflows 64 bits",
    run: async (s) => {
      const c = s.raw();
      const r: Region = [0n, MiB, UVA, (1n << 64n) - 4096n];
      sendWithFds(c, Req.SET_MEM_TABLE, memTable([r]), memfds(1));
      await s.closedWith(c, /mmapOffset beyond 2\^53/);
    },
  },
  {
    item: 7,
    name: "mmap offset + size beyond the end of the file",
    run: async (s) => {
      const c = s.raw();
      const r: Region = [0n, MiB, UVA, 4096n];
      sendWithFds(c, Req.SET_MEM_TABLE, memTable([r]), memfds(1, 1 << 20));
      await s.closedWith(c, /offset 4096 \+ size 1048576 beyond the file's 1048576 bytes/);
    },
  },
  {
    item: 8,
    name: "overlapping guest-physical ranges",
    run: async (s) => {
      const c = s.raw();
      const two: Region[] = [ONE, [MiB / 2n, MiB, UVA + 2n * MiB, 0n]];
      sendWithFds(c, Req.SET_MEM_TABLE, memTable(two), memfds(2));
      await s.closedWith(c, /regions 0 and 1: guest-physical ranges overlap/);
    },
  },
  {
    item: 8,
    name: "overlapping frontend-virtual ranges",
    run: async (s) => {
      const c = s.raw();
      const two: Region[] = [ONE, [2n * MiB, MiB, UVA + MiB / 2n, 0n]];
      sendWithFds(c, Req.SET_MEM_TABLE, memTable(two), memfds(2));
      await s.closedWith(c, /regions 0 and 1: frontend-virtual ranges overlap/);
    },
  },
  {
    item: 9,
    name: "a new SET_MEM_TABLE while traffic flows: rings re-translated, old regions unmapped",
    run: async (s) => {
      const g = await s.guest();
      g.fillRx(32);
      for (let i = 0; i < 20; i++) g.send(ethFrame(A, BAD, 46, i));
      await s.pump.extraAtA((f) => f[14] === 19);
      const ino = Deno.statSync(`/proc/self/fd/${g.mem.fd}`).ino!;
      const mapsBefore = s.sp.mapsOf(ino).length;
      // The same memory as two regions now; the frontend does not stop its rings first.
      const t = g.mem.table(2);
      await g.request(Req.SET_MEM_TABLE, t.payload, t.fds);
      for (let i = 100; i < 120; i++) g.send(ethFrame(A, BAD, 46, i));
      await s.pump.extraAtA((f) => f[14] === 119);
      assertEquals(await s.delta("bad", "rxPackets"), 40, "nothing lost across the switch");
      assertEquals(await s.delta("bad", "queueBroken"), 0);
      // One mapping per region of the new table, the old table's gone.
      assertEquals([mapsBefore, s.sp.mapsOf(ino).length], [1, 2], "old region unmapped");
    },
  },
  {
    item: 10,
    name: "a vring index out of range (SET_VRING_NUM ring 2)",
    run: async (s) => {
      const c = s.raw();
      c.send(Req.SET_VRING_NUM, vringState(2, 256));
      await s.closedWith(c, /ring 2 of 2/);
    },
  },
  {
    item: 10,
    name: "a vring index with high bits set (0x10000 would be ring 0 if cut to 16 bits)",
    run: async (s) => {
      const c = s.raw();
      c.send(Req.SET_VRING_BASE, vringState(0x10000, 0));
      await s.closedWith(c, /ring 65536 of 2/);
    },
  },
  {
    item: 10,
    name: "GET_VRING_BASE for ring 0xffffffff",
    run: async (s) => {
      const c = s.raw();
      c.send(Req.GET_VRING_BASE, vringState(0xffffffff, 0));
      await s.closedWith(c, /ring 4294967295 of 2/);
    },
  },
  {
    item: 10,
    name: "SET_VRING_ADDR for ring 7",
    run: async (s) => {
      const c = s.raw();
      const p = new Uint8Array(40);
      new DataView(p.buffer).setUint32(0, 7, true);
      c.send(Req.SET_VRING_ADDR, p);
      await s.closedWith(c, /address of ring 7/);
    },
  },
  {
    item: 10,
    name: "SET_VRING_KICK for ring 128, and with bits above the no-fd bit",
    run: async (s) => {
      const c = s.raw();
      c.send(Req.SET_VRING_KICK, u64(0x100 | 128));
      await s.closedWith(c, /SET_VRING_KICK for ring 128/);
      const d = s.raw();
      d.send(Req.SET_VRING_CALL, u64(0x200 | 0x100));
      await s.closedWith(d, /SET_VRING_CALL: payload 0x0300|SET_VRING_CALL: payload 0x300/);
    },
  },
  {
    item: 11,
    name: "ring sizes 0, 3 and 65536 refused, 300 times over without a leak",
    run: async (s) => {
      const c = s.raw();
      await negotiate(c);
      const fds = s.sp.fdCount();
      for (let i = 0; i < 300; i++) {
        for (const n of [0, 3, 65536]) {
          assert(await acked(c, Req.SET_VRING_NUM, vringState(0, n)) !== 0n, `size ${n}`);
        }
      }
      assertEquals(await acked(c, Req.SET_VRING_NUM, vringState(0, 256)), 0n, "256 is fine");
      assertEquals(s.sp.fdCount(), fds, "no fd per refused message");
      assert((await s.sp.stats()).bad.connected, "a refused size keeps the connection");
      await s.sp.waitLog(/ring 0 size 65536: must be a power of two/, s.logFrom);
    },
  },
  {
    item: 12,
    name: "ring addresses unmapped, past a region's end, or misaligned: the queue stays stopped",
    run: async (s) => {
      const bad = [
        (r: { desc: number; used: number; avail: number }) => ({ ...r, desc: 0x1000 }), // unmapped
        (r: { desc: number; used: number; avail: number }) => ({
          ...r,
          used: 0x7f00_0000_0000 + 64 * 1024 * 1024 - 100, // runs past the region's end
        }),
        (r: { desc: number; used: number; avail: number }) => ({ ...r, desc: r.desc + 8 }),
        (r: { desc: number; used: number; avail: number }) => ({ ...r, avail: r.avail + 1 }),
        (r: { desc: number; used: number; avail: number }) => ({ ...r, used: r.used + 2 }),
      ];
      for (const fix of bad) {
        const from = s.sp.logs.length;
        const g = await s.guest({ memMiB: 64, ringAddr: (i, r) => i === 1 ? fix(r) : r });
        g.send(ethFrame(A, BAD, 46, 0x77));
        await s.sp.waitLog(/Ring 1 stays stopped/, from);
        await sleep(100);
        assertEquals(g.tx.usedIdx(), 0, "nothing was taken from a ring that is not ready");
        g.close();
        const until = Date.now() + WAIT_MS; // the next guest needs the port free
        while (Date.now() < until && (await s.sp.stats()).bad.connected) await sleep(10);
      }
      assertEquals(await s.delta("bad", "rxPackets"), 0);
    },
  },
  {
    item: 13,
    name: "SET_VRING_KICK with the no-fd bit set and an fd attached",
    run: async (s) => {
      const c = s.raw();
      sendWithFds(c, Req.SET_VRING_KICK, u64(0x100 | 1), [eventfdCreate()]);
      await s.closedWith(c, /no-fd bit set with 1 fds/);
    },
  },
  {
    item: 13,
    name: "SET_VRING_CALL with the no-fd bit clear and no fd",
    run: async (s) => {
      const c = s.raw();
      c.send(Req.SET_VRING_CALL, u64(0));
      await s.closedWith(c, /no-fd bit clear with 0 fds/);
    },
  },
  {
    item: 13,
    name: "replacing the call fd 200 times closes each old one; the last one is used",
    run: async (s) => {
      const g = await s.guest();
      g.fillRx(32);
      const fds = s.sp.fdCount();
      let last = -1;
      for (let i = 0; i < 200; i++) {
        const fd = eventfdCreate();
        await g.request(Req.SET_VRING_CALL, u64(0), [fd]);
        if (i < 199) closeAll([fd]);
        else last = fd;
      }
      assertEquals(s.sp.fdCount(), fds, "old call fds closed");
      s.da.send(ethFrame(BAD, A, 46, 0x44)); // floods to bad (not learned yet)
      const got = await g.receiveAtLeast(1);
      assert(got.length >= 1);
      const until = Date.now() + WAIT_MS;
      while (Date.now() < until && eventfdRead(last) === 0) await sleep(10);
      closeAll([last]);
    },
  },
  {
    item: 14,
    name: "SET_FEATURES with a bit we did not offer (MQ)",
    run: async (s) => {
      const c = s.raw();
      c.send(Req.SET_FEATURES, u64((1n << 22n) | (1n << BigInt(F.VERSION_1))));
      await s.closedWith(c, /features 0x100400000: not offered/);
    },
  },
  {
    item: 14,
    name: "SET_PROTOCOL_FEATURES with BACKEND_REQ, which we did not offer",
    run: async (s) => {
      const c = s.raw();
      c.send(Req.SET_PROTOCOL_FEATURES, u64(1n << 5n));
      await s.closedWith(c, /protocol features 0x20: not offered/);
    },
  },
  {
    item: 14,
    name: "SET_LOG_BASE without LOG_SHMFD",
    run: async (s) => {
      const c = s.raw();
      c.send(6, new Uint8Array(16));
      await s.closedWith(c, /SET_LOG_BASE: LOG_SHMFD not negotiated/);
    },
  },
  {
    item: 14,
    name: "NET_SET_MTU without NET_MTU",
    run: async (s) => {
      const c = s.raw();
      c.send(Req.NET_SET_MTU, u64(1500));
      await s.closedWith(c, /NET_SET_MTU: NET_MTU not negotiated/);
    },
  },
];

hostileTest(
  "hostile vhost-user messages (CHECKLIST 1-14): the attacker's port only",
  cases,
);
