/**
 * packet.ts and offload.ts against built packets: the fields of TCP/UDP
 * over IPv4/IPv6 with 0–2 VLAN tags, and one case per refusal (CHECKLIST
 * items 34–37).
 */
import { assert, assertEquals } from "@std/assert";
import {
  captureHeaders,
  MAX_HEADER_BYTES,
  PACKET_ERROR_NAMES,
  PacketError,
  PacketInfo,
  parsePacket,
} from "../../src/net/packet.ts";
import {
  EgressAction,
  egressAction,
  OFFLOAD_CSUM,
  OFFLOAD_ECN,
  OFFLOAD_ERROR_NAMES,
  OFFLOAD_TSO4,
  OFFLOAD_TSO6,
  OFFLOAD_USO4,
  OFFLOAD_USO6,
  OffloadError,
  passHeader,
  validateOffload,
} from "../../src/net/offload.ts";
import { NetHeader } from "../../src/virtio/net_header.ts";
import { Arena, buildPacket, type PacketSpec } from "./packets.ts";

const arena = new Arena(1 << 20);
const info = new PacketInfo();
const hdr = new Uint8Array(MAX_HEADER_BYTES);

function parse(frame: Uint8Array, lens?: number[]): number {
  arena.clear();
  const l = arena.list(lens ?? [frame.length], [1, 2, 3], frame);
  const n = captureHeaders(l, 0, frame.length, hdr);
  assertEquals(n, Math.min(frame.length, MAX_HEADER_BYTES));
  return parsePacket(hdr, n, frame.length, info);
}

Deno.test("parse: TCP/UDP over IPv4/IPv6 with 0, 1 and 2 VLAN tags", () => {
  for (const ip of [4, 6] as const) {
    for (const l4 of ["tcp", "udp"] as const) {
      for (const vlans of [[], [0x8100], [0x88a8, 0x8100]]) {
        const b = buildPacket({ ip, l4, vlans, payloadLen: 300, seq: 0xfffffff0, tcpFlags: 0x99 });
        assertEquals(parse(b.frame, [5, 7, 1, b.frame.length - 13]), PacketError.OK);
        assertEquals(info.ipVersion, ip);
        assertEquals(info.etherType, ip === 4 ? 0x0800 : 0x86dd);
        assertEquals(info.vlanTags, vlans.length);
        assertEquals(info.l3Off, b.l3);
        assertEquals(info.l4Off, b.l4);
        assertEquals(info.payloadOff, b.payloadOff);
        assertEquals(info.l4Proto, l4 === "tcp" ? 6 : 17);
        assertEquals(info.l4HdrLen, l4 === "tcp" ? 20 : 8);
        assertEquals(info.ipHdrLen, ip === 4 ? 20 : 40);
        assertEquals(info.l3Off + info.l3Len, b.frame.length);
        assertEquals(info.isFragment, false);
        if (l4 === "tcp") {
          assertEquals(info.tcpSeq, 0xfffffff0);
          assertEquals(info.tcpFlags, 0x99);
        }
        if (ip === 4) assertEquals(info.ipId, 0x1234);
      }
    }
  }
  const opts = buildPacket({ ipOptions: 40, tcpOptions: 40 });
  assertEquals(parse(opts.frame), PacketError.OK);
  assertEquals(info.ipHdrLen, 60);
  assertEquals(info.l4HdrLen, 60);
  assertEquals(info.payloadOff, 14 + 60 + 60);
});

function mutate(spec: PacketSpec, f: (b: Uint8Array, l3: number, l4: number) => Uint8Array | void) {
  const b = buildPacket(spec);
  return f(b.frame, b.l3, b.l4) ?? b.frame;
}

Deno.test("parse: each malformation has its reason", () => {
  const cases: [string, Uint8Array, number][] = [
    ["runt", new Uint8Array(13), PacketError.TRUNCATED],
    ["ARP", mutate({}, (b) => void (b[12] = 0x08, b[13] = 0x06)), PacketError.NOT_IP],
    ["3 VLAN tags", buildPacket({ vlans: [0x88a8, 0x8100, 0x8100] }).frame, PacketError.NOT_IP],
    ["IPv4 version 6", mutate({}, (b, l3) => void (b[l3] = 0x65)), PacketError.IP_VERSION],
    ["IHL 4", mutate({}, (b, l3) => void (b[l3] = 0x44)), PacketError.IP_HEADER],
    [
      "IHL 15, 20 bytes",
      mutate({ payloadLen: 0, l4: "udp" }, (b, l3) => {
        b[l3] = 0x4f;
        return b.subarray(0, 14 + 30);
      }),
      PacketError.IP_HEADER,
    ],
    ["MF", mutate({}, (b, l3) => void (b[l3 + 6] = 0x20)), PacketError.FRAGMENT],
    ["offset", mutate({}, (b, l3) => void (b[l3 + 7] = 1)), PacketError.FRAGMENT],
    ["total length short", mutate({}, (b, l3) => void b[l3 + 3]--), PacketError.IP_LENGTH],
    ["total length long", mutate({}, (b, l3) => void b[l3 + 3]++), PacketError.IP_LENGTH],
    ["IPv4 ICMP", mutate({}, (b, l3) => void (b[l3 + 9] = 1)), PacketError.L4_PROTO],
    ["IPv6 payload short", mutate({ ip: 6 }, (b, l3) => void b[l3 + 5]--), PacketError.IP_LENGTH],
    ["IPv6 hop-by-hop", mutate({ ip: 6 }, (b, l3) => void (b[l3 + 6] = 0)), PacketError.IPV6_EXT],
    ["IPv6 fragment", mutate({ ip: 6 }, (b, l3) => void (b[l3 + 6] = 44)), PacketError.IPV6_EXT],
    ["TCP doff 4", mutate({}, (b, _, l4) => void (b[l4 + 12] = 0x40)), PacketError.L4_HEADER],
    [
      "TCP doff past frame",
      mutate({ payloadLen: 10 }, (b, _, l4) => void (b[l4 + 12] = 0xf0)),
      PacketError.L4_HEADER,
    ],
    [
      "UDP cut",
      mutate({ l4: "udp", payloadLen: 0 }, (b, l3) => {
        b[l3 + 3] -= 4;
        return b.subarray(0, b.length - 4);
      }),
      PacketError.L4_HEADER,
    ],
  ];
  for (const [name, frame, want] of cases) {
    assertEquals(parse(frame), want, `${name}: ${PACKET_ERROR_NAMES[parse(frame)]}`);
  }
  const frag = buildPacket({ ip: 6 });
  frag.frame[frag.l3 + 6] = 44;
  parse(frag.frame);
  assert(info.isFragment && info.hasExtHeaders);
});

Deno.test("parse: Ethernet padding only in minimum-size frames", () => {
  const small = buildPacket({ l4: "udp", payloadLen: 4 }); // 46 bytes
  const padded = new Uint8Array(60);
  padded.set(small.frame);
  assertEquals(parse(padded), PacketError.OK);
  assertEquals(info.l3Len, small.frame.length - 14);
  const big = buildPacket({ payloadLen: 100 });
  const padded2 = new Uint8Array(big.frame.length + 2);
  padded2.set(big.frame);
  assertEquals(parse(padded2), PacketError.IP_LENGTH);
});

Deno.test("captureHeaders copies at most 256 bytes, across segments, from any position", () => {
  arena.clear();
  const l = arena.list([3, 100, 7, 1000, 1000], [1, 0, 3], new Uint8Array(2110).fill(9));
  // Frame at logical position 50 of a list filled with 9s.
  const want = new Uint8Array(256);
  for (let i = 0; i < 256; i++) want[i] = l.byteAt(50 + i);
  const out = new Uint8Array(300).fill(1);
  assertEquals(captureHeaders(l, 50, 2000, out), 256);
  assertEquals(out.subarray(0, 256), want);
  assertEquals(out[256], 1);
  assertEquals(captureHeaders(l, 50, 20, out), 20);
  // A segment without a word view is copied bytewise.
  for (let i = 0; i < l.count; i++) l.words[i] = new Uint32Array(0);
  out.fill(1);
  assertEquals(captureHeaders(l, 50, 2000, out), 256);
  assertEquals(out.subarray(0, 256), want);
});

// ---------------------------------------------------------------------------
// validateOffload / egressAction
// ---------------------------------------------------------------------------

const ALL = OFFLOAD_CSUM | OFFLOAD_TSO4 | OFFLOAD_TSO6 | OFFLOAD_ECN | OFFLOAD_USO4 | OFFLOAD_USO6;

function header(p: Partial<NetHeader>): NetHeader {
  const h = new NetHeader();
  Object.assign(h, p);
  return h;
}

/** A GSO header as Linux sends it for `b`. */
function gsoHeader(b: ReturnType<typeof buildPacket>, gsoType: number, gsoSize = 1448) {
  const tcp = b.frame[b.l3] >> 4 === 4 ? b.frame[b.l3 + 9] === 6 : b.frame[b.l3 + 6] === 6;
  return header({
    flags: 1,
    gsoType,
    hdrLen: b.payloadOff,
    gsoSize,
    csumStart: b.l4,
    csumOffset: tcp ? 16 : 6,
  });
}

function check(frame: Uint8Array, h: NetHeader, caps = ALL): number {
  parse(frame);
  return validateOffload(h, info, frame.length, caps);
}

Deno.test("validate: well-formed headers pass", () => {
  const t4 = buildPacket({ payloadLen: 5000, csum: "partial" });
  assertEquals(check(t4.frame, gsoHeader(t4, 1)), 0);
  assertEquals(check(t4.frame, gsoHeader(t4, 0x81)), 0);
  const t6 = buildPacket({ ip: 6, payloadLen: 5000, vlans: [0x8100] });
  assertEquals(check(t6.frame, gsoHeader(t6, 4)), 0);
  const u4 = buildPacket({ l4: "udp", payloadLen: 5000 });
  assertEquals(check(u4.frame, gsoHeader(u4, 5, 1400)), 0);
  const u6 = buildPacket({ ip: 6, l4: "udp", payloadLen: 5000 });
  assertEquals(check(u6.frame, gsoHeader(u6, 5, 1400), OFFLOAD_CSUM | OFFLOAD_USO6), 0);
  // Plain and checksum-only frames; DATA_VALID (driver must not send it) is ignored.
  assertEquals(check(t4.frame, header({})), 0);
  assertEquals(check(t4.frame, header({ flags: 2 })), 0);
  assertEquals(check(new Uint8Array(20), header({})), 0); // not even IP: nothing asked
  assertEquals(check(t4.frame, header({ flags: 1, csumStart: t4.l4, csumOffset: 16 })), 0);
  // hdr_len: Linux's skb_headlen may exceed the headers; behind a TAP an
  // accelerated VLAN tag is not counted.
  assertEquals(check(t4.frame, header({ ...gsoHeader(t4, 1), hdrLen: 200 })), 0);
  assertEquals(check(t6.frame, header({ ...gsoHeader(t6, 4), hdrLen: t6.payloadOff - 4 })), 0);
  // One segment only (payload ≤ MSS), and no payload at all.
  assertEquals(check(t4.frame, gsoHeader(t4, 1, 9000)), 0);
  const empty = buildPacket({ payloadLen: 0 });
  assertEquals(check(empty.frame, gsoHeader(empty, 1)), 0);
});

Deno.test("validate: one refusal per CHECKLIST item 34–37", () => {
  const t4 = buildPacket({ payloadLen: 5000 });
  const t6 = buildPacket({ ip: 6, payloadLen: 5000 });
  const u4 = buildPacket({ l4: "udp", payloadLen: 5000 });
  const g = (p: Partial<NetHeader>, b = t4, type = 1) => header({ ...gsoHeader(b, type), ...p });
  const E = OffloadError;
  const cases: [string, Uint8Array, NetHeader, number, number][] = [
    // 34
    ["unknown type 2", t4.frame, g({ gsoType: 2 }), ALL, E.GSO_TYPE],
    ["unknown type 6", t4.frame, g({ gsoType: 6 }), ALL, E.GSO_TYPE],
    ["UFO", u4.frame, g({}, u4, 3), ALL, E.GSO_TYPE],
    ["ECN without HOST_ECN", t4.frame, g({ gsoType: 0x81 }), ALL & ~OFFLOAD_ECN, E.GSO_TYPE],
    ["ECN alone", t4.frame, g({ gsoType: 0x80 }), ALL, E.GSO_TYPE],
    ["ECN on UDP", u4.frame, g({ gsoType: 0x85 }, u4), ALL, E.GSO_TYPE],
    ["TSO4 not negotiated", t4.frame, g({}), ALL & ~OFFLOAD_TSO4, E.GSO_TYPE],
    ["TSO6 not negotiated", t6.frame, g({}, t6, 4), ALL & ~OFFLOAD_TSO6, E.GSO_TYPE],
    ["USO not negotiated", u4.frame, g({}, u4, 5), OFFLOAD_CSUM | OFFLOAD_TSO4, E.GSO_TYPE],
    // 35
    ["gso_size 0", t4.frame, g({ gsoSize: 0 }), ALL, E.GSO_SIZE],
    ["5000 B in 1-byte segments", t4.frame, g({ gsoSize: 1 }), ALL, E.GSO_SIZE],
    ["USO 5000 B in 20-byte segments", u4.frame, g({ gsoSize: 20 }, u4, 5), ALL, E.GSO_SIZE],
    ["hdr_len beyond the frame", t4.frame, g({ hdrLen: t4.frame.length + 1 }), ALL, E.HDR_LEN],
    ["hdr_len short", t4.frame, g({ hdrLen: t4.payloadOff - 1 }), ALL, E.HDR_LEN],
    // 36
    [
      "NEEDS_CSUM without CSUM",
      t4.frame,
      header({ flags: 1, csumStart: 34, csumOffset: 16 }),
      0,
      E.CSUM,
    ],
    [
      "csum_start in Ethernet header",
      t4.frame,
      header({ flags: 1, csumStart: 13, csumOffset: 0 }),
      ALL,
      E.CSUM,
    ],
    [
      "csum_start at frame end",
      t4.frame,
      header({ flags: 1, csumStart: t4.frame.length, csumOffset: 0 }),
      ALL,
      E.CSUM,
    ],
    [
      "csum field past the end",
      t4.frame,
      header({ flags: 1, csumStart: t4.frame.length - 10, csumOffset: 9 }),
      ALL,
      E.CSUM,
    ],
    ["GSO csum_start not L4", t4.frame, g({ csumStart: t4.l4 + 2 }), ALL, E.CSUM],
    ["GSO csum_offset UDP on TCP", t4.frame, g({ csumOffset: 6 }), ALL, E.CSUM],
    ["GSO without NEEDS_CSUM", t4.frame, g({ flags: 0 }), ALL, E.GSO_NO_CSUM],
    // 37
    ["TCPV4 on IPv6", t6.frame, g({}, t6, 1), ALL, E.PACKET],
    ["TCPV6 on IPv4", t4.frame, g({}, t4, 4), ALL, E.PACKET],
    ["TCPV4 on UDP", u4.frame, g({}, u4, 1), ALL, E.PACKET],
    ["UDP_L4 on TCP", t4.frame, g({}, t4, 5), ALL, E.PACKET],
    ["TCPV4 on ARP", mutate({ payloadLen: 5000 }, (b) => void (b[13] = 6)), g({}), ALL, E.PACKET],
    [
      "fragment",
      mutate({ payloadLen: 5000 }, (b, l3) => void (b[l3 + 6] = 0x20)),
      g({}),
      ALL,
      E.PACKET,
    ],
    [
      "total length",
      mutate({ payloadLen: 5000 }, (b, l3) => void b[l3 + 3]--),
      g({}),
      ALL,
      E.PACKET,
    ],
    ["IHL 4", mutate({ payloadLen: 5000 }, (b, l3) => void (b[l3] = 0x44)), g({}), ALL, E.PACKET],
    [
      "doff 3",
      mutate({ payloadLen: 5000 }, (b, _, l4) => void (b[l4 + 12] = 0x30)),
      g({}),
      ALL,
      E.PACKET,
    ],
    [
      "IPv6 ext",
      mutate({ ip: 6, payloadLen: 5000 }, (b, l3) => void (b[l3 + 6] = 60)),
      g({}, t6, 4),
      ALL,
      E.PACKET,
    ],
  ];
  for (const [name, frame, h, caps, want] of cases) {
    const got = check(frame, h, caps);
    assertEquals(
      got,
      want,
      `${name}: got ${OFFLOAD_ERROR_NAMES[got]}, want ${OFFLOAD_ERROR_NAMES[want]}`,
    );
  }
  // A padded minimum-size frame may not be GSO.
  const small = buildPacket({ payloadLen: 2 });
  const padded = new Uint8Array(60);
  padded.set(small.frame);
  assertEquals(check(padded, gsoHeader(small, 1, 1)), E.PACKET);
});

Deno.test("egressAction: pass what the port takes, else checksum or segment", () => {
  const t4 = buildPacket({ payloadLen: 5000 });
  parse(t4.frame);
  const A = EgressAction;
  assertEquals(egressAction(header({}), info, 0), A.PASS);
  assertEquals(egressAction(header({ flags: 1 }), info, OFFLOAD_CSUM), A.PASS);
  assertEquals(egressAction(header({ flags: 1 }), info, 0), A.CHECKSUM);
  assertEquals(egressAction(gsoHeader(t4, 1), info, OFFLOAD_CSUM | OFFLOAD_TSO4), A.PASS);
  assertEquals(egressAction(gsoHeader(t4, 1), info, OFFLOAD_CSUM | OFFLOAD_TSO6), A.SEGMENT);
  assertEquals(egressAction(gsoHeader(t4, 0x81), info, OFFLOAD_CSUM | OFFLOAD_TSO4), A.SEGMENT);
  assertEquals(egressAction(gsoHeader(t4, 0x81), info, ALL), A.PASS);
  const u6 = buildPacket({ ip: 6, l4: "udp", payloadLen: 5000 });
  parse(u6.frame);
  assertEquals(egressAction(gsoHeader(u6, 5), info, OFFLOAD_CSUM | OFFLOAD_USO4), A.SEGMENT);
  assertEquals(egressAction(gsoHeader(u6, 5), info, OFFLOAD_CSUM | OFFLOAD_USO6), A.PASS);
});

Deno.test("NetHeader.read/write: in segment 0 and split across segments", () => {
  const bytes = new Uint8Array([1, 0x85, 0x36, 0, 0xa8, 5, 0x22, 0, 0x10, 0, 3, 0]);
  for (const lens of [[12], [5, 7], [1, 1, 1, 9], [11, 1]]) {
    arena.clear();
    const l = arena.list(lens, [3, 1], bytes);
    const h = new NetHeader();
    h.read(l, 0, 12);
    assertEquals(
      [h.flags, h.gsoType, h.hdrLen, h.gsoSize, h.csumStart, h.csumOffset, h.numBuffers],
      [
        1,
        0x85,
        0x36,
        1448,
        0x22,
        16,
        3,
      ],
    );
    h.read(l, 0, 10);
    assertEquals(h.numBuffers, 0);
    const out = arena.list(lens, [2]);
    h.numBuffers = 3;
    h.write(out, 0, 12);
    for (let i = 0; i < 12; i++) assertEquals(out.byteAt(i), bytes[i]);
  }
});

Deno.test("passHeader: rebuilt from validated values, guest-only bits dropped", () => {
  const t4 = buildPacket({ payloadLen: 5000 });
  parse(t4.frame);
  const out = new NetHeader();
  out.numBuffers = 7;
  passHeader(header({ ...gsoHeader(t4, 0x81), flags: 0xff, hdrLen: 300 }), info, out);
  assertEquals(
    [
      out.flags,
      out.gsoType,
      out.hdrLen,
      out.gsoSize,
      out.csumStart,
      out.csumOffset,
      out.numBuffers,
    ],
    [1, 0x81, t4.payloadOff, 1448, t4.l4, 16, 7],
  );
  passHeader(
    header({ flags: 3, hdrLen: 99, gsoSize: 5, csumStart: 34, csumOffset: 16 }),
    info,
    out,
  );
  assertEquals([out.flags, out.gsoType, out.hdrLen, out.gsoSize, out.csumStart, out.csumOffset], [
    1,
    0,
    0,
    0,
    34,
    16,
  ]);
  passHeader(header({ flags: 2, hdrLen: 99, csumStart: 34 }), info, out);
  assertEquals([out.flags, out.gsoType, out.hdrLen, out.gsoSize, out.csumStart, out.csumOffset], [
    0,
    0,
    0,
    0,
    0,
    0,
  ]);
});

Deno.test("validate: the 64 KiB payload bound (item 35) holds on its own", () => {
  // No real frame reaches this check: the parser wants the IP length to cover the rest of
  // the frame exactly, and 16-bit IP lengths keep the payload ≤ 65535 − 20. The bound is a
  // second line for a parse that let a longer frame through; test it with such a parse.
  const t4 = buildPacket({ payloadLen: 5000 });
  parse(t4.frame);
  const frameLen = t4.payloadOff + 65536;
  info.l3Len = frameLen - info.l3Off;
  assertEquals(validateOffload(gsoHeader(t4, 1, 1448), info, frameLen, ALL), OffloadError.GSO_SIZE);
  info.l3Len = frameLen - 1 - info.l3Off; // 65535 bytes of payload: the largest allowed
  assertEquals(validateOffload(gsoHeader(t4, 1, 1448), info, frameLen - 1, ALL), 0);
});
