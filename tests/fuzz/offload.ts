/**
 * Targets `c` and `c2`: the network-headers layer (src/net) over random
 * virtio-net headers and frames, biased towards almost-valid packets (a
 * well-formed TCP/UDP packet over IPv4/IPv6 with 0–2 VLAN tags, then a few
 * byte mutations, a length change, and header fields that are mostly what
 * Linux sends).
 *
 * - `c`  header validation (CHECKLIST items 23, 34–37): `captureHeaders`
 *        copies exactly the frame's bytes out of a source list whose
 *        segments are surrounded by poison; `parsePacket` and
 *        `validateOffload` never throw and return known codes; a header is
 *        accepted exactly when an independent model (reading the whole
 *        frame with a DataView) accepts it; the header rebuilt to pass it on
 *        (`passHeader`, item 39) keeps only NEEDS_CSUM and is accepted again.
 * - `c2` checksum completion and segmentation (item 38) of what `c`
 *        accepts: every segment fits the egress MTU, its IPv4 header and L4
 *        checksums verify with a reference implementation (after completing
 *        a partial one), its headers are what the rules say, the payloads
 *        concatenated equal the input's, the source is unchanged and no
 *        byte outside the destination segments (guard bytes between them)
 *        is written. NEEDS_CSUM frames completed in place sum to 0xffff
 *        from csum_start and change only the checksum field.
 *
 * @module
 */

import fc from "fast-check";
import {
  captureHeaders,
  MAX_HEADER_BYTES,
  PACKET_ERROR_NAMES,
  PacketInfo,
  parsePacket,
} from "../../src/net/packet.ts";
import {
  OFFLOAD_CSUM,
  OFFLOAD_ECN,
  OFFLOAD_ERROR_NAMES,
  OFFLOAD_TSO4,
  OFFLOAD_TSO6,
  OFFLOAD_USO4,
  OFFLOAD_USO6,
  passHeader,
  validateOffload,
} from "../../src/net/offload.ts";
import {
  completeChecksum,
  segmentCount,
  segmentFrameLen,
  segmentsFitMtu,
  writeSegment,
} from "../../src/net/segment.ts";
import { NetHeader } from "../../src/virtio/net_header.ts";
import type { SegList } from "../../src/virtio/chain.ts";
import {
  Arena,
  buildPacket,
  cutsToLens,
  gather,
  ipv4ChecksumOk,
  l4ChecksumOk,
  refSum,
} from "../net/packets.ts";
import {
  count,
  counted,
  fail,
  params,
  resetStats,
  type RunOptions,
  show,
  type TargetOutcome,
  trace,
} from "./common.ts";

// ---------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------

interface FrameCase {
  ip: 4 | 6;
  l4: "tcp" | "udp";
  vlans: number[];
  ipOptions: number;
  tcpOptions: number;
  tcpFlags: number;
  seq: number;
  ipId: number;
  payloadLen: number;
  seed: number;
  /** Byte mutations (index into the frame, biased to the headers). */
  mutations: { at: number; value: number }[];
  /** Frame length change: cut or extended with junk. */
  lenDelta: number;
  /** Header fields: "linux" (consistent) or a perturbation. */
  hdr: {
    flags: number | "linux";
    gsoType: number | "linux" | "none";
    gsoSize: number;
    hdrLen: number | "linux" | "short" | "long";
    csumStart: number | "linux";
    csumOffset: number | "linux";
  };
  caps: number;
  /** Where the source chain is cut (fractions of its length, in 1/1000). */
  srcCuts: number[];
  /** Bytes of junk before the frame in the source chain (virtio header and more). */
  lead: number;
  /** Destination buffer size (RX buffers) and first-buffer offset. */
  dstBuf: number;
  dstPos: number;
  /** Egress MTU: relative to the segment size, or absolute. */
  mtuDelta: number;
  full: boolean;
  phases: number[];
}

const ALL_CAPS = OFFLOAD_CSUM | OFFLOAD_TSO4 | OFFLOAD_TSO6 | OFFLOAD_ECN | OFFLOAD_USO4 |
  OFFLOAD_USO6;

const payloadArb = fc.oneof(
  { weight: 3, arbitrary: fc.integer({ min: 0, max: 64 }) },
  { weight: 4, arbitrary: fc.integer({ min: 65, max: 6000 }) },
  { weight: 1, arbitrary: fc.integer({ min: 60000, max: 65535 - 100 }) },
);

const gsoSizeArb = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(536, 1000, 1220, 1400, 1448, 1460, 8948) },
  { weight: 3, arbitrary: fc.integer({ min: 1, max: 2000 }) },
  { weight: 1, arbitrary: fc.constantFrom(0, 1, 47, 48, 0xffff) },
);

const caseArb: fc.Arbitrary<FrameCase> = fc.record({
  ip: fc.constantFrom(4 as const, 6 as const),
  l4: fc.constantFrom("tcp" as const, "udp" as const),
  vlans: fc.oneof(
    { weight: 4, arbitrary: fc.constant([] as number[]) },
    { weight: 2, arbitrary: fc.constant([0x8100] as number[]) },
    { weight: 1, arbitrary: fc.constant([0x88a8, 0x8100] as number[]) },
    {
      weight: 1,
      arbitrary: fc.array(fc.constantFrom(0x8100, 0x88a8), { minLength: 3, maxLength: 3 }),
    },
  ),
  ipOptions: fc.oneof({ weight: 4, arbitrary: fc.constant(0) }, {
    weight: 1,
    arbitrary: fc.integer({ min: 1, max: 10 }).map((n) => 4 * n),
  }),
  tcpOptions: fc.oneof({ weight: 2, arbitrary: fc.constant(0) }, {
    weight: 2,
    arbitrary: fc.constant(12),
  }, {
    weight: 1,
    arbitrary: fc.integer({ min: 1, max: 10 }).map((n) => 4 * n),
  }),
  tcpFlags: fc.oneof(
    fc.constant(0x10),
    fc.constant(0x18),
    fc.constant(0x99),
    fc.integer({ min: 0, max: 255 }),
  ),
  seq: fc.oneof(fc.constant(0xffffffff - 2000), fc.integer({ min: 0, max: 0xffffffff })),
  ipId: fc.integer({ min: 0, max: 0xffff }),
  payloadLen: payloadArb,
  seed: fc.integer({ min: 1, max: 0x7fffffff }),
  mutations: fc.oneof(
    { weight: 6, arbitrary: fc.constant([] as { at: number; value: number }[]) },
    {
      weight: 3,
      arbitrary: fc.array(
        fc.record({
          at: fc.oneof({ weight: 5, arbitrary: fc.integer({ min: 0, max: 100 }) }, {
            weight: 1,
            arbitrary: fc.integer({ min: 0, max: 70000 }),
          }),
          value: fc.oneof(
            fc.integer({ min: 0, max: 255 }),
            fc.constantFrom(0, 0x45, 0x4f, 0x60, 0x50, 0xf0, 6, 17, 44),
          ),
        }),
        { minLength: 1, maxLength: 3 },
      ),
    },
  ),
  lenDelta: fc.oneof(
    { weight: 8, arbitrary: fc.constant(0) },
    { weight: 1, arbitrary: fc.integer({ min: -80, max: 8 }) },
  ),
  hdr: fc.record({
    flags: fc.oneof({ weight: 8, arbitrary: fc.constant("linux" as const) }, {
      weight: 1,
      arbitrary: fc.integer({ min: 0, max: 255 }),
    }),
    gsoType: fc.oneof(
      { weight: 8, arbitrary: fc.constant("linux" as const) },
      { weight: 2, arbitrary: fc.constant("none" as const) },
      { weight: 1, arbitrary: fc.constantFrom(0, 1, 2, 3, 4, 5, 6, 0x80, 0x81, 0x84, 0x85, 0xff) },
    ),
    gsoSize: gsoSizeArb,
    hdrLen: fc.oneof(
      { weight: 8, arbitrary: fc.constant("linux" as const) },
      { weight: 1, arbitrary: fc.constantFrom("short" as const, "long" as const) },
      { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffff }) },
    ),
    csumStart: fc.oneof({ weight: 8, arbitrary: fc.constant("linux" as const) }, {
      weight: 1,
      arbitrary: fc.integer({ min: 0, max: 0xffff }),
    }),
    csumOffset: fc.oneof({ weight: 8, arbitrary: fc.constant("linux" as const) }, {
      weight: 1,
      arbitrary: fc.oneof(fc.integer({ min: 0, max: 40 }), fc.integer({ min: 0, max: 0xffff })),
    }),
  }),
  caps: fc.oneof({ weight: 6, arbitrary: fc.constant(ALL_CAPS) }, {
    weight: 1,
    arbitrary: fc.integer({ min: 0, max: 63 }),
  }),
  srcCuts: fc.array(fc.integer({ min: 0, max: 1000 }), { maxLength: 6 }),
  lead: fc.constantFrom(10, 12, 12, 12, 13, 20),
  dstBuf: fc.oneof(fc.constant(2048), fc.constant(4096), fc.integer({ min: 1, max: 1600 })),
  dstPos: fc.constantFrom(0, 10, 12, 12, 1),
  mtuDelta: fc.oneof({ weight: 5, arbitrary: fc.constant(0) }, {
    weight: 2,
    arbitrary: fc.integer({ min: -20, max: 20 }),
  }),
  full: fc.boolean(),
  phases: fc.array(fc.integer({ min: 0, max: 7 }), { minLength: 1, maxLength: 4 }),
});

interface Built {
  frame: Uint8Array;
  h: NetHeader;
}

/** The frame and header a case describes (deterministic). */
function materialize(c: FrameCase): Built {
  const b = buildPacket({
    ip: c.ip,
    l4: c.l4,
    vlans: c.vlans,
    ipOptions: c.ip === 4 ? c.ipOptions : 0,
    tcpOptions: c.l4 === "tcp" ? c.tcpOptions : 0,
    tcpFlags: c.tcpFlags,
    seq: c.seq,
    ipId: c.ipId,
    payloadLen: Math.max(0, Math.min(c.payloadLen, 65535 - 140)),
    seed: c.seed,
    csum: "partial",
  });
  let frame = b.frame;
  // Keep IP lengths within 16 bits for the big payloads (rebuild if they overflowed).
  if (c.lenDelta < 0) frame = frame.subarray(0, Math.max(0, frame.length + c.lenDelta));
  else if (c.lenDelta > 0) {
    const f = new Uint8Array(frame.length + c.lenDelta).fill(0x5a);
    f.set(frame);
    frame = f;
  }
  for (const m of c.mutations) if (m.at < frame.length) frame[m.at] = m.value;
  const tcp = c.l4 === "tcp";
  const h = new NetHeader();
  const gsoType = c.hdr.gsoType === "linux"
    ? (tcp ? (c.ip === 4 ? 1 : 4) : 5) | (tcp && (c.tcpFlags & 0x80) !== 0 ? 0x80 : 0)
    : c.hdr.gsoType === "none"
    ? 0
    : c.hdr.gsoType;
  h.gsoType = gsoType;
  h.flags = c.hdr.flags === "linux" ? 1 : c.hdr.flags;
  h.gsoSize = gsoType === 0 && c.hdr.gsoType === "none" ? 0 : c.hdr.gsoSize;
  h.hdrLen = c.hdr.hdrLen === "linux"
    ? b.payloadOff
    : c.hdr.hdrLen === "short"
    ? b.payloadOff - 1
    : c.hdr.hdrLen === "long"
    ? frame.length + 1
    : c.hdr.hdrLen;
  h.csumStart = c.hdr.csumStart === "linux" ? b.l4 : c.hdr.csumStart;
  h.csumOffset = c.hdr.csumOffset === "linux" ? (tcp ? 16 : 6) : c.hdr.csumOffset;
  return { frame, h };
}

// ---------------------------------------------------------------------------
// The model: an independent reading of the whole frame
// ---------------------------------------------------------------------------

interface ModelPacket {
  tags: number;
  l3: number;
  ip: number;
  tcp: boolean;
  l4: number;
  payloadOff: number;
}

/** A clean, unfragmented IPv4/IPv6 TCP/UDP packet filling the frame exactly, or null. */
function modelParse(f: Uint8Array): ModelPacket | null {
  const dv = new DataView(f.buffer, f.byteOffset, f.byteLength);
  if (f.length < 14) return null;
  let o = 12, tags = 0;
  while (o + 2 <= f.length && (dv.getUint16(o) === 0x8100 || dv.getUint16(o) === 0x88a8)) {
    tags++;
    o += 4;
  }
  if (tags > 2 || o + 2 > f.length) return null;
  const type = dv.getUint16(o);
  const l3 = o + 2;
  let l4: number, proto: number;
  if (type === 0x0800) {
    if (l3 + 20 > f.length || f[l3] >> 4 !== 4) return null;
    const ihl = (f[l3] & 15) * 4;
    if (ihl < 20 || dv.getUint16(l3 + 2) !== f.length - l3) return null;
    if ((dv.getUint16(l3 + 6) & 0x3fff) !== 0) return null;
    proto = f[l3 + 9];
    l4 = l3 + ihl;
  } else if (type === 0x86dd) {
    if (l3 + 40 > f.length || f[l3] >> 4 !== 6) return null;
    if (dv.getUint16(l3 + 4) !== f.length - l3 - 40) return null;
    proto = f[l3 + 6];
    l4 = l3 + 40;
  } else return null;
  if (proto === 6) {
    if (l4 + 20 > f.length) return null;
    const doff = (f[l4 + 12] >> 4) * 4;
    if (doff < 20 || l4 + doff > f.length) return null;
    return { tags, l3, ip: type === 0x0800 ? 4 : 6, tcp: true, l4, payloadOff: l4 + doff };
  }
  if (proto === 17) {
    if (l4 + 8 > f.length) return null;
    return { tags, l3, ip: type === 0x0800 ? 4 : 6, tcp: false, l4, payloadOff: l4 + 8 };
  }
  return null;
}

/** Whether the model accepts header `h` with frame `f` from a port with `caps`. */
function modelAccepts(f: Uint8Array, h: NetHeader, caps: number): boolean {
  const needs = (h.flags & 1) !== 0;
  const base = h.gsoType & 0x7f, ecn = (h.gsoType & 0x80) !== 0;
  if (base === 0) {
    if (ecn) return false;
    if (!needs) return true;
    return (caps & OFFLOAD_CSUM) !== 0 && h.csumStart >= 14 &&
      h.csumStart + h.csumOffset + 2 <= f.length;
  }
  const typeCap = base === 1
    ? OFFLOAD_TSO4
    : base === 4
    ? OFFLOAD_TSO6
    : base === 5
    ? OFFLOAD_USO4 | OFFLOAD_USO6
    : 0;
  if ((caps & typeCap) === 0) return false;
  if (ecn && (base === 5 || (caps & OFFLOAD_ECN) === 0)) return false;
  if (!needs || (caps & OFFLOAD_CSUM) === 0) return false;
  const p = modelParse(f);
  if (p === null) return false;
  if (base === 1 && (p.ip !== 4 || !p.tcp)) return false;
  if (base === 4 && (p.ip !== 6 || !p.tcp)) return false;
  if (base === 5 && (p.tcp || (caps & (p.ip === 4 ? OFFLOAD_USO4 : OFFLOAD_USO6)) === 0)) {
    return false;
  }
  if (h.csumStart !== p.l4 || h.csumOffset !== (p.tcp ? 16 : 6)) return false;
  const payload = f.length - p.payloadOff;
  if (h.gsoSize === 0 || payload > 65535) return false;
  if (Math.ceil(payload / h.gsoSize) > (p.tcp ? 1366 : 128)) return false;
  return h.hdrLen <= f.length && h.hdrLen >= p.payloadOff - 4 * p.tags;
}

// ---------------------------------------------------------------------------
// Running one case
// ---------------------------------------------------------------------------

const arena = new Arena(24 << 20);
const hdr = new Uint8Array(MAX_HEADER_BYTES);
const info = new PacketInfo();
const passed = new NetHeader();

/** The source chain: `lead` junk bytes, the frame, 7 junk bytes; cut as the case says. */
function sourceList(c: FrameCase, frame: Uint8Array): SegList {
  const bytes = new Uint8Array(c.lead + frame.length + 7).fill(0x3c);
  bytes.set(frame, c.lead);
  const cuts = c.srcCuts.map((k) => Math.floor((k * bytes.length) / 1000));
  return arena.list(cutsToLens(bytes.length, cuts), c.phases, bytes);
}

/** Target c: capture, parse, validate. Returns the source list for c2. */
function runValidation(c: FrameCase, b: Built): { src: SegList; code: number } {
  const f = b.frame;
  const src = sourceList(c, f);
  hdr.fill(0xee);
  const n = captureHeaders(src, c.lead, f.length, hdr);
  const want = Math.min(f.length, MAX_HEADER_BYTES);
  if (n !== want) fail(`captureHeaders copied ${n} bytes, want ${want}`);
  for (let i = 0; i < n; i++) if (hdr[i] !== f[i]) fail(`captured byte ${i} is not the frame's`);
  for (let i = n; i < hdr.length; i++) if (hdr[i] !== 0xee) fail(`captureHeaders wrote hdr[${i}]`);
  const perr = parsePacket(hdr, n, f.length, info);
  if (PACKET_ERROR_NAMES[perr] === undefined) fail(`unknown packet code ${perr}`);
  count(`parse ${PACKET_ERROR_NAMES[perr]}`);
  const code = validateOffload(b.h, info, f.length, c.caps);
  if (OFFLOAD_ERROR_NAMES[code] === undefined) fail(`unknown offload code ${code}`);
  count(`validate ${OFFLOAD_ERROR_NAMES[code]}`);
  const model = modelAccepts(f, b.h, c.caps);
  if (model !== (code === 0)) {
    fail(
      `validateOffload says ${OFFLOAD_ERROR_NAMES[code]} (parse ${
        PACKET_ERROR_NAMES[perr]
      }), the model ${model ? "accepts" : "refuses"}`,
    );
  }
  if (code === 0) {
    // Item 39: the header passed on is rebuilt, carries no guest-only bits,
    // and passes the same checks again.
    passHeader(b.h, info, passed);
    if ((passed.flags & ~1) !== 0) fail(`passHeader kept flags ${passed.flags}`);
    const again = validateOffload(passed, info, f.length, c.caps);
    if (again !== 0) fail(`passHeader's header is refused: ${OFFLOAD_ERROR_NAMES[again]}`);
    if (passed.gsoType !== 0 && passed.hdrLen !== info.payloadOff) fail("passHeader hdr_len");
  }
  return { src, code };
}

function runCaseC(c: FrameCase): void {
  arena.clear();
  const b = materialize(c);
  trace(() => `c ${show(c)}`);
  runValidation(c, b);
}

/** Target c2: everything c does, then complete / segment what was accepted. */
function runCaseC2(c: FrameCase): void {
  arena.clear();
  const b = materialize(c);
  trace(() => `c2 ${show(c)}`);
  const { src, code } = runValidation(c, b);
  if (code !== 0 || (b.h.flags & 1) === 0) return;
  const srcBefore = gather(src);
  if ((b.h.gsoType & 0x7f) === 0) {
    completeCase(c, b, src);
  } else {
    segmentCase(c, b, src);
  }
  const srcAfter = gather(src);
  for (let i = 0; i < srcAfter.length; i++) {
    if (srcAfter[i] !== srcBefore[i]) fail(`the source changed at ${i}`);
  }
}

/** Destination lists of `len` bytes from `pos` in `bufSize`-byte buffers. */
function destination(c: FrameCase, len: number): SegList {
  const lens: number[] = [];
  let left = c.dstPos + len;
  while (left > 0) {
    const n = Math.min(left, c.dstBuf);
    lens.push(n);
    left -= n;
  }
  return arena.list(lens.length ? lens : [0], c.phases.slice().reverse());
}

function completeCase(c: FrameCase, b: Built, src: SegList): void {
  const f = b.frame;
  const dst = destination(c, f.length);
  // Copy the frame in as the dataplane does (a plain byte loop here).
  for (let i = 0; i < f.length; i++) putAt(dst, c.dstPos + i, f[i]);
  const ok = completeChecksum(dst, c.dstPos, f.length, b.h.csumStart, b.h.csumOffset);
  if (!ok) fail("completeChecksum refused a validated header");
  count("completed");
  const out = gather(dst, c.dstPos, f.length);
  const at = b.h.csumStart + b.h.csumOffset;
  for (let i = 0; i < f.length; i++) {
    if (i !== at && i !== at + 1 && out[i] !== f[i]) fail(`completeChecksum changed byte ${i}`);
  }
  // §5.1.6.2: the field held the pseudo-header sum P; the data plus the
  // written checksum plus P must sum to 0xffff (any bytes, any protocol).
  // (A field at an odd csum_offset is stored like Linux's skb_checksum_help
  // does, and then cannot verify: the guest's own mistake, not checked.)
  const pseudo = (f[at] << 8) | f[at + 1];
  if ((b.h.csumOffset & 1) === 0 && refSum(out, b.h.csumStart, f.length, pseudo) !== 0xffff) {
    fail("completed checksum does not verify");
  }
  const p = modelParse(f);
  // Unmutated: the field holds the true pseudo-header sum, so the L4 checksum verifies.
  const clean = c.mutations.length === 0 && c.lenDelta === 0;
  if (clean && p !== null && b.h.csumStart === p.l4 && b.h.csumOffset === (p.tcp ? 16 : 6)) {
    if (!l4ChecksumOk(out, p.l3)) fail("completed TCP/UDP checksum does not verify");
    count("completed L4");
  }
  if (!arena.poisonIntact([src, dst])) fail("completeChecksum wrote outside the destination");
}

function segmentCase(c: FrameCase, b: Built, src: SegList): void {
  const f = b.frame;
  const h = b.h;
  const n = segmentCount(h, info, f.length);
  // The largest IP packet a segment may be (Linux's skb_gso_network_seglen).
  const ipMax = h.gsoSize + info.payloadOff - info.l3Off;
  const mtu = Math.max(68, ipMax + c.mtuDelta);
  if (!segmentsFitMtu(h, info, mtu)) {
    if (ipMax <= mtu) fail(`segmentsFitMtu refused ${ipMax} B segments for MTU ${mtu}`);
    count("mtu refused");
    return;
  }
  const lists: SegList[] = [];
  const p = modelParse(f)!;
  const payload = f.length - p.payloadOff;
  const joined = new Uint8Array(payload);
  let at = 0;
  const dv = new DataView(f.buffer, f.byteOffset, f.byteLength);
  for (let k = 0; k < n; k++) {
    const len = segmentFrameLen(h, info, f.length, k);
    const dst = destination(c, len);
    lists.push(dst);
    const w = writeSegment(h, info, hdr, src, c.lead, f.length, k, dst, c.dstPos, c.full);
    if (w !== len) fail(`segment ${k}: wrote ${w} of ${len} bytes`);
    const s = gather(dst, c.dstPos, len);
    if (len - info.l3Off > mtu) {
      fail(`segment ${k}: ${len - info.l3Off} B IP packet over MTU ${mtu}`);
    }
    const sd = new DataView(s.buffer);
    const last = k === n - 1;
    const pay = len - p.payloadOff;
    if (pay !== (last ? payload - k * h.gsoSize : h.gsoSize) && !(payload === 0 && pay === 0)) {
      fail(`segment ${k}: ${pay} payload bytes`);
    }
    for (let i = 0; i < p.l3; i++) if (s[i] !== f[i]) fail(`segment ${k}: L2 byte ${i}`);
    if (p.ip === 4) {
      if (sd.getUint16(p.l3 + 2) !== len - p.l3) fail(`segment ${k}: IPv4 total length`);
      if (sd.getUint16(p.l3 + 4) !== ((dv.getUint16(p.l3 + 4) + k) & 0xffff)) {
        fail(`segment ${k}: IPv4 id`);
      }
      if (!ipv4ChecksumOk(s, p.l3)) fail(`segment ${k}: IPv4 header checksum`);
    } else if (sd.getUint16(p.l3 + 4) !== len - p.l3 - 40) {
      fail(`segment ${k}: IPv6 payload length`);
    }
    if (p.tcp) {
      if (sd.getUint32(p.l4 + 4) !== (dv.getUint32(p.l4 + 4) + k * h.gsoSize) % 2 ** 32) {
        fail(`segment ${k}: TCP seq`);
      }
      let fl = f[p.l4 + 13];
      if (!last) fl &= ~0x09;
      if (k > 0) fl &= ~0x80;
      if (s[p.l4 + 13] !== fl) fail(`segment ${k}: TCP flags ${s[p.l4 + 13]} want ${fl}`);
    } else if (sd.getUint16(p.l4 + 4) !== len - p.l4) fail(`segment ${k}: UDP length`);
    let checked = s;
    if (!c.full) {
      const l = arena.list([s.length], [1], s);
      completeChecksum(l, 0, s.length, p.l4, p.tcp ? 16 : 6);
      checked = gather(l);
      lists.push(l);
    }
    if (!l4ChecksumOk(checked, p.l3)) fail(`segment ${k}: L4 checksum`);
    joined.set(s.subarray(p.payloadOff), at);
    at += pay;
  }
  if (at !== payload) fail(`segments carry ${at} of ${payload} payload bytes`);
  for (let i = 0; i < payload; i++) {
    if (joined[i] !== f[p.payloadOff + i]) fail(`payload byte ${i} differs`);
  }
  // The source's segments are inside the arena too: list them as allowed.
  if (!arena.poisonIntact([src, ...lists])) fail("a write landed outside the destination segments");
  count(`segmented ${c.full ? "full" : "partial"}`);
  count("segments", n);
}

function putAt(l: SegList, pos: number, v: number): void {
  for (let i = 0; i < l.count; i++) {
    if (pos < l.lens[i]) {
      l.views[i][l.offs[i] + pos] = v;
      return;
    }
    pos -= l.lens[i];
  }
}

function run(o: RunOptions, f: (c: FrameCase) => void): Promise<TargetOutcome> {
  const t0 = performance.now();
  const st = resetStats();
  const state = { evals: 0, failed: false };
  arena.activate();
  const prop = fc.asyncProperty(
    caseArb,
    counted(o, state, (c: FrameCase) => {
      f(c);
      return Promise.resolve();
    }),
  );
  return (fc.check(prop, params(o)) as Promise<fc.RunDetails<unknown>>).then((details) => ({
    details,
    ms: performance.now() - t0,
    evals: state.evals,
    stats: st,
  }));
}

/** Target c: header validation. */
export function runTargetC(o: RunOptions): Promise<TargetOutcome> {
  return run(o, runCaseC);
}

/** Target c2: checksum completion and segmentation. */
export function runTargetC2(o: RunOptions): Promise<TargetOutcome> {
  return run(o, runCaseC2);
}
