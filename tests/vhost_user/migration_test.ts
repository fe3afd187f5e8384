/**
 * Live migration's part of the protocol, against our TypeScript frontend:
 * the dirty-page log read bit by bit (every page the switch wrote is
 * marked, no other), logging switched off again, a clean stop
 * (GET_VRING_BASE exact, and nothing written or signalled after it while
 * traffic keeps coming), SEND_RARP moving a MAC in the FDB at once, memory
 * added and removed with ADD_MEM_REG / REM_MEM_REG while traffic flows,
 * and SET_STATUS / RESET_DEVICE.
 */
import { assert, assertEquals } from "@std/assert";
import { Switch } from "../../mod.ts";
import { ftruncate, type Mapping, memfdCreate, mmap, munmap } from "../../ffi/memory.ts";
import { closeAll } from "../../ffi/io.ts";
import {
  type DriverOptions,
  ethFrame,
  PF,
  Req,
  u64,
  UVA_BASE,
  VirtioNetDriver,
} from "../helpers/frontend.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };
const A = "02:00:00:00:00:01", B = "02:00:00:00:00:02";
const PAGE = 4096;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const bitOf = (n: number) => 1n << BigInt(n);

async function pair(dir: string, b: DriverOptions = {}) {
  const sw = await Switch.create();
  await sw.addVhostServer("a", `${dir}/a.sock`);
  await sw.addVhostServer("b", `${dir}/b.sock`);
  const da = await VirtioNetDriver.start(`${dir}/a.sock`);
  const db = await VirtioNetDriver.start(`${dir}/b.sock`, b);
  da.fillRx(64);
  db.fillRx(64);
  await sleep(50);
  const close = async () => {
    da.close();
    db.close();
    await sw.close();
  };
  return { sw, da, db, close };
}

/** A dirty log as QEMU makes one: a memfd, mapped here too so the test reads the bits. */
class TestLog {
  readonly fd = memfdCreate("test-dirty-log");
  readonly map: Mapping;
  readonly bits: Uint8Array;
  constructor(readonly size: number) {
    ftruncate(this.fd, size);
    this.map = mmap(this.fd, size);
    this.bits = new Uint8Array(this.map.buffer);
  }
  /** The marked pages. */
  pages(): Set<number> {
    const out = new Set<number>();
    this.bits.forEach((b, i) => {
      for (let k = 0; k < 8; k++) if (b & (1 << k)) out.add(i * 8 + k);
    });
    return out;
  }
  close(): void {
    munmap(this.map);
    closeAll([this.fd]);
  }
}

function pagesOf(gpa: number, len: number): number[] {
  const out = [];
  for (let p = Math.floor(gpa / PAGE); p <= Math.floor((gpa + len - 1) / PAGE); p++) out.push(p);
  return out;
}

Deno.test({
  name: "dirty log: every page the switch wrote is marked, no other; off means off",
  ...opts,
  async fn() {
    const dir = await Deno.makeTempDir();
    // 8 KiB RX buffers: a short frame writes one page of its buffer and leaves the next alone.
    const { da, db, close } = await pair(dir, {
      protocol: bitOf(PF.LOG_SHMFD),
      rxBufSize: 2 * PAGE,
      memMiB: 16,
    });
    const log = new TestLog(PAGE);
    try {
      assert(db.protocol & bitOf(PF.LOG_SHMFD), "LOG_SHMFD negotiated");
      // QEMU's order: the log, then LOG_ALL, then each ring with VHOST_VRING_F_LOG.
      await db.setLogBase(log.fd, (16 << 20) / PAGE / 8);
      await db.setLogAll(true);
      await db.setVringAddr(0, true);
      await db.setVringAddr(1, true);
      log.bits.fill(0);
      const sizes = [60, 100, 5000, 60, 3000, 1400, 60, 7000];
      for (const [i, n] of sizes.entries()) da.send(ethFrame(B, A, n, i));
      const got = await db.receiveAtLeast(sizes.length);
      assertEquals(got.map((f) => f.length), sizes.map((n) => n + 14));
      await sleep(20);
      const marked = log.pages();
      const written = new Set(db.rxWrites.flatMap((w) => pagesOf(w.gpa, w.len)));
      const usedRing = (q: { used: number; size: number }) => pagesOf(q.used, 6 + 8 * q.size);
      const allowed = new Set([...written, ...usedRing(db.rx), ...usedRing(db.tx)]);
      for (const p of written) assert(marked.has(p), `written page ${p} is marked`);
      assert(marked.has(Math.floor((db.rx.used + 2) / PAGE)), "the RX used index page is marked");
      for (const p of marked) assert(allowed.has(p), `page ${p} is marked but was not written`);
      // The second pages of the buffers that took short frames stayed unmarked.
      const untouched = db.rxWrites.filter((w) => w.len + (w.gpa % PAGE) < PAGE)
        .map((w) => Math.floor(w.gpa / PAGE) + 1).filter((p) => !allowed.has(p));
      assert(untouched.length > 0 && untouched.every((p) => !marked.has(p)));

      // Logging off (QEMU: SET_FEATURES without LOG_ALL): nothing is marked any more.
      await db.setLogAll(false);
      await db.setVringAddr(0, false);
      await db.setVringAddr(1, false);
      log.bits.fill(0);
      for (let i = 0; i < 4; i++) da.send(ethFrame(B, A, 200, i));
      assertEquals((await db.receiveAtLeast(4)).length, 4);
      await sleep(20);
      assertEquals(log.pages().size, 0, "no marks with logging off");
    } finally {
      log.close();
      await close();
    }
  },
});

Deno.test({
  name: "stopping cleanly: GET_VRING_BASE is exact, and nothing is written or signalled after it",
  ...opts,
  async fn() {
    const dir = await Deno.makeTempDir();
    const { sw, da, db, close } = await pair(dir);
    try {
      // Traffic towards b keeps flowing while b stops its rings.
      let sending = true;
      let sent = 0;
      const pump = (async () => {
        while (sending) {
          da.send(ethFrame(B, A, 300, sent++));
          if (sent % 8 === 0) da.tx.takeUsed();
          await sleep(1);
        }
      })();
      await db.receiveAtLeast(20);
      const [rxBase, txBase] = await db.stopRings();
      assertEquals(rxBase, db.rx.usedIdx(), "every RX buffer taken was returned used");
      assertEquals(txBase, db.tx.usedIdx());
      db.rx.interrupts(); // drain
      const snapshot = db.mem.bytes.slice();
      const dropsBefore = sw.stats().find((s) => s.name === "b")!.counters.dropNoBuffer;
      await sleep(300);
      sending = false;
      await pump;
      const after = sw.stats().find((s) => s.name === "b")!.counters;
      assert(after.dropNoBuffer > dropsBefore + 20, "frames for b kept coming (and were dropped)");
      assertEquals(db.rx.interrupts(), 0, "no interrupt after the stop");
      let diff = -1;
      for (let i = 0; i < snapshot.length && diff < 0; i++) {
        if (snapshot[i] !== db.mem.bytes[i]) diff = i;
      }
      assertEquals(diff, -1, "not one byte of b's memory changed after the stop");
    } finally {
      await close();
    }
  },
});

Deno.test({
  name: "SEND_RARP: the MAC moves to the announcing port at once and the RARP floods",
  ...opts,
  async fn() {
    const dir = await Deno.makeTempDir();
    const { sw, da, db, close } = await pair(dir, { protocol: bitOf(PF.RARP) });
    try {
      db.send(ethFrame("ff:ff:ff:ff:ff:ff", B, 46));
      await da.receiveAtLeast(1);
      da.send(ethFrame("ff:ff:ff:ff:ff:ff", A, 46));
      await db.receiveAtLeast(1);
      assertEquals((await sw.fdb()).find((e) => e.mac === A)?.portName, "a");
      // A's MAC "migrated" to b's port: b's frontend asks for the RARP.
      const mac = new Uint8Array(8);
      mac.set(A.split(":").map((h) => parseInt(h, 16)));
      await db.request(Req.SEND_RARP, mac);
      assertEquals((await sw.fdb()).find((e) => e.mac === A)?.portName, "b", "moved at once");
      const [rarp] = await da.receiveAtLeast(1);
      assertEquals(rarp.length, 60);
      assertEquals([rarp[12], rarp[13], rarp[21]], [0x80, 0x35, 3], "a RARP request");
      assertEquals([...rarp.subarray(6, 12)], [...mac.subarray(0, 6)]);
      // Unicast to A now goes to b.
      da.send(ethFrame(A, B, 100, 9));
      assertEquals((await db.receiveAtLeast(1))[0], ethFrame(A, B, 100, 9));
    } finally {
      await close();
    }
  },
});

/** One ADD_MEM_REG / REM_MEM_REG payload. */
function memReg(gpa: number, size: number, uva: number, offset: number): Uint8Array {
  const p = new Uint8Array(40);
  const v = new DataView(p.buffer);
  [gpa, size, uva, offset].forEach((x, i) => v.setBigUint64(8 + 8 * i, BigInt(x), true));
  return p;
}

Deno.test({
  name:
    "memory hotplug: regions added and removed with ADD_MEM_REG / REM_MEM_REG while traffic flows",
  ...opts,
  async fn() {
    const dir = await Deno.makeTempDir();
    const { da, db, close } = await pair(dir, {
      protocol: bitOf(PF.CONFIGURE_MEM_SLOTS),
      addMemReg: true,
      regions: 2,
    });
    const extra = memfdCreate("hotplug");
    try {
      assert(db.protocol & bitOf(PF.CONFIGURE_MEM_SLOTS));
      db.conn.send(Req.GET_MAX_MEM_SLOTS);
      const slots = new DataView((await db.conn.reply()).payload.buffer).getBigUint64(0, true);
      assertEquals(slots, 32n);
      // b sends while its table changes: its TX ring waits in its memory, nothing is lost.
      let sending = true;
      let sent = 0;
      const pump = (async () => {
        while (sending) {
          if (sent - da.rxWrites.length < 32) db.send(ethFrame(A, B, 200, sent++));
          db.tx.takeUsed();
          da.receive();
          await sleep(1);
        }
      })();
      // Hot-add 8 MiB at guest 1 GiB, remove it, add it again: rings stop and restart each time.
      const size = 8 << 20, gpa = 1 << 30;
      ftruncate(extra, size);
      for (let i = 0; i < 5; i++) {
        await db.request(Req.ADD_MEM_REG, memReg(gpa, size, UVA_BASE + gpa, 0), [extra]);
        await sleep(20);
        await db.request(Req.REM_MEM_REG, memReg(gpa, size, UVA_BASE + gpa, 0));
        await sleep(20);
      }
      sending = false;
      await pump;
      const deadline = Date.now() + 3000;
      while (da.rxWrites.length < sent && Date.now() < deadline) {
        da.receive();
        await sleep(5);
      }
      assert(sent > 50, `b kept sending (${sent})`);
      assertEquals(da.rxWrites.length, sent, "every frame arrived across ten table changes");
      // An unknown region is refused and the connection stays.
      await db.request(Req.REM_MEM_REG, memReg(gpa, size, UVA_BASE + gpa, 0)).then(
        () => assert(false, "removing an unknown region must be refused"),
        () => {},
      );
      da.send(ethFrame(B, A, 80, 1));
      assertEquals((await db.receiveAtLeast(1))[0], ethFrame(B, A, 80, 1));
    } finally {
      closeAll([extra]);
      await close();
    }
  },
});

Deno.test({
  name:
    "SET_STATUS: rings wait for DRIVER_OK, status 0 stops them with the base kept; RESET_DEVICE",
  ...opts,
  async fn() {
    const dir = await Deno.makeTempDir();
    const { da, db, close } = await pair(dir, {
      protocol: bitOf(PF.STATUS) | bitOf(PF.RESET_DEVICE),
    });
    try {
      da.send(ethFrame(B, A, 100, 1));
      await sleep(100);
      assertEquals(db.receive().length, 0, "no DRIVER_OK yet: b's rings do not run");
      await db.request(Req.SET_STATUS, u64(1 | 2 | 8 | 4)); // ACK, DRIVER, FEATURES_OK, DRIVER_OK
      da.send(ethFrame(B, A, 100, 2));
      assertEquals((await db.receiveAtLeast(1))[0], ethFrame(B, A, 100, 2));
      db.conn.send(Req.GET_STATUS);
      assertEquals(new DataView((await db.conn.reply()).payload.buffer).getBigUint64(0, true), 15n);
      // QEMU stopping a device: SET_STATUS 0 first, GET_VRING_BASE after.
      await db.request(Req.SET_STATUS, u64(0));
      da.send(ethFrame(B, A, 100, 3));
      await sleep(100);
      const [rxBase] = await db.stopRings();
      assertEquals(rxBase, db.rx.usedIdx(), "the base survives SET_STATUS 0");
      assertEquals(rxBase, 1, "one frame was delivered before the stop");
      // RESET_DEVICE: the device forgets everything but stays owned (its ack still comes).
      await db.request(Req.RESET_DEVICE);
      assertEquals(db.receive().length, 0);
    } finally {
      await close();
    }
  },
});
