/**
 * Test-side packet builder and reference checksums, written independently
 * of src/net (plain loops over whole buffers, no word tricks), plus scatter
 * lists over an mmap'd arena with poisoned gaps between segments.
 *
 * @module
 */

import { SegList } from "../../src/virtio/chain.ts";
import { updateWindow } from "../../src/virtio/address_window.ts";
import { mmap } from "../../ffi/memory.ts";
import { MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE } from "../../ffi/constants.ts";

// ---------------------------------------------------------------------------
// Reference checksum: sum of big-endian 16-bit words, carries folded.
// ---------------------------------------------------------------------------

/** Ones' complement sum (folded, 16 bits) of big-endian words; odd byte padded. */
export function refSum(b: Uint8Array, start = 0, end = b.length, initial = 0): number {
  let s = initial;
  for (let i = start; i < end; i += 2) {
    const hi = b[i];
    const lo = i + 1 < end ? b[i + 1] : 0;
    s += hi * 256 + lo;
    while (s > 0xffff) s = (s % 65536) + Math.floor(s / 65536);
  }
  while (s > 0xffff) s = (s % 65536) + Math.floor(s / 65536);
  return s;
}

/** Whether the L4 checksum of an IP packet inside `frame` verifies (pseudo header included). */
export function l4ChecksumOk(frame: Uint8Array, l3: number): boolean {
  const v = frame[l3] >> 4;
  let l4: number, proto: number, l4Len: number, pseudo = 0;
  if (v === 4) {
    const ihl = (frame[l3] & 15) * 4;
    const total = (frame[l3 + 2] << 8) | frame[l3 + 3];
    l4 = l3 + ihl;
    proto = frame[l3 + 9];
    l4Len = total - ihl;
    pseudo = refSum(frame, l3 + 12, l3 + 20);
  } else {
    l4 = l3 + 40;
    proto = frame[l3 + 6];
    l4Len = (frame[l3 + 4] << 8) | frame[l3 + 5];
    pseudo = refSum(frame, l3 + 8, l3 + 40);
  }
  pseudo += proto + l4Len;
  if (proto === 17 && frame[l4 + 6] === 0 && frame[l4 + 7] === 0) return false; // we always checksum
  return refSum(frame, l4, l4 + l4Len, pseudo) === 0xffff;
}

/** Whether an IPv4 header checksum verifies. */
export function ipv4ChecksumOk(frame: Uint8Array, l3: number): boolean {
  return refSum(frame, l3, l3 + (frame[l3] & 15) * 4) === 0xffff;
}

// ---------------------------------------------------------------------------
// Builder
// ---------------------------------------------------------------------------

/** What to build. */
export interface PacketSpec {
  ip?: 4 | 6;
  l4?: "tcp" | "udp";
  /** VLAN tags (TPIDs), outermost first. */
  vlans?: number[];
  payload?: Uint8Array;
  payloadLen?: number;
  /** IPv4 options bytes (multiple of 4). */
  ipOptions?: number;
  /** TCP options bytes (multiple of 4). */
  tcpOptions?: number;
  tcpFlags?: number;
  seq?: number;
  ipId?: number;
  /** "full": correct checksum; "partial": the pseudo-header sum (NEEDS_CSUM); "zero". */
  csum?: "full" | "partial" | "zero";
  seed?: number;
}

/** A built frame and where its parts are. */
export interface Built {
  frame: Uint8Array;
  l3: number;
  l4: number;
  payloadOff: number;
  payload: Uint8Array;
}

/** Deterministic bytes. */
export function prng(seed: number): () => number {
  let x = (seed >>> 0) || 0x9e3779b9;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

export function randomBytes(n: number, seed: number): Uint8Array {
  const r = prng(seed);
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = r() & 0xff;
  return b;
}

/** Builds Ethernet [+ VLAN tags] + IPv4/IPv6 + TCP/UDP + payload. */
export function buildPacket(spec: PacketSpec = {}): Built {
  const ip = spec.ip ?? 4;
  const l4p = spec.l4 ?? "tcp";
  const vlans = spec.vlans ?? [];
  const payload = spec.payload ?? randomBytes(spec.payloadLen ?? 100, spec.seed ?? 1);
  const ipOpt = spec.ipOptions ?? 0;
  const tcpOpt = spec.tcpOptions ?? 0;
  const l3 = 14 + 4 * vlans.length;
  const ipHl = ip === 4 ? 20 + ipOpt : 40;
  const l4 = l3 + ipHl;
  const l4Hl = l4p === "tcp" ? 20 + tcpOpt : 8;
  const payloadOff = l4 + l4Hl;
  const f = new Uint8Array(payloadOff + payload.length);
  const dv = new DataView(f.buffer);
  // Ethernet: dst 02:00:00:00:00:02, src 02:00:00:00:00:01.
  f.set([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
  let o = 12;
  for (const tpid of vlans) {
    dv.setUint16(o, tpid);
    dv.setUint16(o + 2, 100 + o); // PCP 0, VID
    o += 4;
  }
  dv.setUint16(o, ip === 4 ? 0x0800 : 0x86dd);
  const proto = l4p === "tcp" ? 6 : 17;
  const l4Len = f.length - l4;
  if (ip === 4) {
    f[l3] = 0x40 | (ipHl / 4);
    f[l3 + 1] = 0;
    dv.setUint16(l3 + 2, f.length - l3);
    dv.setUint16(l3 + 4, spec.ipId ?? 0x1234);
    dv.setUint16(l3 + 6, 0x4000); // DF
    f[l3 + 8] = 64;
    f[l3 + 9] = proto;
    f.set([10, 0, 0, 1, 10, 0, 0, 2], l3 + 12);
    for (let i = 0; i < ipOpt; i++) f[l3 + 20 + i] = 1; // NOPs
    dv.setUint16(l3 + 10, ~refSum(f, l3, l3 + ipHl) & 0xffff);
  } else {
    dv.setUint32(l3, 0x60012345);
    dv.setUint16(l3 + 4, f.length - l3 - 40);
    f[l3 + 6] = proto;
    f[l3 + 7] = 64;
    for (let i = 0; i < 16; i++) {
      f[l3 + 8 + i] = i === 0 ? 0xfd : i === 15 ? 1 : 0x11 * i;
      f[l3 + 24 + i] = i === 0 ? 0xfd : i === 15 ? 2 : 0x0f * i;
    }
  }
  if (l4p === "tcp") {
    dv.setUint16(l4, 40000);
    dv.setUint16(l4 + 2, 5201);
    dv.setUint32(l4 + 4, spec.seq ?? 0xfffff000);
    dv.setUint32(l4 + 8, 0x01020304);
    f[l4 + 12] = (l4Hl / 4) << 4;
    f[l4 + 13] = spec.tcpFlags ?? 0x18; // PSH ACK
    dv.setUint16(l4 + 14, 65000);
    for (let i = 0; i < tcpOpt; i++) f[l4 + 20 + i] = 1;
  } else {
    dv.setUint16(l4, 40000);
    dv.setUint16(l4 + 2, 5201);
    dv.setUint16(l4 + 4, l4Len);
  }
  f.set(payload, payloadOff);
  const csumAt = l4 + (l4p === "tcp" ? 16 : 6);
  const pseudo = (ip === 4 ? refSum(f, l3 + 12, l3 + 20) : refSum(f, l3 + 8, l3 + 40)) + proto +
    l4Len;
  const mode = spec.csum ?? "full";
  if (mode === "partial") {
    dv.setUint16(csumAt, refSum(new Uint8Array(0), 0, 0, pseudo));
  } else if (mode === "full") {
    let c = ~refSum(f, l4, f.length, pseudo) & 0xffff;
    if (c === 0) c = 0xffff;
    dv.setUint16(csumAt, c);
  }
  return { frame: f, l3, l4, payloadOff, payload };
}

// ---------------------------------------------------------------------------
// Scatter lists over an mmap'd arena (the address window covers it, so
// copySegments takes its real dataplane paths)
// ---------------------------------------------------------------------------

export const POISON = 0xa5;

/** Anonymous memory for scatter lists, poisoned, with a bump allocator. */
export class Arena {
  readonly u8: Uint8Array;
  readonly u32: Uint32Array;
  readonly address: number;
  #next = 0;

  constructor(readonly size = 4 << 20) {
    const m = mmap(-1, size, 0, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
    this.u8 = new Uint8Array(m.buffer);
    this.u32 = new Uint32Array(m.buffer);
    this.address = m.address;
    this.u8.fill(POISON);
    updateWindow([{ address: m.address, size }]);
  }

  /** Re-installs this arena's address window (another arena may have replaced it). */
  activate(): void {
    updateWindow([{ address: this.address, size: this.size }]);
  }

  /** Forgets every allocation and re-poisons. */
  clear(): void {
    this.u8.fill(POISON, 0, Math.min(this.size, this.#next + 32));
    this.#next = 0;
  }

  /** `len` bytes at an offset ≡ `phase` (mod 8), with a poisoned gap of ≥ 16 bytes before. */
  alloc(len: number, phase = 0): number {
    let o = this.#next + 16;
    o = o + ((phase - o) & 7);
    if (o + len + 16 > this.size) throw new Error("Cannot allocate: arena full");
    this.#next = o + len;
    return o;
  }

  /** A SegList of `lens` segments (phases cycle through `phases`), filled from `bytes` if given. */
  list(lens: number[], phases: number[] = [0], bytes?: Uint8Array): SegList {
    const l = new SegList(lens.length + 1);
    let at = 0;
    lens.forEach((n, i) => {
      const o = this.alloc(n, phases[i % phases.length]);
      if (bytes !== undefined) this.u8.set(bytes.subarray(at, at + n), o);
      at += n;
      l.push(this.u8, this.u32, o, n, this.address + o);
    });
    return l;
  }

  /** Whether every byte outside the segments of `lists` still holds the poison. */
  poisonIntact(lists: SegList[]): boolean {
    const inside = new Uint8Array(this.#next + 16);
    for (const l of lists) {
      for (let i = 0; i < l.count; i++) inside.fill(1, l.offs[i], l.offs[i] + l.lens[i]);
    }
    for (let i = 0; i < inside.length; i++) {
      if (inside[i] === 0 && this.u8[i] !== POISON) return false;
    }
    return true;
  }
}

/** The bytes of a SegList range, gathered (test side). */
export function gather(l: SegList, pos = 0, len = l.total - pos): Uint8Array {
  const out = new Uint8Array(len);
  for (let i = 0; i < len; i++) out[i] = l.byteAt(pos + i);
  return out;
}

/** Lengths that split `total` at the given cut points. */
export function cutsToLens(total: number, cuts: number[]): number[] {
  const pts = [0, ...cuts.filter((c) => c > 0 && c < total).sort((a, b) => a - b), total];
  const lens: number[] = [];
  for (let i = 1; i < pts.length; i++) if (pts[i] > pts[i - 1]) lens.push(pts[i] - pts[i - 1]);
  return lens;
}
