/**
 * segment.ts: software segmentation and checksum completion against an
 * independent reference (tests/net/packets.ts), and against tshark's
 * checksum verification where tshark is installed.
 */
import { assert, assertEquals } from "@std/assert";
import { captureHeaders, MAX_HEADER_BYTES, PacketInfo, parsePacket } from "../../src/net/packet.ts";
import {
  OFFLOAD_CSUM,
  OFFLOAD_ECN,
  OFFLOAD_TSO4,
  OFFLOAD_TSO6,
  OFFLOAD_USO4,
  OFFLOAD_USO6,
  validateOffload,
} from "../../src/net/offload.ts";
import {
  completeChecksum,
  partialHeader,
  segmentCount,
  segmentFrameLen,
  segmentsFitMtu,
  writeSegment,
} from "../../src/net/segment.ts";
import { NetHeader } from "../../src/virtio/net_header.ts";
import { tsharkFields } from "../helpers/capture.ts";
import type { SegList } from "../../src/virtio/chain.ts";
import {
  Arena,
  buildPacket,
  type Built,
  cutsToLens,
  gather,
  ipv4ChecksumOk,
  l4ChecksumOk,
  type PacketSpec,
  prng,
  refSum,
} from "./packets.ts";

const ALL = OFFLOAD_CSUM | OFFLOAD_TSO4 | OFFLOAD_TSO6 | OFFLOAD_ECN | OFFLOAD_USO4 | OFFLOAD_USO6;
const arena = new Arena(16 << 20);

/** A GSO frame as a guest sends it: NEEDS_CSUM, pseudo-header sum in the field. */
function gsoFrame(spec: PacketSpec, mss: number): { b: Built; h: NetHeader } {
  const b = buildPacket({ ...spec, csum: "partial" });
  const tcp = (spec.l4 ?? "tcp") === "tcp";
  const h = new NetHeader();
  h.flags = 1;
  h.gsoType = tcp ? ((spec.ip ?? 4) === 4 ? 1 : 4) : 5;
  if (tcp && ((spec.tcpFlags ?? 0) & 0x80) !== 0) h.gsoType |= 0x80;
  h.hdrLen = b.payloadOff;
  h.gsoSize = mss;
  h.csumStart = b.l4;
  h.csumOffset = tcp ? 16 : 6;
  return { b, h };
}

interface Segmented {
  frames: Uint8Array[];
  info: PacketInfo;
}

/** Segments `b` (source split by `srcLens`) into per-segment dst lists split by `dstLens`. */
function segmentAll(
  b: Built,
  h: NetHeader,
  srcLens: number[],
  dstLens: (segLen: number) => number[],
  full: boolean,
): Segmented {
  arena.clear();
  // The frame sits after a 12-byte virtio-net header in the source chain.
  const srcBytes = new Uint8Array(12 + b.frame.length);
  srcBytes.set(b.frame, 12);
  const src = arena.list(cutsToLens(srcBytes.length, srcLens), [0, 3, 1, 2], srcBytes);
  const hdr = new Uint8Array(MAX_HEADER_BYTES);
  const info = new PacketInfo();
  const n = captureHeaders(src, 12, b.frame.length, hdr);
  assertEquals(parsePacket(hdr, n, b.frame.length, info), 0);
  assertEquals(validateOffload(h, info, b.frame.length, ALL), 0);
  const count = segmentCount(h, info, b.frame.length);
  const frames: Uint8Array[] = [];
  const dsts: SegList[] = [src];
  for (let k = 0; k < count; k++) {
    const segLen = segmentFrameLen(h, info, b.frame.length, k);
    const dst = arena.list(cutsToLens(12 + segLen, dstLens(12 + segLen)), [1, 0, 2, 3]);
    dsts.push(dst);
    const w = writeSegment(h, info, hdr, src, 12, b.frame.length, k, dst, 12, full);
    assertEquals(w, segLen);
    frames.push(gather(dst, 12, segLen));
  }
  assertEquals(segmentFrameLen(h, info, b.frame.length, count), 0);
  assert(arena.poisonIntact(dsts), "a write landed outside the destination segments");
  // The source is untouched.
  assertEquals(gather(src, 12, b.frame.length), b.frame);
  return { frames, info };
}

/** Checks every segment against the original frame with the reference code. */
function verify(b: Built, h: NetHeader, segs: Uint8Array[], full: boolean): void {
  const f = b.frame;
  const ip4 = f[b.l3] >> 4 === 4;
  const tcp = ip4 ? f[b.l3 + 9] === 6 : f[b.l3 + 6] === 6;
  const mss = h.gsoSize;
  const payloadLen = f.length - b.payloadOff;
  assertEquals(segs.length, Math.max(1, Math.ceil(payloadLen / mss)));
  const seq0 = new DataView(f.buffer).getUint32(b.l4 + 4);
  const id0 = new DataView(f.buffer).getUint16(b.l3 + 4);
  const joined = new Uint8Array(payloadLen);
  let at = 0;
  segs.forEach((s, k) => {
    const last = k === segs.length - 1;
    const dv = new DataView(s.buffer);
    const pay = s.length - b.payloadOff;
    assertEquals(pay, last ? payloadLen - k * mss : mss, `segment ${k} payload`);
    assertEquals(s.subarray(0, b.l3), f.subarray(0, b.l3), "L2 header");
    if (ip4) {
      assertEquals(dv.getUint16(b.l3 + 2), s.length - b.l3, "total length");
      assertEquals(dv.getUint16(b.l3 + 4), (id0 + k) & 0xffff, "IPv4 id");
      assert(ipv4ChecksumOk(s, b.l3), `segment ${k}: IPv4 header checksum`);
      for (const i of [0, 1, 6, 7, 8, 9]) assertEquals(s[b.l3 + i], f[b.l3 + i]);
      assertEquals(s.subarray(b.l3 + 12, b.l4), f.subarray(b.l3 + 12, b.l4), "addresses, options");
    } else {
      assertEquals(dv.getUint16(b.l3 + 4), s.length - b.l3 - 40, "payload length");
      assertEquals(s.subarray(b.l3 + 6, b.l4), f.subarray(b.l3 + 6, b.l4));
      assertEquals(s.subarray(b.l3, b.l3 + 4), f.subarray(b.l3, b.l3 + 4));
    }
    if (tcp) {
      assertEquals(dv.getUint32(b.l4 + 4), (seq0 + k * mss) % 2 ** 32, `segment ${k} seq`);
      let flags = f[b.l4 + 13];
      if (!last) flags &= ~0x09;
      if (k > 0) flags &= ~0x80;
      assertEquals(s[b.l4 + 13], flags, `segment ${k} flags`);
      assertEquals(s.subarray(b.l4, b.l4 + 4), f.subarray(b.l4, b.l4 + 4), "ports");
      assertEquals(s.subarray(b.l4 + 8, b.l4 + 13), f.subarray(b.l4 + 8, b.l4 + 13), "ack, doff");
      assertEquals(s.subarray(b.l4 + 14, b.l4 + 16), f.subarray(b.l4 + 14, b.l4 + 16), "window");
      assertEquals(
        s.subarray(b.l4 + 18, b.payloadOff),
        f.subarray(b.l4 + 18, b.payloadOff),
        "urg, options",
      );
    } else {
      assertEquals(dv.getUint16(b.l4 + 4), s.length - b.l4, "UDP length");
      assertEquals(s.subarray(b.l4, b.l4 + 4), f.subarray(b.l4, b.l4 + 4), "ports");
    }
    if (full) {
      assert(l4ChecksumOk(s, b.l3), `segment ${k}: L4 checksum`);
    } else {
      // The pseudo-header sum: completing it gives a valid checksum.
      const csumAt = b.l4 + (tcp ? 16 : 6);
      const l = arena.list([s.length], [1], s);
      assert(completeChecksum(l, 0, s.length, b.l4, csumAt - b.l4));
      assert(l4ChecksumOk(gather(l), b.l3), `segment ${k}: completed L4 checksum`);
    }
    joined.set(s.subarray(b.payloadOff), at);
    at += pay;
  });
  assertEquals(at, payloadLen);
  assertEquals(joined, b.payload, "payload bytes, concatenated");
}

const SPECS: [string, PacketSpec][] = [
  ["TCPv4", { ip: 4, l4: "tcp", tcpFlags: 0x99 }], // CWR PSH ACK FIN
  ["TCPv4 options", { ip: 4, l4: "tcp", ipOptions: 8, tcpOptions: 12, tcpFlags: 0x19 }],
  ["TCPv6 VLAN", { ip: 6, l4: "tcp", vlans: [0x8100], tcpFlags: 0x18 }],
  ["TCPv6 QinQ", { ip: 6, l4: "tcp", vlans: [0x88a8, 0x8100], tcpFlags: 0x91 }],
  ["UDPv4", { ip: 4, l4: "udp" }],
  ["UDPv6 VLAN", { ip: 6, l4: "udp", vlans: [0x8100] }],
];

Deno.test("segments of TCP/UDP over IPv4/IPv6 (VLAN, options) verify, full and partial checksum", () => {
  const r = prng(1234);
  for (const [name, spec] of SPECS) {
    for (
      const [payloadLen, mss] of [[5000, 1448], [4344, 1448], [1, 1448], [0, 1448], [3001, 7], [
        999,
        1000,
      ]]
    ) {
      if (spec.l4 === "udp" && Math.ceil(payloadLen / mss) > 128) continue;
      for (const full of [true, false]) {
        const { b, h } = gsoFrame(
          { ...spec, payloadLen, seq: 0xffffffff - 3000, seed: payloadLen },
          mss,
        );
        const total = 12 + b.frame.length;
        // Awkward source cuts: inside the virtio header, Ethernet header, L3/L4 headers, payload.
        const cuts = [5, 13, 12 + 15, 12 + b.l4 + 3, r() % total, r() % total, r() % total];
        const { frames } = segmentAll(b, h, cuts, (n) => [3, 12 + 17, r() % n, r() % n], full);
        try {
          verify(b, h, frames, full);
        } catch (e) {
          throw new Error(`${name}, ${payloadLen} B, MSS ${mss}, full ${full}`, { cause: e });
        }
      }
    }
  }
});

Deno.test("a 64 KiB TSO frame with MSS 1448 becomes 46 valid segments", () => {
  for (const ip of [4, 6] as const) {
    const payloadLen = ip === 4 ? 65535 - 40 : 65535 - 20;
    const { b, h } = gsoFrame({ ip, payloadLen, tcpFlags: 0x19 }, 1448);
    // Source in 4 KiB pages at odd phases; destination in 1 KiB mergeable buffers.
    const cuts: number[] = [];
    for (let i = 4093; i < 12 + b.frame.length; i += 4096) cuts.push(i);
    const { frames, info } = segmentAll(b, h, cuts, (n) => [1024, 2048].filter((c) => c < n), true);
    assertEquals(frames.length, Math.ceil(payloadLen / 1448));
    assertEquals(frames.length, 46);
    verify(b, h, frames, true);
    const mtu = 1448 + b.payloadOff - b.l3; // MSS + IP + TCP headers
    assert(segmentsFitMtu(h, info, mtu));
    assert(!segmentsFitMtu(h, info, mtu - 1));
  }
});

Deno.test("gso_size larger than the payload: one segment, flags kept", () => {
  const { b, h } = gsoFrame({ payloadLen: 100, tcpFlags: 0x99 }, 1448);
  const { frames } = segmentAll(b, h, [40], () => [], true);
  assertEquals(frames.length, 1);
  verify(b, h, frames, true);
  assertEquals(frames[0][b.l4 + 13], 0x99);
});

Deno.test("writeSegment refuses a destination that is too short, writing nothing", () => {
  const { b, h } = gsoFrame({ payloadLen: 3000 }, 1448);
  arena.clear();
  const src = arena.list([b.frame.length], [0], b.frame);
  const hdr = new Uint8Array(MAX_HEADER_BYTES);
  const info = new PacketInfo();
  parsePacket(hdr, captureHeaders(src, 0, b.frame.length, hdr), b.frame.length, info);
  const dst = arena.list([100, 1400], [1]);
  assertEquals(writeSegment(h, info, hdr, src, 0, b.frame.length, 0, dst, 0, true), 0);
  assertEquals(writeSegment(h, info, hdr, src, 0, b.frame.length, 3, dst, 0, true), 0);
  assertEquals(
    writeSegment(h, info, hdr, src, 1, b.frame.length, 0, arena.list([2000]), 0, true),
    0,
  );
  assert(arena.poisonIntact([src]), "nothing written");
});

Deno.test("completeChecksum: NEEDS_CSUM frames copied to split destinations verify", () => {
  const r = prng(77);
  for (const [, spec] of SPECS) {
    for (const payloadLen of [0, 1, 2, 3, 100, 1457]) {
      const b = buildPacket({ ...spec, payloadLen, csum: "partial", seed: payloadLen + 1 });
      arena.clear();
      const n = b.frame.length;
      const dst = arena.list(cutsToLens(n + 20, [1 + (r() % n), r() % n, 20 + b.l4 + 17]), [
        1,
        2,
        3,
      ]);
      const pos = 20;
      // Copy the frame in, as the dataplane would.
      for (let i = 0; i < n; i++) setAt(dst, pos + i, b.frame[i]);
      const tcp = spec.l4 === "tcp";
      assert(completeChecksum(dst, pos, n, b.l4, tcp ? 16 : 6));
      const out = gather(dst, pos, n);
      assert(l4ChecksumOk(out, b.l3), `${spec.ip} ${spec.l4} ${payloadLen}`);
      assert(arena.poisonIntact([dst]));
    }
  }
  // Out-of-frame requests write nothing.
  const b = buildPacket({ payloadLen: 10 });
  const dst = arena.list([b.frame.length], [0], b.frame);
  assert(!completeChecksum(dst, 0, b.frame.length, b.frame.length - 1, 0));
  assert(!completeChecksum(dst, 0, b.frame.length + 1, 34, 16));
  assertEquals(gather(dst), b.frame);
});

Deno.test("completeChecksum: a UDP checksum that comes out 0 is sent as 0xffff", () => {
  const b = buildPacket({ l4: "udp", payloadLen: 20, csum: "partial" });
  const f = b.frame;
  // Choose the last two payload bytes so that the complemented sum is 0.
  f[f.length - 2] = 0;
  f[f.length - 1] = 0;
  const s = refSum(f, b.l4, f.length);
  const x = 0xffff - s;
  f[f.length - 2] = x >> 8;
  f[f.length - 1] = x & 0xff;
  arena.clear();
  const dst = arena.list([f.length], [0], f);
  assert(completeChecksum(dst, 0, f.length, b.l4, 6));
  assertEquals([dst.byteAt(b.l4 + 6), dst.byteAt(b.l4 + 7)], [0xff, 0xff]);
  assert(l4ChecksumOk(gather(dst), b.l3));
});

Deno.test("partialHeader describes a segment written without the full checksum", () => {
  const { b, h } = gsoFrame({ ip: 6, l4: "udp", payloadLen: 3000 }, 1000);
  const { info } = segmentAll(b, h, [], () => [], false);
  const out = new NetHeader();
  partialHeader(info, out);
  assertEquals([out.flags, out.gsoType, out.csumStart, out.csumOffset, out.hdrLen], [
    1,
    0,
    b.l4,
    6,
    b.payloadOff,
  ]);
});

function setAt(l: SegList, pos: number, v: number): void {
  for (let i = 0; i < l.count; i++) {
    if (pos < l.lens[i]) {
      l.views[i][l.offs[i] + pos] = v;
      return;
    }
    pos -= l.lens[i];
  }
}

// ---------------------------------------------------------------------------
// tshark: an independent verifier of every checksum
// ---------------------------------------------------------------------------

function pcap(frames: Uint8Array[]): Uint8Array {
  const size = 24 + frames.reduce((n, f) => n + 16 + f.length, 0);
  const out = new Uint8Array(size);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, 0xa1b2c3d4, true);
  dv.setUint16(4, 2, true);
  dv.setUint16(6, 4, true);
  dv.setUint32(16, 262144, true);
  dv.setUint32(20, 1, true); // LINKTYPE_ETHERNET
  let o = 24;
  frames.forEach((f, i) => {
    dv.setUint32(o, 1_700_000_000 + i, true);
    dv.setUint32(o + 8, f.length, true);
    dv.setUint32(o + 12, f.length, true);
    out.set(f, o + 16);
    o += 16 + f.length;
  });
  return out;
}

async function haveTshark(): Promise<boolean> {
  try {
    const o = await new Deno.Command("tshark", {
      args: ["--version"],
      stdout: "null",
      stderr: "null",
    })
      .output();
    return o.success;
  } catch {
    return false;
  }
}

Deno.test("tshark finds every IPv4, TCP and UDP checksum of the segments good", async () => {
  if (!(await haveTshark())) {
    if (Deno.env.get("CI") === "true") {
      throw new Error("Cannot verify with tshark: not installed (CI)");
    }
    console.log("*** SKIPPED: tshark not installed (apt-get install tshark; CI installs it) ***");
    return;
  }
  const frames: Uint8Array[] = [];
  for (const [, spec] of SPECS) {
    for (const full of [true]) {
      const { b, h } = gsoFrame({ ...spec, payloadLen: 6000, seq: 0xfffff000 }, 1448);
      frames.push(...segmentAll(b, h, [37, 1001], () => [64, 999], full).frames);
    }
    // And a checksum completed in place.
    const b = buildPacket({ ...spec, payloadLen: 333, csum: "partial" });
    arena.clear();
    const dst = arena.list(cutsToLens(b.frame.length, [17, 61]), [1, 2], b.frame);
    completeChecksum(dst, 0, b.frame.length, b.l4, spec.l4 === "tcp" ? 16 : 6);
    frames.push(gather(dst));
  }
  const file = await Deno.makeTempFile({ suffix: ".pcap" });
  try {
    await Deno.writeFile(file, pcap(frames));
    const lines = (await tsharkFields(file, [
      "frame.number",
      "ip.checksum.status",
      "tcp.checksum.status",
      "udp.checksum.status",
      "_ws.expert.message",
    ], {
      prefs: ["ip.check_checksum:TRUE", "tcp.check_checksum:TRUE", "udp.check_checksum:TRUE"],
      separator: ",",
    })).map((r) => r.join(","));
    assertEquals(lines.length, frames.length);
    let l4Checked = 0;
    for (const line of lines) {
      const [n, ipS, tcpS, udpS] = line.split(",");
      // Wireshark's checksum status: 0 bad, 1 good, 2 unverified.
      if (ipS !== "") assertEquals(ipS, "1", `frame ${n}: IPv4 checksum: ${line}`);
      const l4 = tcpS !== "" ? tcpS : udpS;
      assertEquals(l4, "1", `frame ${n}: L4 checksum: ${line}`);
      l4Checked++;
    }
    assertEquals(l4Checked, frames.length);
    console.log(`tshark: ${frames.length} frames, every checksum good`);
  } finally {
    await Deno.remove(file);
  }
});
