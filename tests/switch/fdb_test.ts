import { assertEquals } from "@std/assert";
import { Fdb, macString } from "../../src/switch/fdb.ts";

Deno.test("FDB learns, looks up, relearns a moved MAC and ages out", () => {
  const fdb = new Fdb(64, 1000);
  assertEquals(fdb.lookup(0x0200, 0x1), -1);
  assertEquals(fdb.learn(0x0200, 0x1, 3, 0), -1);
  assertEquals(fdb.lookup(0x0200, 0x1), 3);
  assertEquals(fdb.learn(0x0200, 0x1, 5, 10), 3, "moved: reports the old port");
  assertEquals(fdb.lookup(0x0200, 0x1), 5);
  fdb.learn(0x0200, 0x2, 1, 500);
  assertEquals(fdb.age(1200), 1, "the entry last seen at 10 ms aged out");
  assertEquals(fdb.lookup(0x0200, 0x1), -1);
  assertEquals(fdb.lookup(0x0200, 0x2), 1);
  assertEquals(fdb.entries(1200)[0].mac, "02:00:00:00:00:02");
});

Deno.test("FDB stays consistent under random learn/remove against a Map", () => {
  let seed = 12345;
  const rnd = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0);
  const fdb = new Fdb(256, 1e12);
  const model = new Map<string, number>();
  for (let step = 0; step < 20000; step++) {
    const hi = rnd() & 3, lo = rnd() & 255, port = rnd() & 7;
    if ((rnd() & 15) === 0) {
      fdb.removePort(port);
      for (const [k, v] of model) if (v === port) model.delete(k);
    } else if (model.size < 190 || model.has(`${hi}:${lo}`)) {
      fdb.learn(hi, lo, port, step);
      model.set(`${hi}:${lo}`, port);
    }
    if (step % 1000 === 0) {
      for (let h = 0; h < 4; h++) {
        for (let l = 0; l < 256; l++) assertEquals(fdb.lookup(h, l), model.get(`${h}:${l}`) ?? -1);
      }
    }
  }
  assertEquals(fdb.size, model.size);
});

Deno.test("FDB refuses to learn beyond 3/4 of its capacity and counts it", () => {
  const fdb = new Fdb(16, 1000);
  for (let i = 0; i < 20; i++) fdb.learn(0, i, 1, 0);
  assertEquals(fdb.size, 12);
  assertEquals(fdb.full, 8);
  assertEquals(macString(0xaabb, 0xccddeeff), "aa:bb:cc:dd:ee:ff");
});
