/**
 * The switch against our TypeScript vhost-user frontend: every message,
 * both directions of traffic, split, indirect and mergeable buffers,
 * two-region memory tables, GET_VRING_BASE and reconnects.
 */
import { assert, assertEquals } from "@std/assert";
import { Switch } from "../../mod.ts";
import { ethFrame, F, PF, RawFrontend, Req, u64, VirtioNetDriver } from "../helpers/frontend.ts";
import { openFdCount } from "../helpers/env.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };
const A = "02:00:00:00:00:01", B = "02:00:00:00:00:02";

/** Waits (up to 20 s: a loaded machine, not a speed check) until port `name` has no frontend. */
async function disconnected(sw: Switch, name: string): Promise<void> {
  const until = Date.now() + 20_000;
  while (Date.now() < until && sw.port(name)!.connected) {
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function pair(dir: string, a = {}, b = {}) {
  const sw = await Switch.create();
  await sw.addVhostServer("a", `${dir}/a.sock`);
  await sw.addVhostServer("b", `${dir}/b.sock`);
  const da = await VirtioNetDriver.start(`${dir}/a.sock`, a);
  const db = await VirtioNetDriver.start(`${dir}/b.sock`, b);
  da.fillRx(64);
  db.fillRx(64);
  await new Promise((r) => setTimeout(r, 50));
  return { sw, da, db };
}

Deno.test({
  name: "negotiation: features, protocol features, queue count, acks",
  ...opts,
  async fn() {
    const dir = await Deno.makeTempDir();
    await using sw = await Switch.create();
    await sw.addVhostServer("a", `${dir}/a.sock`);
    const c = RawFrontend.connect(`${dir}/a.sock`);
    c.send(Req.GET_FEATURES);
    const f = new DataView((await c.reply()).payload.buffer).getBigUint64(0, true);
    for (
      const bit of [
        F.VERSION_1,
        F.PROTOCOL_FEATURES,
        F.INDIRECT_DESC,
        F.MRG_RXBUF,
        F.EVENT_IDX,
        F.MTU,
      ]
    ) {
      assert(f & (1n << BigInt(bit)), `feature ${bit} offered`);
    }
    // Every offload by default: CSUM, GUEST_CSUM, GUEST_TSO4/6, GUEST_ECN, HOST_TSO4/6,
    // HOST_ECN (bits 0, 1, 7, 8, 9, 11, 12, 13) and the USO trio (54, 55, 56).
    for (const bit of [0, 1, 7, 8, 9, 11, 12, 13, 54, 55, 56]) {
      assert(f & (1n << BigInt(bit)), `offload feature ${bit} offered`);
    }
    assertEquals(f & ((1n << 10n) | (1n << 14n)), 0n, "UFO (deprecated) not offered");
    assertEquals(f & (1n << 22n), 0n, "MQ feature not offered");
    c.send(Req.GET_PROTOCOL_FEATURES);
    const pf = new DataView((await c.reply()).payload.buffer).getBigUint64(0, true);
    assertEquals(
      pf,
      [
        PF.MQ,
        PF.LOG_SHMFD,
        PF.RARP,
        PF.REPLY_ACK,
        PF.NET_MTU,
        PF.RESET_DEVICE,
        PF.CONFIGURE_MEM_SLOTS,
        PF.STATUS,
      ].reduce((a, b) => a | (1n << BigInt(b)), 0n),
    );
    assertEquals(pf & (1n << BigInt(PF.INFLIGHT_SHMFD)), 0n, "no INFLIGHT_SHMFD (README)");
    assert(f & (1n << BigInt(F.LOG_ALL)), "VHOST_F_LOG_ALL offered (migration)");
    assert(f & (1n << BigInt(F.GUEST_ANNOUNCE)), "GUEST_ANNOUNCE offered");
    c.send(Req.SET_PROTOCOL_FEATURES, u64(pf));
    c.send(Req.GET_QUEUE_NUM);
    assertEquals(new DataView((await c.reply()).payload.buffer).getBigUint64(0, true), 1n);
    c.send(Req.SET_OWNER, undefined, [], 1 | 8);
    // Offloads are per port: none, or a chosen few (with their §5.1.3.1 dependencies).
    await sw.addVhostServer("none", `${dir}/none.sock`, { offloads: [] });
    await sw.addVhostServer("some", `${dir}/some.sock`, { offloads: ["tso4", "ecn"] });
    const offered = async (name: string) => {
      const r = RawFrontend.connect(`${dir}/${name}.sock`);
      r.send(Req.GET_FEATURES);
      const v = new DataView((await r.reply()).payload.buffer).getBigUint64(0, true);
      r.close();
      return v;
    };
    const offloadBits = (v: bigint) =>
      [0, 1, 7, 8, 9, 11, 12, 13, 54, 55, 56].filter((b) => (v & (1n << BigInt(b))) !== 0n);
    assertEquals(offloadBits(await offered("none")), [], "offloads: [] offers none");
    assertEquals(offloadBits(await offered("some")), [], "tso4 without csum offers nothing");
    await sw.addVhostServer("csum", `${dir}/csum.sock`, { offloads: ["csum", "tso4", "ecn"] });
    assertEquals(offloadBits(await offered("csum")), [0, 1, 7, 9, 11, 13]);
    const ack = await c.reply();
    assertEquals([
      ack.request,
      ack.flags & 4,
      new DataView(ack.payload.buffer).getBigUint64(0, true),
    ], [
      Req.SET_OWNER,
      4,
      0n,
    ]);
    c.send(Req.SET_FEATURES, u64(1n << 22n)); // MQ was not offered
    assert(await c.closedByPeer(), "features we did not offer close the connection");
    c.close();
  },
});

Deno.test({
  name: "traffic both ways: plain, split across descriptors, indirect; learning stops flooding",
  ...opts,
  async fn() {
    const dir = await Deno.makeTempDir();
    const { sw, da, db } = await pair(dir);
    try {
      da.send(ethFrame("ff:ff:ff:ff:ff:ff", A, 50)); // broadcast: learns A
      db.send(ethFrame(A, B, 100)); // unicast to A: learns B
      da.send(ethFrame(B, A, 300, 1), { split: [12, 5, 100] }); // header alone, frame in pieces
      da.send(ethFrame(B, A, 700, 2), { indirect: true });
      da.send(ethFrame(B, A, 64, 3), { split: [4, 20] }); // header split across descriptors
      const atB = await db.receiveAtLeast(4);
      const atA = await da.receiveAtLeast(1);
      assertEquals(atB.length, 4);
      assertEquals(atA.length, 1);
      assertEquals(atB[0].length, 64);
      assertEquals(atB[1], ethFrame(B, A, 300, 1));
      assertEquals(atB[2], ethFrame(B, A, 700, 2));
      assertEquals(atB[3], ethFrame(B, A, 64, 3));
      assertEquals(atA[0], ethFrame(A, B, 100));
      const fdb = await sw.fdb();
      assertEquals(fdb.find((e) => e.mac === A)?.portName, "a");
      assertEquals(fdb.find((e) => e.mac === B)?.portName, "b");
      const s = Object.fromEntries(sw.stats().map((x) => [x.name, x.counters]));
      assertEquals(s.a.rxPackets, 4);
      assertEquals(s.b.txPackets, 4);
      assert(db.rx.interrupts() > 0, "the receiver was interrupted");
    } finally {
      da.close();
      db.close();
      await sw.close();
    }
  },
});

Deno.test({
  name: "mergeable RX buffers carry a jumbo frame; without MRG_RXBUF it is dropped and counted",
  ...opts,
  async fn() {
    const dir = await Deno.makeTempDir();
    {
      const { sw, da, db } = await pair(dir, {}, { rxBufSize: 1024, regions: 2 });
      try {
        const big = ethFrame(B, A, 5000, 7);
        da.send(ethFrame("ff:ff:ff:ff:ff:ff", A, 46)); // B is unknown: the big frame floods
        da.send(big);
        const got = await db.receiveAtLeast(2);
        assertEquals(got[1], big, "5014-byte frame over 1024-byte mergeable buffers");
      } finally {
        da.close();
        db.close();
        await sw.close();
      }
    }
    {
      const { sw, da, db } = await pair(dir, {}, { rxBufSize: 1024, mrgRxbuf: false });
      try {
        da.send(ethFrame(B, A, 3000));
        da.send(ethFrame(B, A, 500));
        const got = await db.receiveAtLeast(1);
        assertEquals(got.length, 1);
        assertEquals(got[0].length, 514);
        const b = sw.stats().find((x) => x.name === "b")!.counters;
        assertEquals(b.dropNoBuffer, 1, "the frame that fits no single buffer is counted");
      } finally {
        da.close();
        db.close();
        await sw.close();
      }
    }
  },
});

Deno.test({
  name: "GET_VRING_BASE stops rings at their index; a frontend reconnects and traffic resumes",
  ...opts,
  async fn() {
    const dir = await Deno.makeTempDir();
    const { sw, da, db } = await pair(dir);
    const fdsBefore = openFdCount();
    try {
      for (let i = 0; i < 5; i++) da.send(ethFrame(B, A, 60));
      assertEquals((await db.receiveAtLeast(5)).length, 5);
      assertEquals(await da.stopRings(), [0, 5], "RX untouched, TX consumed five");
      da.close();
      await disconnected(sw, "a");
      assertEquals(sw.port("a")!.connected, false);
      const again = await VirtioNetDriver.start(`${dir}/a.sock`, { regions: 2 });
      again.fillRx(16);
      await new Promise((r) => setTimeout(r, 50));
      db.send(ethFrame(A, B, 80));
      again.send(ethFrame(B, A, 90));
      assertEquals((await again.receiveAtLeast(1))[0], ethFrame(A, B, 80));
      assertEquals((await db.receiveAtLeast(1))[0], ethFrame(B, A, 90));
      again.close();
      await disconnected(sw, "a");
      assert(openFdCount() <= fdsBefore, "the switch released the frontend's fds");
    } finally {
      db.close();
      await sw.close();
    }
  },
});
