/**
 * CHECKLIST item 39 at the unit level: what the deliver stage hands a TAP
 * with vnet headers (here one end of a socketpair standing in for the TAP
 * fd, so the test reads exactly what `writev` gave the kernel), and the
 * kernel's own header on the way in, checked like a guest's. The hostile
 * stage has no TAP; tests/e2e/offload_test.ts checks the host side of a
 * real TAP with tshark.
 */
import { assertEquals } from "@std/assert";
import { Egress } from "../../src/switch/egress.ts";
import { DpPort, PortKind } from "../../src/switch/dp_port.ts";
import { Frame } from "../../src/switch/frame.ts";
import { PARSE_OK, parseFrame } from "../../src/switch/ingress.ts";
import { C, COUNTERS_PER_PORT } from "../../src/switch/counters.ts";
import {
  OFFLOAD_CSUM,
  OFFLOAD_ECN,
  OFFLOAD_TSO4,
  OFFLOAD_TSO6,
  OFFLOAD_USO4,
  OFFLOAD_USO6,
} from "../../src/net/offload.ts";
import { TapQueue } from "../../src/switch/drivers/tap.ts";
import { closeAll, readFd } from "../../ffi/io.ts";
import { socketPair } from "../../ffi/socket.ts";
import { Arena, buildPacket, type Built } from "../net/packets.ts";
import {
  checkFrame,
  DATA_VALID,
  GSO_ECN,
  GSO_TCPV4,
  GSO_TCPV6,
  NEEDS_CSUM,
  vnet,
  type VnetHeader,
} from "../helpers/offload_rx.ts";

const ALL = OFFLOAD_CSUM | OFFLOAD_TSO4 | OFFLOAD_TSO6 | OFFLOAD_ECN | OFFLOAD_USO4 |
  OFFLOAD_USO6;

/** An Egress, and TAP ports (with their drivers) on socketpairs. */
function rig() {
  const counters = new Float64Array(4 * COUNTERS_PER_PORT);
  const egress = new Egress(counters);
  const fds: number[] = [];
  const drivers: TapQueue[] = [];
  const tap = (id: number, egressCaps: number) => {
    const [ours, kernel] = socketPair(true);
    fds.push(ours, kernel);
    const q = new DpPort(id, PortKind.TAP, `tap${id}`, 9018, ours);
    q.egressCaps = egressCaps;
    q.tap = new TapQueue(q, counters, ours);
    q.driver = q.tap;
    drivers.push(q.tap);
    return { q, kernel };
  };
  return {
    counters,
    egress,
    tap,
    close() {
      closeAll(fds);
      for (const d of drivers) d.close();
    },
  };
}

/** Reads one vnet header and a frame (its length from the IP header) from the "kernel" end. */
function readFrame(fd: number): { hdr: VnetHeader; frame: Uint8Array } {
  const readN = (n: number) => {
    const b = new Uint8Array(n);
    // Non-blocking: everything was written before this reads, so a short read is a
    // finding (a length field that disagrees with what the TAP got), not a wait.
    let got = 0;
    try {
      while (got < n) got += readFd(fd, b.subarray(got), n - got);
    } catch (e) {
      throw new Error(`Cannot read ${n} bytes from the TAP's side: only ${got}`, { cause: e });
    }
    return b;
  };
  const h = readN(12);
  const head = readN(20);
  const v = new DataView(head.buffer);
  const len = v.getUint16(12) === 0x86dd ? 54 + v.getUint16(18) : 14 + v.getUint16(16);
  const frame = new Uint8Array(len);
  frame.set(head);
  frame.set(readN(len - 20), 20);
  const hv = new DataView(h.buffer);
  return {
    hdr: {
      flags: h[0],
      gsoType: h[1],
      hdrLen: hv.getUint16(2, true),
      gsoSize: hv.getUint16(4, true),
      csumStart: hv.getUint16(6, true),
      csumOffset: hv.getUint16(8, true),
      numBuffers: hv.getUint16(10, true),
    },
    frame,
  };
}

/** A frame record over `header` + `b.frame` in arena memory, parsed as from a guest (or kernel). */
function frameOf(
  arena: Arena,
  b: Built,
  header: Partial<VnetHeader>,
  fromKernel = false,
): { f: Frame; at: number; verdict: number } {
  const bytes = new Uint8Array(12 + b.frame.length);
  bytes.set(vnet(header));
  bytes.set(b.frame, 12);
  const list = arena.list([bytes.length], [4], bytes);
  const f = new Frame();
  f.segs.reset();
  f.segs.push(list.views[0], list.words[0], list.offs[0], list.lens[0], list.addrs[0]);
  f.pos = 12;
  f.len = b.frame.length;
  return { f, at: list.offs[0] + 12, verdict: parseFrame(f, ALL, 9018, fromKernel) };
}

Deno.test("TAP egress: a passed GSO frame carries rebuilt header and validated L2–L4 bytes", () => {
  const r = rig();
  const arena = new Arena(1 << 20);
  try {
    const { q, kernel } = r.tap(1, ALL);
    const b = buildPacket({ payloadLen: 10000, csum: "partial" });
    const { f, at, verdict } = frameOf(arena, b, {
      flags: NEEDS_CSUM,
      gsoType: GSO_TCPV4 | GSO_ECN,
      hdrLen: b.frame.length, // a legal hint, but not what the kernel should act on
      gsoSize: 1448,
      csumStart: b.l4,
      csumOffset: 16,
    });
    assertEquals(verdict, PARSE_OK);
    // The guest rewrites its IP total length and TCP data offset after the check (item 40).
    arena.u8[at + b.l3 + 2] ^= 0x40;
    arena.u8[at + b.l4 + 12] = 0xf0;
    r.egress.deliver(q, f, false);
    const got = readFrame(kernel);
    assertEquals(got.hdr, {
      flags: NEEDS_CSUM,
      gsoType: GSO_TCPV4 | GSO_ECN,
      hdrLen: 54,
      gsoSize: 1448,
      csumStart: 34,
      csumOffset: 16,
      numBuffers: 0,
    });
    assertEquals(got.frame, b.frame, "the bytes that were validated, not the rewritten ones");
  } finally {
    r.close();
  }
});

Deno.test("TAP egress: checksum-only junk fields zeroed; GSO segmented for a TAP without TSO", () => {
  const r = rig();
  const arena = new Arena(1 << 20);
  try {
    const full = r.tap(1, ALL);
    const csumOnly = r.tap(2, OFFLOAD_CSUM);
    const b = buildPacket({ payloadLen: 300, csum: "partial" });
    const junk = { flags: NEEDS_CSUM, hdrLen: 9999, gsoSize: 777, csumStart: 34, csumOffset: 16 };
    r.egress.deliver(full.q, frameOf(arena, b, junk).f, false);
    const c = readFrame(full.kernel);
    assertEquals(c.hdr, { ...junk, gsoType: 0, hdrLen: 0, gsoSize: 0, numBuffers: 0 });
    assertEquals(checkFrame(c).problems, []);
    const t6 = buildPacket({ ip: 6, payloadLen: 4000, csum: "partial" });
    const g = frameOf(arena, t6, {
      flags: NEEDS_CSUM,
      gsoType: GSO_TCPV6,
      hdrLen: 74,
      gsoSize: 1400,
      csumStart: t6.l4,
      csumOffset: 16,
    });
    assertEquals(g.verdict, PARSE_OK);
    r.egress.deliver(csumOnly.q, g.f, false);
    for (let k = 0; k < 3; k++) {
      const s = readFrame(csumOnly.kernel);
      assertEquals(s.hdr.flags, NEEDS_CSUM);
      assertEquals(s.hdr.gsoType, 0);
      assertEquals(checkFrame(s).problems, [], `segment ${k}`);
    }
    assertEquals(r.counters[2 * COUNTERS_PER_PORT + C.swSegments], 3);
  } finally {
    r.close();
  }
});

Deno.test("TAP ingress: the kernel's header is checked like a guest's", () => {
  const arena = new Arena(1 << 20);
  const b = buildPacket({ payloadLen: 3000, csum: "partial" });
  const b6 = buildPacket({ ip: 6, payloadLen: 3000, csum: "partial" });
  const good = {
    flags: NEEDS_CSUM,
    gsoType: GSO_TCPV4,
    hdrLen: 54,
    gsoSize: 1448,
    csumStart: 34,
    csumOffset: 16,
  };
  // DATA_VALID is the kernel's to send (§5.1.6.4): taken, and not an offload request.
  const dv = frameOf(arena, b, { flags: DATA_VALID }, true);
  assertEquals(dv.verdict, PARSE_OK);
  assertEquals(dv.f.dataValid, true);
  assertEquals(frameOf(arena, b, good, true).verdict, PARSE_OK);
  assertEquals(frameOf(arena, b, { ...good, gsoType: 0x7f }, true).verdict, C.dropOffloadType);
  assertEquals(frameOf(arena, b, { ...good, gsoSize: 0 }, true).verdict, C.dropOffloadSize);
  assertEquals(frameOf(arena, b, { ...good, hdrLen: 40 }, true).verdict, C.dropOffloadHdrLen);
  assertEquals(frameOf(arena, b, { ...good, csumStart: 10 }, true).verdict, C.dropOffloadCsum);
  assertEquals(frameOf(arena, b6, good, true).verdict, C.dropOffloadPacket);
});
