/**
 * Steps shared by the offload hostile tests (CHECKLIST items 34–40): the
 * attacker's packets and headers, receivers with guarded RX buffers, and
 * the two outcomes every crafted frame must have — refused under exactly
 * one drop counter and seen by nobody, or accepted and delivered intact.
 *
 * @module
 */
import { assert, assertEquals } from "@std/assert";
import type { CounterName } from "../../mod.ts";
import { ethFrame, macBytes, type VirtioNetDriver } from "../helpers/frontend.ts";
import {
  checkFrame,
  features,
  GSO_ECN,
  GSO_NONE,
  GSO_UDP_L4,
  GuardedRx,
  NEEDS_CSUM,
  NF,
  type Received,
  vnet,
  type VnetHeader,
} from "../helpers/offload_rx.ts";
import { buildPacket, type Built, type PacketSpec } from "../net/packets.ts";
import { A, BAD, BCAST, sleep, type Stage, WAIT_MS } from "./harness.ts";

/** The receivers' MACs (ports r1 and r2). */
export const R1 = "02:00:00:00:00:71";
export const R2 = "02:00:00:00:00:72";

/** Every receive offload: what a (and a TSO receiver) negotiates. */
export const GUEST_ALL = [
  NF.GUEST_CSUM,
  NF.GUEST_TSO4,
  NF.GUEST_TSO6,
  NF.GUEST_ECN,
  NF.GUEST_USO4,
  NF.GUEST_USO6,
];
/** Every transmit offload. */
export const HOST_ALL = [NF.CSUM, NF.HOST_TSO4, NF.HOST_TSO6, NF.HOST_ECN, NF.HOST_USO];

/** The drop counters a refused frame may land in: exactly one must move. */
export const DROPS: CounterName[] = [
  "dropOffloadType",
  "dropOffloadSize",
  "dropOffloadHdrLen",
  "dropOffloadCsum",
  "dropOffloadPacket",
  "dropBadHeader",
  "dropBadDescriptor",
  "dropTooBig",
  "dropRunt",
];

/** The header of a frame received without offload information (b's, via the pump). */
export const NO_HDR: VnetHeader = {
  flags: 0,
  gsoType: 0,
  hdrLen: 0,
  gsoSize: 0,
  csumStart: 0,
  csumOffset: 0,
  numBuffers: 0,
};

/** A packet from the attacker to `dst`. */
export function pkt(spec: PacketSpec, dst = BCAST): Built {
  const b = buildPacket({ csum: "partial", ...spec });
  b.frame.set(macBytes(dst), 0);
  b.frame.set(macBytes(BAD), 6);
  return b;
}

/** The header a well-behaved TSO / USO sender writes for `b` (Linux's virtio_net_hdr_from_skb). */
export function gso(b: Built, gsoType: number, gsoSize: number): Partial<VnetHeader> {
  const udp = (gsoType & ~GSO_ECN) === GSO_UDP_L4;
  return {
    flags: NEEDS_CSUM,
    gsoType,
    hdrLen: b.payloadOff,
    gsoSize,
    csumStart: b.l4,
    csumOffset: udp ? 6 : 16,
  };
}

/** A frame the attacker sent that got to a or b (its own learning/probe frames excepted). */
export function isAttack(f: Uint8Array): boolean {
  return f[11] === 0x66 && f[6] === 0x02 && !(f[12] === 0x88 && f[13] === 0xb5);
}

/** A good frame from the attacker still reaches a: the port kept working. */
export async function stillForwards(s: Stage, g: VirtioNetDriver, tag: number): Promise<void> {
  g.tx.takeUsed();
  g.send(ethFrame(A, BAD, 46, tag));
  await s.pump.extraAtA((f) => f[14] === tag && f[11] === 0x66 && f[12] === 0x88);
}

/** The attacker with the offload feature bits `bits`, its MAC learned. */
export async function attacker(s: Stage, bits: number[], memMiB = 64): Promise<VirtioNetDriver> {
  const g = await s.guest({ features: features(...bits), memMiB });
  g.fillRx(16);
  await stillForwards(s, g, 0x01);
  return g;
}

/** A receiver on per-case port `port` with MAC `mac`, guarded RX buffers, its MAC learned. */
export async function receiver(
  s: Stage,
  port: string,
  mac: string,
  bits: number[],
  mtu?: number,
): Promise<GuardedRx> {
  const g = await s.guest({ features: features(...bits), memMiB: 32, mtu }, port);
  const rx = new GuardedRx(g, 200);
  g.send(ethFrame(A, mac, 46, 0x70));
  const m = macBytes(mac);
  await s.pump.extraAtA((f) => f[11] === m[5] && f[14] === 0x70);
  return rx;
}

export async function counters(s: Stage, port: string): Promise<Record<CounterName, number>> {
  return { ...(await s.sp.stats())[port].counters };
}

/** Waits until counter `c` of `port` reaches `value` (or WAIT_MS pass); returns its value then. */
export async function reaches(
  s: Stage,
  port: string,
  c: CounterName,
  value: number,
): Promise<number> {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const now = (await counters(s, port))[c];
    if (now >= value || Date.now() > deadline) return now;
    await sleep(5);
  }
}

/**
 * Sends `frame` with header `h`; asserts that exactly `counter` (one more)
 * and no other drop counter moved on the attacker's port, that the frame
 * was not taken in, and that it reached neither a nor b.
 */
export async function refused(
  s: Stage,
  g: VirtioNetDriver,
  what: string,
  frame: Uint8Array,
  h: Partial<VnetHeader>,
  counter: CounterName,
): Promise<void> {
  const before = await counters(s, "bad");
  const fromA = s.pump.extraA.length, fromB = s.pump.extraB.length;
  g.tx.takeUsed();
  g.send(frame, { header: vnet(h) });
  const deadline = Date.now() + WAIT_MS;
  let now = before;
  while (now[counter] === before[counter] && Date.now() < deadline) {
    await sleep(5);
    now = await counters(s, "bad");
  }
  for (const c of DROPS) {
    assertEquals(now[c] - before[c], c === counter ? 1 : 0, `${what}: ${c}`);
  }
  assertEquals(now.rxPackets, before.rxPackets, `${what}: not taken in`);
  await sleep(10);
  const leaked = [...s.pump.extraA.slice(fromA), ...s.pump.extraB.slice(fromB)].filter(isAttack);
  assertEquals(leaked.length, 0, `${what}: reached a or b`);
}

/**
 * Sends a valid broadcast offload frame: a (every GUEST_* offload) gets it
 * whole and byte for byte, b (none) gets `segments` segments made in
 * software (or one completed frame). Proves the refused variants were
 * refused for what was changed in them.
 */
export async function accepted(
  s: Stage,
  g: VirtioNetDriver,
  b: Built,
  h: Partial<VnetHeader>,
  segments: number,
): Promise<void> {
  const bBefore = await counters(s, "b");
  const fromB = s.pump.extraB.length;
  g.tx.takeUsed();
  g.send(b.frame, { header: vnet(h) });
  const got = await s.pump.extraAtA((f) => f.length === b.frame.length && isAttack(f));
  assertEquals(got, b.frame, "a got the frame as it was sent");
  const key = h.gsoType ? "swSegments" : "swChecksummed";
  assertEquals(await reaches(s, "b", key, bBefore[key] + segments), bBefore[key] + segments);
  const atB = s.pump.extraB.slice(fromB).filter(isAttack);
  for (const f of atB) {
    const c = checkFrame({ hdr: NO_HDR, frame: f });
    assertEquals(c.problems, [], "b's copy verifies");
  }
}

/** Attacker packets to everyone: TCPv4, TCPv6, UDPv4 (payload bytes, spec overrides). */
export const tcp4 = (payloadLen = 3000, spec: PacketSpec = {}) => pkt({ payloadLen, ...spec });
export const tcp6 = (payloadLen = 3000, spec: PacketSpec = {}) =>
  pkt({ ip: 6, payloadLen, ...spec });
export const udp4 = (payloadLen = 3000) => pkt({ l4: "udp", payloadLen });

/** Copies `b` with byte edits (offset → value) applied. */
export function edit(b: Built, edits: [number, number][]): Uint8Array {
  const f = b.frame.slice();
  for (const [o, v] of edits) f[o] = v;
  return f;
}

/** Segments as a receiver got them, checked, and the payload they carry in sequence order. */
export function checkSegments(
  got: Received[],
  sent: Built,
  mss: number,
  maxFrame: number,
  partial: boolean,
): void {
  const n = Math.ceil(sent.payload.length / mss);
  assertEquals(got.length, n, "segment count");
  const first = checkFrame({ hdr: NO_HDR, frame: sent.frame });
  const out = new Uint8Array(sent.payload.length);
  const tcp = sent.frame[sent.l3 + (sent.frame[sent.l3] >> 4 === 4 ? 9 : 6)] === 6;
  got.forEach((r, k) => {
    assert(r.frame.length <= maxFrame, `segment ${k}: ${r.frame.length} > ${maxFrame}`);
    assertEquals(r.hdr.gsoType, GSO_NONE, "segments are not GSO");
    assertEquals(r.hdr.flags, partial ? NEEDS_CSUM : 0, "flags");
    const c = checkFrame(r);
    assertEquals(c.problems, [], `segment ${k}`);
    assertEquals(c.payloadOff, sent.payloadOff, "headers as long as the sender's");
    let at = k * mss;
    if (tcp) {
      at = (c.seq - first.seq) >>> 0;
      assertEquals(at, k * mss, "sequence number");
      const last = k === n - 1;
      const f0 = sent.frame[sent.l4 + 13];
      const want = (f0 & ~(last ? 0 : 0x09)) & ~(k > 0 ? 0x80 : 0);
      assertEquals(c.tcpFlags, want, `segment ${k}'s TCP flags`);
    }
    if (sent.frame[sent.l3] >> 4 === 4) assertEquals(c.ipId, (first.ipId + k) & 0xffff, "IP id");
    out.set(c.payload, at);
  });
  assertEquals(out, sent.payload, "the payload, concatenated, is the sender's");
}

/** Puts a 12-byte header and `frame` in the attacker's memory; returns its gpa (16-aligned). */
export function place(g: VirtioNetDriver, frame: Uint8Array, header: Uint8Array): number {
  const gpa = g.mem.alloc(12 + frame.length, 16);
  g.mem.bytes.set(header, gpa);
  g.mem.bytes.set(frame, gpa + 12);
  return gpa;
}

/** A little-endian u32 of guest memory at `gpa`. */
export const word = (g: VirtioNetDriver, gpa: number) => g.mem.view.getUint32(gpa, true);
