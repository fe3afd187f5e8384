/**
 * The parse stage of the pipeline: one frame's virtio-net header and MACs
 * into its record, and, for frames that ask for an offload, the L2–L4
 * headers copied and validated (CHECKLIST items 22–25 and 34–37). Every
 * value is read from guest memory once; what fails is counted, never
 * thrown.
 *
 * Plain frames (flags and gso_type both 0, what every guest without
 * offloads sends) cost a 10-byte header read and a 12-byte MAC read: the
 * L3/L4 parse runs only for frames that asked for checksum or
 * segmentation.
 *
 * @module
 */

import {
  ETH_HLEN,
  VIRTIO_NET_HDR_F_DATA_VALID,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
} from "../virtio/net_header.ts";
import { captureHeaders, parsePacket } from "../net/packet.ts";
import { OffloadError, validateOffload } from "../net/offload.ts";
import { C } from "./counters.ts";
import type { Frame } from "./frame.ts";

/** parseFrame's answer when the frame may go on. */
export const PARSE_OK = -1;

/** The counter for each OffloadError code (index: code). */
const REASON_COUNTER = new Int32Array(16).fill(C.dropBadHeader);
REASON_COUNTER[OffloadError.GSO_TYPE] = C.dropOffloadType;
REASON_COUNTER[OffloadError.GSO_SIZE] = C.dropOffloadSize;
REASON_COUNTER[OffloadError.HDR_LEN] = C.dropOffloadHdrLen;
REASON_COUNTER[OffloadError.CSUM] = C.dropOffloadCsum;
REASON_COUNTER[OffloadError.PACKET] = C.dropOffloadPacket;

/**
 * Parses frame `f` (its chain in `f.segs`, `f.pos` = the ingress header
 * length, `f.len` = the Ethernet frame length). `caps` is what the ingress
 * port negotiated (OFFLOAD_* bits), `maxFrame` its largest plain frame,
 * `fromKernel` true for a TAP (whose kernel may set DATA_VALID, §5.1.6.4;
 * a driver must not, §5.1.6.2.1, so a guest's is ignored). Returns
 * PARSE_OK, or the counter slot the drop is counted under.
 */
export function parseFrame(f: Frame, caps: number, maxFrame: number, fromKernel: boolean): number {
  const len = f.len;
  if (len < ETH_HLEN) return C.dropRunt; // includes chains no longer than the header (item 22)
  const h = f.hdr;
  const segs = f.segs;
  readMacs(f);
  f.dataValid = false;
  // Fast path for plain frames (what every guest without offloads sends): flags and
  // gso_type are both 0, so the other eight header bytes mean nothing and are not read.
  // Anything else reads the whole header once into `h`, and only `h` is used from then
  // on, so a guest rewriting its header between the two loads gains nothing (item 24).
  if (segs.lens[0] >= 2) {
    const v = segs.views[0], o = segs.offs[0];
    if ((v[o] | v[o + 1]) === 0) {
      h.clear();
      f.offload = false;
      return len > maxFrame ? C.dropTooBig : PARSE_OK;
    }
  }
  return parseHeader(f, caps, maxFrame, fromKernel);
}

// The rest of parseFrame, for a frame whose header is not all zero: apart so
// that the plain frame's parse stays small enough to inline (v8_flags.ts).
function parseHeader(f: Frame, caps: number, maxFrame: number, fromKernel: boolean): number {
  const len = f.len;
  const h = f.hdr;
  h.read(f.segs, 0, f.pos);
  let flags = h.flags;
  if (fromKernel && (flags & VIRTIO_NET_HDR_F_DATA_VALID) !== 0) {
    f.dataValid = true;
    flags &= ~VIRTIO_NET_HDR_F_DATA_VALID;
    h.flags = flags;
  }
  if ((flags | h.gsoType) === 0) {
    f.offload = false;
    return len > maxFrame ? C.dropTooBig : PARSE_OK;
  }
  // Flags a driver must not set (DATA_VALID, RSC_INFO: §5.1.6.2.1), or an
  // offload asked of a port that negotiated none (every one needs CSUM, §5.1.3.1).
  if ((flags & ~VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0 || caps === 0) return C.dropBadHeader;
  // A GSO frame is bounded by its IP length (checked by the parser), not the MTU;
  // a checksum-only frame is a plain frame in size.
  if (h.gsoType === 0 && len > maxFrame) return C.dropTooBig;
  f.headerBytes = captureHeaders(f.segs, f.pos, len, f.headers);
  const bad = parsePacket(f.headers, f.headerBytes, len, f.pkt);
  if (bad !== 0 && h.gsoType !== 0) return C.dropOffloadPacket;
  const reason = validateOffload(h, f.pkt, len, caps);
  if (reason !== 0) return REASON_COUNTER[reason & 15];
  f.offload = true;
  return PARSE_OK;
}

/** Destination and source MAC into the record, read once. */
function readMacs(f: Frame): void {
  const list = f.segs;
  const pos = f.pos;
  let b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11;
  if (list.lens[0] - pos >= 12) {
    const v = list.views[0];
    const o = list.offs[0] + pos;
    b0 = v[o], b1 = v[o + 1], b2 = v[o + 2], b3 = v[o + 3], b4 = v[o + 4], b5 = v[o + 5];
    b6 = v[o + 6], b7 = v[o + 7], b8 = v[o + 8], b9 = v[o + 9], b10 = v[o + 10];
    b11 = v[o + 11];
  } else {
    b0 = list.byteAt(pos), b1 = list.byteAt(pos + 1), b2 = list.byteAt(pos + 2);
    b3 = list.byteAt(pos + 3), b4 = list.byteAt(pos + 4), b5 = list.byteAt(pos + 5);
    b6 = list.byteAt(pos + 6), b7 = list.byteAt(pos + 7), b8 = list.byteAt(pos + 8);
    b9 = list.byteAt(pos + 9), b10 = list.byteAt(pos + 10), b11 = list.byteAt(pos + 11);
  }
  f.dstHi = (b0 << 8) | b1;
  f.dstLo = ((b2 << 24) | (b3 << 16) | (b4 << 8) | b5) >>> 0;
  f.srcHi = (b6 << 8) | b7;
  f.srcLo = ((b8 << 24) | (b9 << 16) | (b10 << 8) | b11) >>> 0;
}
