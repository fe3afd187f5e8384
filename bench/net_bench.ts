/**
 * Microbenchmarks of the network-headers layer (src/net): the Internet
 * checksum at 64 B / 1500 B / 64 KiB (beside a byte-at-a-time loop, the
 * reference), and software segmentation of a 64 KiB TSO frame into
 * 1448-byte segments with full and with partial checksums (beside a plain
 * 64 KiB copySegments, the floor: the payload has to be copied anyway).
 * `deno bench -A bench/net_bench.ts`.
 */
import { sumBytes, sumSegments } from "../src/net/checksum.ts";
import { captureHeaders, MAX_HEADER_BYTES, PacketInfo, parsePacket } from "../src/net/packet.ts";
import { OFFLOAD_CSUM, OFFLOAD_TSO4, validateOffload } from "../src/net/offload.ts";
import { completeChecksum, segmentCount, writeSegment } from "../src/net/segment.ts";
import { copySegments } from "../src/virtio/chain.ts";
import { NetHeader } from "../src/virtio/net_header.ts";
import { Arena, buildPacket, randomBytes } from "../tests/net/packets.ts";

const arena = new Arena(8 << 20);
let sink = 0;

for (const size of [64, 1500, 65536]) {
  const bytes = randomBytes(size, size);
  const list = arena.list([size], [0], bytes);
  const view = list.views[0], off = list.offs[0];
  Deno.bench({
    name: `checksum ${size} B (sumSegments)`,
    group: `checksum ${size} B`,
    fn: () => {
      sink += sumSegments(list, 0, size, 0);
    },
  });
  Deno.bench({
    name: `checksum ${size} B (byte pairs, reference)`,
    group: `checksum ${size} B`,
    baseline: true,
    fn: () => {
      sink += sumBytes(view, off, size);
    },
  });
}

// A 64 KiB TSO frame (IPv4, MSS 1448) after a 12-byte virtio-net header.
const b = buildPacket({ ip: 4, payloadLen: 65535 - 40, csum: "partial" });
const srcBytes = new Uint8Array(12 + b.frame.length);
srcBytes.set(b.frame, 12);
const src = arena.list([srcBytes.length], [0], srcBytes);
const h = new NetHeader();
Object.assign(h, {
  flags: 1,
  gsoType: 1,
  hdrLen: b.payloadOff,
  gsoSize: 1448,
  csumStart: b.l4,
  csumOffset: 16,
});
const hdr = new Uint8Array(MAX_HEADER_BYTES);
const info = new PacketInfo();
parsePacket(hdr, captureHeaders(src, 12, b.frame.length, hdr), b.frame.length, info);
if (validateOffload(h, info, b.frame.length, OFFLOAD_CSUM | OFFLOAD_TSO4) !== 0) {
  throw new Error("Cannot benchmark: the TSO frame does not validate");
}
const count = segmentCount(h, info, b.frame.length);
// Destination: one 2 KiB RX buffer per segment, frame after its 12-byte header.
const dsts = Array.from({ length: count }, () => arena.list([2048], [0]));
const copyDst = arena.list([srcBytes.length], [0]);

for (const full of [true, false]) {
  Deno.bench({
    name: `segment 64 KiB TSO → ${count} × 1448 B, ${full ? "full" : "partial"} checksum`,
    group: "segment 64 KiB",
    fn: () => {
      for (let k = 0; k < count; k++) {
        sink += writeSegment(h, info, hdr, src, 12, b.frame.length, k, dsts[k], 12, full);
      }
    },
  });
}
Deno.bench({
  name: "copy 64 KiB (copySegments, the floor)",
  group: "segment 64 KiB",
  baseline: true,
  fn: () => {
    sink += copySegments(copyDst, 0, src, 0, srcBytes.length);
  },
});

// Per-frame header work: capture + parse + validate, and checksum completion of 1500 B.
const frame1500 = buildPacket({ ip: 4, payloadLen: 1500 - 54, csum: "partial" });
const list1500 = arena.list([frame1500.frame.length], [0], frame1500.frame);
const h1500 = new NetHeader();
Object.assign(h1500, { flags: 1, csumStart: 34, csumOffset: 16 });
Deno.bench({
  name: "capture + parse + validate (1500 B TCPv4, NEEDS_CSUM)",
  group: "per frame",
  baseline: true,
  fn: () => {
    const n = captureHeaders(list1500, 0, 1500, hdr);
    sink += parsePacket(hdr, n, 1500, info);
    sink += validateOffload(h1500, info, 1500, OFFLOAD_CSUM);
  },
});
Deno.bench({
  name: "completeChecksum (1500 B TCPv4)",
  group: "per frame",
  fn: () => {
    sink += completeChecksum(list1500, 0, 1500, 34, 16) ? 1 : 0;
  },
});

globalThis.addEventListener("unload", () => {
  if (sink === 0.5) console.log(sink);
});
