/**
 * pcapng blocks (draft-ietf-opsawg-pcapng): a Section Header Block, one
 * Interface Description Block per captured port (link type Ethernet), and
 * an Enhanced Packet Block per frame, little-endian. Each EPB carries:
 *
 * - `epb_flags` (option 2): bits 0–1 are the direction (§4.3.1: 01 inbound,
 *   10 outbound). Inbound is what the switch received from the port (the
 *   guest's transmit), outbound what it sent to the port, as `tcpdump`
 *   sees a host interface.
 * - `opt_comment` (option 1): the frame's virtio-net header (VIRTIO 1.2
 *   §5.1.6), as `virtio-net flags=0x01 gso_type=tcpv4 gso_size=1448
 *   hdr_len=66 csum_start=34 csum_offset=16` (gso_type also `none`,
 *   `udp`, `tcpv6`, `udp_l4`, with `+ecn` when bit 0x80 is set).
 *
 * @module
 */

const enc = new TextEncoder();

/** Link type 1: Ethernet (LINKTYPE_ETHERNET). */
export const LINKTYPE_ETHERNET = 1;
/** EPB direction values in epb_flags bits 0–1. */
export const EPB_INBOUND = 1;
export const EPB_OUTBOUND = 2;

/** gso_type names (§5.1.6: VIRTIO_NET_HDR_GSO_*). */
export function gsoTypeName(t: number): string {
  const base = t & 0x7f;
  const names: Record<number, string> = {
    0: "none",
    1: "tcpv4",
    3: "udp",
    4: "tcpv6",
    5: "udp_l4",
  };
  return (names[base] ?? `${base}`) + ((t & 0x80) !== 0 ? "+ecn" : "");
}

/** The comment text recorded for a virtio-net header. */
export function vnetComment(h: {
  flags: number;
  gsoType: number;
  gsoSize: number;
  hdrLen: number;
  csumStart: number;
  csumOffset: number;
}): string {
  return `virtio-net flags=0x${h.flags.toString(16).padStart(2, "0")} gso_type=${
    gsoTypeName(h.gsoType)
  } gso_size=${h.gsoSize} hdr_len=${h.hdrLen} csum_start=${h.csumStart} csum_offset=${h.csumOffset}`;
}

function pad4(n: number): number {
  return (n + 3) & ~3;
}

/** Options as (code, bytes) pairs, with opt_endofopt. */
function options(opts: [number, Uint8Array][]): Uint8Array {
  if (opts.length === 0) return new Uint8Array(0);
  let size = 4;
  for (const [, v] of opts) size += 4 + pad4(v.length);
  const out = new Uint8Array(size);
  const dv = new DataView(out.buffer);
  let o = 0;
  for (const [code, v] of opts) {
    dv.setUint16(o, code, true);
    dv.setUint16(o + 2, v.length, true);
    out.set(v, o + 4);
    o += 4 + pad4(v.length);
  }
  return out; // the last 4 bytes stay zero: opt_endofopt
}

function block(type: number, body: Uint8Array): Uint8Array {
  const total = 12 + body.length;
  const out = new Uint8Array(total);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, type, true);
  dv.setUint32(4, total, true);
  out.set(body, 8);
  dv.setUint32(total - 4, total, true);
  return out;
}

function u32(v: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v, true);
  return b;
}

/** Section Header Block (type 0x0A0D0D0A), with shb_userappl. */
export function sectionHeader(app = "vswitch"): Uint8Array {
  const opts = options([[4, enc.encode(app)]]);
  const body = new Uint8Array(16 + opts.length);
  const dv = new DataView(body.buffer);
  dv.setUint32(0, 0x1a2b3c4d, true); // byte-order magic
  dv.setUint16(4, 1, true); // version 1.0
  dv.setUint16(6, 0, true);
  dv.setBigInt64(8, -1n, true); // section length unknown
  body.set(opts, 16);
  return block(0x0a0d0d0a, body);
}

/** Interface Description Block (type 1): Ethernet, microsecond timestamps. */
export function interfaceDescription(name: string, description: string, snaplen = 0): Uint8Array {
  const opts = options([
    [2, enc.encode(name)], // if_name
    [3, enc.encode(description)], // if_description
    [9, new Uint8Array([6])], // if_tsresol: 10^-6 s
  ]);
  const body = new Uint8Array(8 + opts.length);
  const dv = new DataView(body.buffer);
  dv.setUint16(0, LINKTYPE_ETHERNET, true);
  dv.setUint32(4, snaplen, true);
  body.set(opts, 8);
  return block(1, body);
}

/** Enhanced Packet Block (type 6) with epb_flags and an optional comment. */
export function enhancedPacket(
  iface: number,
  timestampUs: number,
  data: Uint8Array,
  origLen: number,
  direction: number,
  comment?: string,
): Uint8Array {
  const opts: [number, Uint8Array][] = [[2, u32(direction & 3)]];
  if (comment !== undefined) opts.unshift([1, enc.encode(comment)]);
  const o = options(opts);
  const body = new Uint8Array(20 + pad4(data.length) + o.length);
  const dv = new DataView(body.buffer);
  dv.setUint32(0, iface, true);
  dv.setUint32(4, Math.floor(timestampUs / 0x1_0000_0000), true);
  dv.setUint32(8, timestampUs % 0x1_0000_0000, true);
  dv.setUint32(12, data.length, true);
  dv.setUint32(16, origLen, true);
  body.set(data, 20);
  body.set(o, 20 + pad4(data.length));
  return block(6, body);
}
