/**
 * Test-side tools for offload tests over the TypeScript driver: feature
 * sets, virtio-net headers (VIRTIO 1.2 §5.1.6) written byte by byte, a
 * receiver whose RX buffers sit between poisoned guard bytes (to prove the
 * switch wrote nothing outside the buffers it returned, CHECKLIST 38), and
 * an independent check of a received TCP/UDP frame: IP lengths, IPv4
 * header checksum, L4 checksum (completed here first when the frame came
 * with NEEDS_CSUM). Independent of src/: it checks the switch.
 *
 * @module
 */

import { F, type VirtioNetDriver } from "./frontend.ts";
import { ipv4ChecksumOk, l4ChecksumOk, refSum } from "../net/packets.ts";

/** virtio-net offload feature bits (VIRTIO 1.2 §5.1.3). */
export const NF = {
  CSUM: 0,
  GUEST_CSUM: 1,
  GUEST_TSO4: 7,
  GUEST_TSO6: 8,
  GUEST_ECN: 9,
  HOST_TSO4: 11,
  HOST_TSO6: 12,
  HOST_ECN: 13,
  GUEST_USO4: 54,
  GUEST_USO6: 55,
  HOST_USO: 56,
} as const;

/** Header flags and GSO types (§5.1.6). */
export const NEEDS_CSUM = 1, DATA_VALID = 2, RSC_INFO = 4;
export const GSO_NONE = 0, GSO_TCPV4 = 1, GSO_UDP = 3, GSO_TCPV6 = 4, GSO_UDP_L4 = 5;
export const GSO_ECN = 0x80;

/** The driver's usual features plus the offload bits `bits` (for DriverOptions.features). */
export function features(...bits: number[]): bigint {
  let f = (1n << BigInt(F.VERSION_1)) | (1n << BigInt(F.INDIRECT_DESC)) |
    (1n << BigInt(F.EVENT_IDX)) | (1n << BigInt(F.PROTOCOL_FEATURES)) |
    (1n << BigInt(F.MRG_RXBUF));
  for (const b of bits) f |= 1n << BigInt(b);
  return f;
}

/** A virtio-net header's fields. */
export interface VnetHeader {
  flags: number;
  gsoType: number;
  hdrLen: number;
  gsoSize: number;
  csumStart: number;
  csumOffset: number;
  numBuffers: number;
}

/** The 12-byte header with these fields (little-endian, §5.1.6). */
export function vnet(h: Partial<VnetHeader>): Uint8Array {
  const b = new Uint8Array(12);
  const v = new DataView(b.buffer);
  b[0] = h.flags ?? 0;
  b[1] = h.gsoType ?? 0;
  v.setUint16(2, h.hdrLen ?? 0, true);
  v.setUint16(4, h.gsoSize ?? 0, true);
  v.setUint16(6, h.csumStart ?? 0, true);
  v.setUint16(8, h.csumOffset ?? 0, true);
  v.setUint16(10, h.numBuffers ?? 0, true);
  return b;
}

function readVnet(b: Uint8Array): VnetHeader {
  const v = new DataView(b.buffer, b.byteOffset, 12);
  return {
    flags: b[0],
    gsoType: b[1],
    hdrLen: v.getUint16(2, true),
    gsoSize: v.getUint16(4, true),
    csumStart: v.getUint16(6, true),
    csumOffset: v.getUint16(8, true),
    numBuffers: v.getUint16(10, true),
  };
}

/** One frame as a receiver got it: its virtio-net header and its bytes. */
export interface Received {
  hdr: VnetHeader;
  frame: Uint8Array;
}

/** Guard and buffer fill: anything else there was written by the switch. */
const POISON = 0xc5;

/**
 * RX buffers of a driver, each between two poisoned guards, taken back
 * with their headers (mergeable buffers joined). Any byte changed in a
 * guard, or in a buffer past the length the switch reported used, is a
 * write outside what the switch returned: recorded in `violations`.
 * Uses the driver's RX queue only (not `fillRx` / `receive`).
 */
export class GuardedRx {
  readonly violations: string[] = [];
  readonly #bufs = new Map<number, number>(); // head → gpa
  #pending: Uint8Array[] = [];
  #expect = 0;

  constructor(
    readonly g: VirtioNetDriver,
    count: number,
    readonly size = 2048,
    readonly guard = 64,
  ) {
    for (let i = 0; i < count; i++) {
      const base = g.mem.alloc(size + 2 * guard, 64);
      this.#post(base + guard);
    }
    g.rx.notify();
  }

  #post(gpa: number): void {
    this.g.mem.bytes.fill(POISON, gpa - this.guard, gpa + this.size + this.guard);
    const head = this.g.rx.add([{ gpa, len: this.size, writable: true }]);
    this.#bufs.set(head, gpa);
  }

  #checkPoison(gpa: number, len: number): void {
    const b = this.g.mem.bytes;
    const ranges: [number, number, string][] = [
      [gpa - this.guard, gpa, "the guard before"],
      [gpa + len, gpa + this.size, "the unused rest of"],
      [gpa + this.size, gpa + this.size + this.guard, "the guard after"],
    ];
    for (const [from, to, what] of ranges) {
      for (let i = from; i < to; i++) {
        if (b[i] !== POISON) {
          this.violations.push(`${what} the buffer at ${gpa} (used ${len}) changed at ${i - gpa}`);
          break;
        }
      }
    }
  }

  /** Frames completed since the last call; their buffers are checked, re-poisoned, re-posted. */
  take(): Received[] {
    const out: Received[] = [];
    for (const { id, len } of this.g.rx.takeUsed()) {
      const gpa = this.#bufs.get(id);
      if (gpa === undefined) {
        this.violations.push(`used entry for head ${id}, which is no RX buffer of ours`);
        continue;
      }
      this.#bufs.delete(id);
      if (len > this.size) this.violations.push(`used length ${len} > buffer ${this.size}`);
      this.#checkPoison(gpa, Math.min(len, this.size));
      const bytes = this.g.mem.bytes.slice(gpa, gpa + Math.min(len, this.size));
      if (this.#expect === 0) {
        this.#expect = this.g.mergeable ? new DataView(bytes.buffer).getUint16(10, true) : 1;
        if (this.#expect === 0) {
          this.violations.push("num_buffers 0");
          this.#expect = 1;
        }
        this.#pending = [bytes];
      } else {
        this.#pending.push(bytes);
      }
      if (--this.#expect === 0) {
        const all = new Uint8Array(this.#pending.reduce((s, p) => s + p.length, 0));
        let o = 0;
        for (const p of this.#pending) (all.set(p, o), (o += p.length));
        out.push({ hdr: readVnet(all), frame: all.slice(12) });
      }
      this.#post(gpa);
    }
    this.g.rx.notify();
    return out;
  }

  /**
   * Collects frames until `n` arrived or the timeout passed (generous: only
   * a switch that never delivers should fail); returns what arrived.
   */
  async collect(n: number, timeoutMs = 20_000): Promise<Received[]> {
    const out: Received[] = [];
    const deadline = Date.now() + timeoutMs;
    while (out.length < n && Date.now() < deadline) {
      out.push(...this.take());
      if (out.length < n) await new Promise((r) => setTimeout(r, 3));
    }
    return out;
  }
}

/** What `checkFrame` found in one received TCP/UDP frame. */
export interface FrameCheck {
  /** Problems (empty: the frame is consistent). */
  problems: string[];
  l3: number;
  l4: number;
  payloadOff: number;
  /** TCP sequence number (0 for UDP). */
  seq: number;
  tcpFlags: number;
  ipId: number;
  payload: Uint8Array;
}

/**
 * Checks a received frame the way a receiver's stack would: IP version,
 * lengths agreeing with the frame, IPv4 header checksum, and the L4
 * checksum — with NEEDS_CSUM, csum_start / csum_offset must sit at the L4
 * checksum field, which this completes (on a copy) before verifying.
 */
export function checkFrame(r: Received): FrameCheck {
  const f = r.frame.slice();
  const p: string[] = [];
  const v = new DataView(f.buffer);
  let l3 = 14;
  while (l3 + 4 <= f.length && (v.getUint16(l3 - 2) === 0x8100 || v.getUint16(l3 - 2) === 0x88a8)) {
    l3 += 4;
  }
  const type = v.getUint16(l3 - 2);
  const out: FrameCheck = {
    problems: p,
    l3,
    l4: 0,
    payloadOff: 0,
    seq: 0,
    tcpFlags: 0,
    ipId: 0,
    payload: new Uint8Array(0),
  };
  let l4: number, proto: number;
  if (type === 0x0800) {
    const ihl = (f[l3] & 15) * 4;
    if (f[l3] >> 4 !== 4 || ihl < 20) p.push("bad IPv4 version/IHL");
    if (v.getUint16(l3 + 2) !== f.length - l3) p.push("IPv4 total length ≠ frame");
    if (!ipv4ChecksumOk(f, l3)) p.push("IPv4 header checksum");
    if ((v.getUint16(l3 + 6) & 0x3fff) !== 0) p.push("a fragment");
    out.ipId = v.getUint16(l3 + 4);
    l4 = l3 + ihl;
    proto = f[l3 + 9];
  } else if (type === 0x86dd) {
    if (f[l3] >> 4 !== 6) p.push("bad IPv6 version");
    if (v.getUint16(l3 + 4) !== f.length - l3 - 40) p.push("IPv6 payload length ≠ frame");
    l4 = l3 + 40;
    proto = f[l3 + 6];
  } else {
    p.push(`EtherType ${type.toString(16)}`);
    return out;
  }
  out.l4 = l4;
  let hl: number, csumOff: number;
  if (proto === 6) {
    hl = (f[l4 + 12] >> 4) * 4;
    if (hl < 20 || l4 + hl > f.length) p.push("TCP data offset");
    out.seq = v.getUint32(l4 + 4);
    out.tcpFlags = f[l4 + 13];
    csumOff = 16;
  } else if (proto === 17) {
    hl = 8;
    if (v.getUint16(l4 + 4) !== f.length - l4) p.push("UDP length ≠ frame");
    csumOff = 6;
  } else {
    p.push(`protocol ${proto}`);
    return out;
  }
  out.payloadOff = l4 + hl;
  out.payload = f.slice(l4 + hl);
  if (r.hdr.flags & NEEDS_CSUM) {
    if (r.hdr.csumStart !== l4 || r.hdr.csumOffset !== csumOff) {
      p.push(`NEEDS_CSUM at ${r.hdr.csumStart}+${r.hdr.csumOffset}, not ${l4}+${csumOff}`);
      return out;
    }
    // §5.1.6.2: the field holds the pseudo-header sum; the sum from csum_start goes there.
    let c = ~refSum(f, l4, f.length) & 0xffff;
    if (proto === 17 && c === 0) c = 0xffff;
    v.setUint16(l4 + csumOff, c);
  }
  if (!l4ChecksumOk(f, l3)) p.push("L4 checksum");
  return out;
}
