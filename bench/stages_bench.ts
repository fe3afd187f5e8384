/**
 * Microbenchmarks per pipeline stage (issue 11, point 5), each on a burst
 * of 32 frames, in Deno.bench groups whose baseline is the whole: a full
 * engine round of 32 frames (bench/harness.ts's ForwardRig, A → B), so
 * every stage reads as a share of it. Plus what the worker pays per round
 * whatever the traffic (performance.now(), Atomics on the control block,
 * the command check, an idle engine round).
 *
 * Stages, through the public functions and classes the engine uses:
 * - ring: `available()` (one avail.idx load), pop (nextHead + walk) of
 *   chains with one descriptor (header and frame together, VERSION_1 /
 *   ANY_LAYOUT, what Linux sends) or two (header, then frame), and the TX
 *   return (32 × pushUsed + one publish);
 * - parse: parseFrame (virtio-net header and both MACs) for plain frames
 *   and for NEEDS_CSUM TCP frames (the offload path);
 * - classify: FDB learn + lookup of both MACs, with 2 and 1000 MACs known;
 * - copy: copySegments at 64 B and 1500 B (word loop vs the address window);
 * - deliver: Egress.deliver into a guest's RX ring (acquire RX chains,
 *   write the header, copy, commit), then one publish.
 *
 * `nice -n 10 deno bench -A bench/stages_bench.ts` (no lock needed: no
 * process is started, but figures move with the machine's load).
 *
 * @module
 */

import { Fdb } from "../src/switch/fdb.ts";
import { copySegments, SegList } from "../src/virtio/chain.ts";
import { updateWindow, win } from "../src/virtio/address_window.ts";
import { GuestMemory } from "../src/virtio/guest_memory.ts";
import { SplitRing } from "../src/virtio/split_ring.ts";
import { DpPort, PortKind } from "../src/switch/dp_port.ts";
import { Egress } from "../src/switch/egress.ts";
import { VhostNetQueuePair } from "../src/switch/drivers/vhost_net.ts";
import { type Frame, makeBurst } from "../src/switch/frame.ts";
import { PARSE_OK, parseFrame } from "../src/switch/ingress.ts";
import { createCounterBuffer } from "../src/switch/counters.ts";
import { OFFLOAD_CSUM } from "../src/net/offload.ts";
import { TestMemory } from "../tests/helpers/memfd_memory.ts";
import { buildPacket } from "../tests/net/packets.ts";
import { ForwardRig } from "./harness.ts";

const BURST = 32;
const SIZE = 256;
const HDR = 12;
const DESC = 0, AVAIL = 0x1000, USED = 0x2000, BUFS = 0x10000, BUF = 2048;
let sink = 0;

/** Guest memory with one split ring, driven from the driver's side. */
class TestRing {
  readonly tm: TestMemory;
  readonly mem: GuestMemory;
  readonly ring: SplitRing;
  #avail = 0;

  /**
   * `descs`: 1 (header + frame in one buffer) or 2 (header, then frame);
   * `writable`: an RX ring (device writes).
   */
  constructor(descs: 1 | 2, writable: boolean, frameLen: number, frame?: Uint8Array) {
    this.tm = new TestMemory(BUFS + SIZE * BUF * 2);
    this.mem = new GuestMemory(this.tm.regions());
    const f = writable ? 2 : 0;
    const v = this.tm.view;
    for (let i = 0; i < SIZE; i++) {
      const at = BUFS + i * BUF * 2;
      if (frame) this.tm.bytes.set(frame, at + HDR);
      if (descs === 1) {
        this.tm.desc(DESC, i, at, writable ? BUF : HDR + frameLen, f, 0);
        v.setUint16(AVAIL + 4 + 2 * i, i, true);
      } else if (i < SIZE / 2) {
        // Chain i: descriptor 2i holds the header, 2i+1 the frame (§2.7.5: NEXT).
        this.tm.desc(DESC, 2 * i, at, HDR, f | 1, 2 * i + 1);
        this.tm.desc(DESC, 2 * i + 1, at + HDR, writable ? BUF : frameLen, f, 0);
        v.setUint16(AVAIL + 4 + 2 * i, 2 * i, true);
        v.setUint16(AVAIL + 4 + 2 * (i + SIZE / 2), 2 * i, true);
      }
    }
    this.ring = new SplitRing({
      mem: this.mem,
      size: SIZE,
      desc: { region: 0, offset: DESC },
      avail: { region: 0, offset: AVAIL },
      used: { region: 0, offset: USED },
      indirect: false,
      eventIdx: false,
      maxReadable: HDR + 9018,
    });
  }

  /** The driver makes `n` more chains available (the ring entries stay as set up). */
  post(n: number): void {
    this.#avail = (this.#avail + n) & 0xffff;
    this.tm.view.setUint16(AVAIL + 2, this.#avail, true);
  }
}

/** A 64 B test frame: to 02:00:00:00:00:02 from 02:00:00:00:00:01. */
function frameBytes(len: number): Uint8Array {
  const frame = new Uint8Array(len);
  frame.set([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x88, 0xb5]);
  return frame;
}

// --- The whole: a full engine round, 32 frames A → B. ---------------------------------
const rigs = new Map<number, ForwardRig>();
for (const size of [64, 1500]) rigs.set(size, new ForwardRig(size));
const wholeRound = (size: number) =>
  Deno.bench({
    name: `engine round, 32 × ${size} B (pop … publish, both guests' work)`,
    group: `burst of 32 × ${size} B`,
    baseline: true,
    fn: () => {
      sink += rigs.get(size)!.step();
    },
  });

// --- ring: pop and return ---------------------------------------------------------------
for (const descs of [1, 2] as const) {
  const t = new TestRing(descs, false, 64, frameBytes(64));
  const segs = new SegList(8);
  Deno.bench({
    name: `ring: available + pop 32 chains of ${descs} descriptor${descs > 1 ? "s" : ""}`,
    group: "burst of 32 × 64 B",
    fn: () => {
      t.post(BURST);
      const n = t.ring.available();
      for (let k = 0; k < n; k++) {
        segs.reset();
        sink += t.ring.walk(t.ring.nextHead(), segs, false);
      }
    },
  });
}
{
  const t = new TestRing(1, false, 64, frameBytes(64));
  Deno.bench({
    name: "ring: 32 × pushUsed + 1 publish (TX buffers back)",
    group: "burst of 32 × 64 B",
    fn: () => {
      for (let k = 0; k < BURST; k++) t.ring.pushUsed(k, 0);
      sink += t.ring.publish() ? 1 : 0;
    },
  });
  Deno.bench({
    name: "ring: available() alone (one avail.idx Atomics.load)",
    group: "per round",
    fn: () => {
      sink += t.ring.available();
    },
  });
}

// --- parse --------------------------------------------------------------------------------
function parsedBurst(frame: Uint8Array, hdrFlags: number): { burst: Frame[]; t: TestRing } {
  const t = new TestRing(1, false, frame.length, frame);
  const burst = makeBurst(BURST);
  burst.forEach((f, k) => {
    const at = BUFS + k * BUF * 2;
    t.tm.bytes[at] = hdrFlags;
    if (hdrFlags !== 0) {
      // csum_start 34, csum_offset 16: a TCPv4 checksum (§5.1.6.2).
      t.tm.view.setUint16(at + 6, 34, true);
      t.tm.view.setUint16(at + 8, 16, true);
    }
    f.segs.reset();
    t.ring.walk(k, f.segs, false);
    f.pos = HDR;
    f.len = frame.length;
  });
  return { burst, t };
}
{
  const plain = parsedBurst(frameBytes(64), 0).burst;
  Deno.bench({
    name: "parse: 32 × parseFrame, plain (header flags 0, both MACs)",
    group: "burst of 32 × 64 B",
    fn: () => {
      for (let k = 0; k < BURST; k++) sink += parseFrame(plain[k], 0, 1514, false);
    },
  });
  const tcp = buildPacket({ ip: 4, payloadLen: 1500 - 54, csum: "partial" }).frame;
  const csum = parsedBurst(tcp, 1).burst;
  if (parseFrame(csum[0], OFFLOAD_CSUM, 1514, false) !== PARSE_OK) {
    throw new Error("Cannot benchmark: the NEEDS_CSUM frame does not parse");
  }
  Deno.bench({
    name: "parse: 32 × parseFrame, NEEDS_CSUM TCPv4 (headers captured, validated)",
    group: "burst of 32 × 1500 B",
    fn: () => {
      for (let k = 0; k < BURST; k++) sink += parseFrame(csum[k], OFFLOAD_CSUM, 1514, false);
    },
  });
}

// --- classify -----------------------------------------------------------------------------
for (const macs of [2, 1000]) {
  const fdb = new Fdb(8192, 300_000);
  for (let i = 0; i < macs; i++) fdb.learn(0x0200, i, i & 7, 0);
  Deno.bench({
    name: `classify: 32 × (learn src + lookup dst), ${macs} MACs known`,
    group: "burst of 32 × 64 B",
    fn: () => {
      for (let k = 0; k < BURST; k++) {
        const m = k % macs;
        fdb.learn(0x0200, m, m & 7, 1);
        sink += fdb.lookup(0x0200, (m + 1) % macs);
      }
    },
  });
}

// --- copy ---------------------------------------------------------------------------------
const copyMem = new TestMemory(1 << 22);
const cm = new GuestMemory(copyMem.regions());
for (const size of [64, 1500]) {
  const src = new SegList(1), dst = new SegList(1);
  let epoch = -1; // the window this bench filled its lists under
  Deno.bench({
    name: `copy: 32 × copySegments ${size} B`,
    group: `burst of 32 × ${size} B`,
    fn: () => {
      // Lists filled before the thread's last window rebuild (each rig and
      // bench here makes one) get no window: rebuild and refill first.
      if (epoch !== win.epoch) {
        updateWindow([{ address: copyMem.map.address, size: copyMem.size }]);
        epoch = win.epoch;
        src.reset();
        dst.reset();
        src.push(cm.u8[0], cm.u32[0], 0x100000 + HDR, size, cm.base[0] + 0x100000 + HDR);
        dst.push(cm.u8[0], cm.u32[0], 0x200000 + HDR, size, cm.base[0] + 0x200000 + HDR);
      }
      for (let k = 0; k < BURST; k++) sink += copySegments(dst, 0, src, 0, size);
    },
  });
}
// The floor under any copy in JS here: the bare 32-bit word loop copySegments
// runs for short frames, with no segment lists around it (README, "The floor
// of a JS copy on this machine").
for (const size of [64, 1500]) {
  const u32 = cm.u32[0];
  const words = size >>> 2;
  Deno.bench({
    name: `copy floor: 32 × a ${words}-word Uint32Array loop (${size} B)`,
    group: `burst of 32 × ${size} B`,
    fn: () => {
      for (let k = 0; k < BURST; k++) {
        let d = (0x200000 + HDR) >>> 2, s = (0x100000 + HDR) >>> 2;
        for (let i = 0; i < words; i++) u32[d++] = u32[s++];
        sink += d;
      }
    },
  });
}

// --- deliver: RX acquire + header + copy + commit, one publish -----------------------------
const counters = new Float64Array(createCounterBuffer());
for (const size of [64, 1500]) {
  const rx = new TestRing(1, true, size);
  const egress = new Egress(counters);
  const q = new DpPort(1, PortKind.VHOST, "b", 9018);
  q.mem = rx.mem;
  q.vq = new VhostNetQueuePair(q, counters, (_q, why) => {
    throw new Error(`Cannot benchmark: the RX port broke: ${why}`);
  });
  q.driver = q.vq;
  q.vq.setQueue(0, rx.ring, -1);
  q.vq.mergeable = true;
  const { burst, t: src } = parsedBurst(frameBytes(size), 0);
  let epoch = -1;
  Deno.bench({
    name: `deliver: 32 × Egress.deliver ${size} B into a guest RX ring + 1 publish`,
    group: `burst of 32 × ${size} B`,
    fn: () => {
      if (epoch !== win.epoch) {
        // As for copy: this bench's window, then frames walked under it.
        updateWindow([
          { address: rx.tm.map.address, size: rx.tm.size },
          { address: src.tm.map.address, size: src.tm.size },
        ]);
        epoch = win.epoch;
        burst.forEach((f, k) => {
          f.segs.reset();
          src.ring.walk(k, f.segs, false);
          parseFrame(f, 0, 9018, false);
        });
      }
      rx.post(BURST);
      for (let k = 0; k < BURST; k++) egress.deliver(q, burst[k], false);
      sink += rx.ring.publish() ? 1 : 0;
    },
  });
}
wholeRound(64);
wholeRound(1500);

// --- per round, whatever the traffic ---------------------------------------------------------
const control = new Int32Array(new SharedArrayBuffer(8));
const shared = new Float64Array(createCounterBuffer());
const handled = 0;
Deno.bench({
  name: "performance.now()",
  group: "per round",
  baseline: true,
  fn: () => {
    sink += performance.now();
  },
});
Deno.bench({
  name: "command check: Atomics.load(control, posted) !== handled",
  group: "per round",
  fn: () => {
    if (Atomics.load(control, 0) !== handled) sink++;
  },
});
Deno.bench({
  name: "Atomics.add(control, rounds, 1)",
  group: "per round",
  fn: () => {
    sink += Atomics.add(control, 1, 1);
  },
});
Deno.bench({
  name: "counter bump in the shared Float64Array (per frame, 4 per frame)",
  group: "per round",
  fn: () => {
    shared[3]++;
  },
});
{
  const idle = new ForwardRig(64);
  while (idle.round(0) > 0) { /* drain A's 256 chains: every later round finds nothing */ }
  Deno.bench({
    name: "engine round, idle (2 ports, nothing available)",
    group: "per round",
    fn: () => {
      sink += idle.round(0);
    },
  });
}

globalThis.addEventListener("unload", () => {
  if (sink === 0.5) console.log(sink);
});
