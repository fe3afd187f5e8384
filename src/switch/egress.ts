/**
 * The deliver stage: one frame into one egress port, with one decision per
 * port (issue 10). A port that negotiated what the frame asks for (a
 * guest's GUEST_CSUM / GUEST_TSO4/6 / GUEST_ECN / GUEST_USO4/6, the TAP's
 * kernel) gets it as it is, with a virtio-net header rebuilt from the
 * validated values; any other port gets the software fallback:
 *
 * - NEEDS_CSUM only: the frame is copied, then its L4 checksum is
 *   completed in the destination's buffers (VIRTIO 1.2 §5.1.6.2);
 * - GSO: the frame is cut into segments, each written straight into the
 *   destination's buffers (headers rebuilt from the validated copy,
 *   payload copied once from the source buffers). An egress with
 *   GUEST_CSUM gets the segments with NEEDS_CSUM (only the pseudo-header
 *   sum is computed), one without it gets full checksums.
 *
 * A flood calls this once per port, so each port gets what it can take.
 * How bytes reach a port is its driver's (src/switch/drivers/): a guest's
 * RX chains (mergeable, or one big chain for Linux's "big packets" mode),
 * or one TAP `writev` whose iovecs point at our header and the source
 * buffers. This stage only decides and writes. Nothing here allocates per
 * frame.
 *
 * @module
 */

import { copySegments } from "../virtio/chain.ts";
import { VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM } from "../virtio/net_header.ts";
import { EgressAction, egressAction, OFFLOAD_CSUM } from "../net/offload.ts";
import {
  completeChecksum,
  segmentCount,
  segmentFrameLen,
  writeBytes,
  writeSegment,
} from "../net/segment.ts";
import { C } from "./counters.ts";
import type { DpPort } from "./dp_port.ts";
import type { Frame } from "./frame.ts";
import { ACQUIRE_HELD } from "./drivers/vhost_net.ts";
import { TAP_SEG_SIZE } from "./drivers/tap.ts";

/** TCP: the checksum field's offset in its header; UDP's. */
const TCP_CSUM_OFFSET = 16;
const UDP_CSUM_OFFSET = 6;
const IPPROTO_TCP = 6;

/** Delivers frames to ports. */
export class Egress {
  readonly #c: Float64Array;

  constructor(counters: Float64Array) {
    this.#c = counters;
  }

  /**
   * Delivers `f` to `q`: as it is when `q` can take it, else through the
   * software fallback. Counts every outcome on `q`. With `holdOk`, a guest
   * with no RX buffer for the frame makes it wait (see engine.ts, HOLD_MS)
   * instead of dropping it: then nothing of it was written or counted, and
   * the answer is true (held). The state goes in and out as an argument and
   * the answer, not as fields: stores of every frame to objects this hot
   * measured dearer than they look (engine.ts #unicast).
   */
  deliver(q: DpPort, f: Frame, holdOk: boolean): boolean {
    const len = f.len;
    if (!f.offload) {
      if (len > q.maxFrame) {
        this.#c[q.cbase + C.dropTooBig]++;
        return false;
      }
      // The kernel's word that the checksum is good goes on to guests that may hear it.
      const flags = f.dataValid && (q.egressCaps & OFFLOAD_CSUM) !== 0
        ? VIRTIO_NET_HDR_F_DATA_VALID
        : 0;
      return this.#whole(q, f, flags, 0, 0, 0, 0, 0, holdOk);
    }
    return this.#offloaded(q, f, holdOk);
  }

  // A frame that asked for an offload. Apart from `deliver` so that the plain
  // frame's path stays small enough for TurboFan to inline (v8_flags.ts).
  #offloaded(q: DpPort, f: Frame, holdOk: boolean): boolean {
    const len = f.len;
    const h = f.hdr;
    const action = egressAction(h, f.pkt, q.egressCaps);
    if (action === EgressAction.SEGMENT) return this.#segment(q, f, holdOk);
    // A checksum-only frame is a plain frame in size; a GSO frame passed whole is bounded
    // by its IP length (the parser checked it) and its segments by gso_size.
    if (h.gsoType === 0 && len > q.maxFrame) {
      this.#c[q.cbase + C.dropTooBig]++;
      return false;
    }
    if (action === EgressAction.PASS) {
      // Rebuilt from validated values (item 39): flags are NEEDS_CSUM only (ingress.ts), and
      // hdr_len, a hint the receiver may act on, is the exact L2–L4 length for GSO, else 0;
      // gso_size means nothing without a GSO type and goes out as 0 (as passHeader).
      const gso = h.gsoType !== 0;
      const hdrLen = gso ? f.pkt.payloadOff : 0;
      const gsoSize = gso ? h.gsoSize : 0;
      return this.#whole(
        q,
        f,
        h.flags,
        h.gsoType,
        hdrLen,
        gsoSize,
        h.csumStart,
        h.csumOffset,
        holdOk,
      );
    }
    return this.#completed(q, f, holdOk);
  }

  // The frame whole, with the header values given (validated or our own). A GSO frame's
  // L2–L4 headers (`hdrLen` bytes) come from the validated copy, not from the guest's
  // buffers again: the receiver or the TAP's kernel segments by them, and the guest may
  // have rewritten them since they were checked (items 24, 39, 40).
  #whole(
    q: DpPort,
    f: Frame,
    flags: number,
    gsoType: number,
    hdrLen: number,
    gsoSize: number,
    csumStart: number,
    csumOffset: number,
    holdOk: boolean,
  ): boolean {
    const len = f.len;
    const head = gsoType !== 0 ? hdrLen : 0;
    // The virtio-net header as three little-endian words (§5.1.6), packed once for either kind.
    const w0 = flags | (gsoType << 8) | (hdrLen << 16);
    const w1 = gsoSize | (csumStart << 16);
    const vq = q.vq;
    if (vq !== null) {
      const hl = vq.hdrLen;
      const need = hl + len;
      const chains = vq.acquire(need, holdOk);
      if (chains < 0) return chains === ACQUIRE_HELD;
      const dst = vq.dst;
      vq.writeHeader(chains, w0, w1, csumOffset);
      if (head > 0) writeBytes(dst, hl, f.headers, head);
      copySegments(dst, hl + head, f.segs, f.pos + head, len - head);
      vq.commit(chains, need);
    } else if (
      q.tap === null ||
      !q.tap.write(f.segs, f.pos, len, w0, w1, csumOffset, head > 0 ? f.headers : null, head)
    ) {
      return false;
    }
    this.#c[q.cbase + C.txPackets]++;
    this.#c[q.cbase + C.txBytes] += len;
    return false;
  }

  // NEEDS_CSUM for a port without checksum offload: copy, then complete in its buffers.
  #completed(q: DpPort, f: Frame, holdOk: boolean): boolean {
    const len = f.len, h = f.hdr;
    const vq = q.vq, tap = q.tap;
    if (vq !== null) {
      const need = vq.hdrLen + len;
      const chains = vq.acquire(need, holdOk);
      if (chains < 0) return chains === ACQUIRE_HELD;
      vq.writeHeader(chains, 0, 0, 0);
      copySegments(vq.dst, vq.hdrLen, f.segs, f.pos, len);
      completeChecksum(vq.dst, vq.hdrLen, len, h.csumStart, h.csumOffset);
      vq.commit(chains, need);
    } else if (tap !== null) {
      if (len > TAP_SEG_SIZE) {
        this.#c[q.cbase + C.dropTooBig]++;
        return false;
      }
      const seg = tap.segBuffer(len);
      copySegments(seg, 0, f.segs, f.pos, len);
      completeChecksum(seg, 0, len, h.csumStart, h.csumOffset);
      if (!tap.write(seg, 0, len, 0, 0, 0, null, 0)) return false;
    } else {
      return false;
    }
    this.#c[q.cbase + C.swChecksummed]++;
    this.#c[q.cbase + C.txPackets]++;
    this.#c[q.cbase + C.txBytes] += len;
    return false;
  }

  // GSO for a port that cannot take it: segments straight into its buffers.
  #segment(q: DpPort, f: Frame, holdOk: boolean): boolean {
    const c = this.#c, h = f.hdr, pkt = f.pkt, len = f.len;
    const vq = q.vq, tap = q.tap;
    const count = segmentCount(h, pkt, len);
    // The first segment is the longest: if it fits the egress MTU, all do (item 38).
    if (count <= 0 || segmentFrameLen(h, pkt, len, 0) > q.maxFrame) {
      c[q.cbase + C.dropTooBig]++;
      return false;
    }
    // Each segment takes at least one RX chain: with fewer available, wait for
    // the guest (engine.ts HOLD_MS) rather than deliver half a frame and drop the rest.
    if (holdOk && vq !== null && !vq.hasChains(count)) return true;
    const partial = (q.egressCaps & OFFLOAD_CSUM) !== 0;
    const flags = partial ? VIRTIO_NET_HDR_F_NEEDS_CSUM : 0;
    const cs = partial ? pkt.l4Off : 0;
    const co = partial ? (pkt.l4Proto === IPPROTO_TCP ? TCP_CSUM_OFFSET : UDP_CSUM_OFFSET) : 0;
    const w1 = cs << 16;
    c[q.cbase + C.swSegmented]++;
    for (let k = 0; k < count; k++) {
      const segLen = segmentFrameLen(h, pkt, len, k);
      let n: number;
      if (vq !== null) {
        const hl = vq.hdrLen;
        // A hold is possible only before the frame's first chain.
        const chains = vq.acquire(hl + segLen, holdOk && k === 0);
        if (chains === ACQUIRE_HELD) return true;
        if (chains < 0) return false; // counted; the rest of the frame is lost with it
        vq.writeHeader(chains, flags, w1, co);
        n = writeSegment(h, pkt, f.headers, f.segs, f.pos, len, k, vq.dst, hl, !partial);
        vq.commit(chains, hl + n);
      } else if (tap !== null) {
        const seg = tap.segBuffer(segLen);
        n = writeSegment(h, pkt, f.headers, f.segs, f.pos, len, k, seg, 0, !partial);
        if (!tap.write(seg, 0, n, flags, w1, co, null, 0)) return false;
      } else {
        return false;
      }
      c[q.cbase + C.swSegments]++;
      c[q.cbase + C.txPackets]++;
      c[q.cbase + C.txBytes] += n;
    }
    return false;
  }
}
