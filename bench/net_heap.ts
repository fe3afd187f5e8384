/**
 * Runs the network-headers layer's per-frame functions many times and
 * reports the heap growth (as bench/heap.ts does for the engine): header
 * capture + parse + validation and checksum completion of a 1500 B
 * NEEDS_CSUM frame, and segmentation of a 64 KiB TSO frame (46 segments,
 * full and partial checksums). Run with large semi-spaces so no scavenge
 * hides garbage; tests/net/heap_test.ts does:
 * `deno run -A --v8-flags=--min-semi-space-size=128,--max-semi-space-size=128 bench/net_heap.ts`.
 * Prints one JSON line.
 */
import { captureHeaders, MAX_HEADER_BYTES, PacketInfo, parsePacket } from "../src/net/packet.ts";
import { OFFLOAD_CSUM, OFFLOAD_TSO4, validateOffload } from "../src/net/offload.ts";
import { completeChecksum, segmentCount, writeSegment } from "../src/net/segment.ts";
import { NetHeader } from "../src/virtio/net_header.ts";
import { Arena, buildPacket } from "../tests/net/packets.ts";

const SMALL = Number(Deno.args[0] ?? 1_000_000);
const TSO = Number(Deno.args[1] ?? 20_000);
const arena = new Arena(4 << 20);
const hdr = new Uint8Array(MAX_HEADER_BYTES);
const info = new PacketInfo();
const h = new NetHeader();

// 1500 B TCPv4 NEEDS_CSUM: read the header, capture, parse, validate, complete.
const f1 = buildPacket({ ip: 4, payloadLen: 1500 - 54, csum: "partial" }).frame;
const v1 = new Uint8Array(12 + f1.length);
v1[0] = 1;
v1[6] = 34;
v1[8] = 16;
v1.set(f1, 12);
const l1 = arena.list([7, v1.length - 7], [0, 1], v1);
// 64 KiB TSO frame and one destination buffer per segment.
const b = buildPacket({ ip: 4, payloadLen: 65535 - 40, csum: "partial" });
const v2 = new Uint8Array(12 + b.frame.length);
v2.set(b.frame, 12);
const l2 = arena.list([4096, 4096, v2.length - 8192], [0], v2);
const t = new NetHeader();
Object.assign(t, {
  flags: 1,
  gsoType: 1,
  hdrLen: b.payloadOff,
  gsoSize: 1448,
  csumStart: b.l4,
  csumOffset: 16,
});
const dst = arena.list([1024, 1024], [0]);

let sink = 0;
function small(): void {
  h.read(l1, 0, 12);
  const n = captureHeaders(l1, 12, f1.length, hdr);
  sink += parsePacket(hdr, n, f1.length, info);
  sink += validateOffload(h, info, f1.length, OFFLOAD_CSUM);
  sink += completeChecksum(l1, 12, f1.length, h.csumStart, h.csumOffset) ? 1 : 0;
}
function tso(full: boolean): void {
  const n = captureHeaders(l2, 12, b.frame.length, hdr);
  sink += parsePacket(hdr, n, b.frame.length, info);
  sink += validateOffload(t, info, b.frame.length, OFFLOAD_CSUM | OFFLOAD_TSO4);
  const count = segmentCount(t, info, b.frame.length);
  for (let k = 0; k < count; k++) {
    sink += writeSegment(t, info, hdr, l2, 12, b.frame.length, k, dst, 12, full);
  }
}

for (let i = 0; i < 20_000; i++) small(); // warm up (JIT)
for (let i = 0; i < 500; i++) tso(i & 1 ? true : false);
const before = Deno.memoryUsage().heapUsed;
const t0 = performance.now();
for (let i = 0; i < SMALL; i++) small();
for (let i = 0; i < TSO; i++) tso((i & 1) === 0);
const ms = performance.now() - t0;
const after = Deno.memoryUsage().heapUsed;
console.log(JSON.stringify({
  smallFrames: SMALL,
  tsoFrames: TSO,
  segments: TSO * segmentCount(t, info, b.frame.length),
  heapGrowthBytes: after - before,
  ms: Math.round(ms),
  sink: sink > 0,
}));
