/**
 * Microbenchmarks of the hot path: chain walk, FDB lookup, frame copies at
 * 64/1500/9000 B, and a full forward round against in-process rings.
 * `deno task bench`.
 */
import { Fdb } from "../src/switch/fdb.ts";
import { copySegments, SegList } from "../src/virtio/chain.ts";
import { updateWindow } from "../src/virtio/address_window.ts";
import { GuestMemory } from "../src/virtio/guest_memory.ts";
import { SplitRing } from "../src/virtio/split_ring.ts";
import { TestMemory } from "../tests/helpers/memfd_memory.ts";
import { ForwardRig } from "./harness.ts";

const fdb = new Fdb(8192, 300_000);
for (let i = 0; i < 1000; i++) fdb.learn(0x0200, i, i & 7, 0);
let sink = 0;
Deno.bench({
  name: "FDB lookup (1000 MACs)",
  group: "fdb",
  fn: () => {
    for (let i = 0; i < 1000; i++) sink += fdb.lookup(0x0200, i);
  },
});

const tm = new TestMemory(1 << 22);
const mem = new GuestMemory(tm.regions());
for (let i = 0; i < 4; i++) tm.desc(0, i, 0x10000 + i * 4096, 1500, i < 3 ? 1 : 0, i + 1);
const ring = new SplitRing({
  mem,
  size: 256,
  desc: { region: 0, offset: 0 },
  avail: { region: 0, offset: 0x1000 },
  used: { region: 0, offset: 0x2000 },
  base: 0,
  indirect: true,
  maxReadable: 9030,
  eventIdx: false,
});
const chain = new SegList(128);
Deno.bench({
  name: "chain walk (4 descriptors)",
  group: "ring",
  fn: () => {
    chain.reset();
    sink += ring.walk(0, chain, false);
  },
});

// A thread has one set of copy windows (address_window.ts), and every rig
// below builds its own: each copy benchmark rebuilds the window it copies
// through on its first call (warm-up runs absorb that call; rigs do the same
// by themselves).
let windowOwner = "";
function ownWindow(name: string, build: () => void): void {
  if (windowOwner === name) return;
  build();
  windowOwner = name;
}

for (const size of [64, 1500, 9000]) {
  const src = new SegList(1), dst = new SegList(1);
  Deno.bench({
    name: `copy ${size} B`,
    group: "copy",
    baseline: size === 64,
    fn: () => {
      ownWindow(`copy ${size}`, () => {
        updateWindow([{ address: mem.base[0], size: mem.size[0] }]);
        mem.range[0] = 0;
        src.reset();
        dst.reset();
        src.push(mem.u8[0], mem.u32[0], 0x100000 + 12, size, mem.base[0] + 0x100000 + 12);
        dst.push(mem.u8[0], mem.u32[0], 0x200000 + 12, size, mem.base[0] + 0x200000 + 12);
      });
      sink += copySegments(dst, 0, src, 0, size);
    },
  });
}

for (const size of [64, 1500]) {
  const rig = new ForwardRig(size);
  Deno.bench({
    name: `forward round, ${size} B frames (burst 32)`,
    group: "round",
    fn: () => {
      sink += rig.step();
    },
  });
}

globalThis.addEventListener("unload", () => console.log(sink > 0 ? "" : "unused"));
