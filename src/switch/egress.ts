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
 * Guests get frames in their RX buffers (mergeable, or one big chain for
 * Linux's "big packets" mode); a TAP gets one `writev` whose iovecs point
 * at our header and the source buffers. Nothing here allocates per frame.
 *
 * @module
 */

import { libc } from "../../ffi/libc.ts";
import { IovecArray } from "../../ffi/io.ts";
import { eventfdSignal } from "../../ffi/eventfd.ts";
import type { Mapping } from "../../ffi/memory.ts";
import { copySegments, SegList, wordIndex } from "../virtio/chain.ts";
import { logSegments } from "../virtio/dirty_log.ts";
import {
  NET_HDR_SIZE,
  VIRTIO_NET_HDR_F_DATA_VALID,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
} from "../virtio/net_header.ts";
import { EgressAction, egressAction, OFFLOAD_CSUM } from "../net/offload.ts";
import {
  completeChecksum,
  segmentCount,
  segmentFrameLen,
  writeBytes,
  writeSegment,
} from "../net/segment.ts";
import { C } from "./counters.ts";
import { type DpPort, PortKind } from "./dp_port.ts";
import { type Frame, MAX_SEGS } from "./frame.ts";
import { WalkError } from "../virtio/split_ring.ts";

/** Most RX chains one mergeable frame may take (64 KiB in 1 KiB buffers). */
const MAX_MERGE = 64;
/** TCP: the checksum field's offset in its header; UDP's. */
const TCP_CSUM_OFFSET = 16;
const UDP_CSUM_OFFSET = 6;
const IPPROTO_TCP = 6;

/** Where the egress stage's scratch memory lies inside the engine's scratch mapping. */
export interface EgressScratch {
  /** The mapping (its address is in the copy window, address_window.ts). */
  map: Mapping;
  /** Offset of a 64-byte area for headers we write. */
  hdrOffset: number;
  /** Offset and size of the buffer a segment for a TAP is built in. */
  segOffset: number;
  segSize: number;
}

/** Delivers frames to ports. */
export class Egress {
  readonly #c: Float64Array;
  readonly #breakPort: (q: DpPort, reason: string) => void;
  readonly #dst = new SegList(MAX_SEGS);
  readonly #heads = new Int32Array(MAX_MERGE);
  readonly #caps = new Float64Array(MAX_MERGE);
  readonly #iov = new IovecArray(MAX_SEGS + 1);
  readonly #hdr: Uint8Array;
  readonly #hdr32: Uint32Array;
  readonly #hdrAddr: number;
  readonly #hdrList = new SegList(1);
  readonly #segList = new SegList(1);
  readonly #segView: Uint8Array;
  readonly #segWords: Uint32Array;
  readonly #segOffset: number;
  readonly #segAddr: number;

  constructor(
    counters: Float64Array,
    scratch: EgressScratch,
    breakPort: (q: DpPort, reason: string) => void,
  ) {
    this.#c = counters;
    this.#breakPort = breakPort;
    const buf = scratch.map.buffer;
    this.#hdr = new Uint8Array(buf, scratch.hdrOffset, 16);
    this.#hdr32 = new Uint32Array(buf, scratch.hdrOffset, 4);
    this.#hdrAddr = scratch.map.address + scratch.hdrOffset;
    this.#segView = new Uint8Array(buf);
    this.#segWords = new Uint32Array(buf, 0, buf.byteLength >>> 2);
    this.#segOffset = scratch.segOffset;
    this.#segAddr = scratch.map.address + scratch.segOffset;
    this.#segSize = scratch.segSize;
  }

  readonly #segSize: number;

  /**
   * Set by the engine before `deliver`: a guest with no RX buffer for this
   * frame may hold it back (see engine.ts, HOLD_MS) instead of dropping it.
   */
  holdOk = false;
  /** Set by `deliver`: the frame was held back, nothing of it was written or counted. */
  held = false;
  // No RX chain of this frame taken yet (a hold is only possible before the first).
  #first = true;

  /** Interrupts a guest through `fd` (-1: none), counting it. */
  call(q: DpPort, fd: number): void {
    if (fd >= 0 && eventfdSignal(fd)) this.#c[q.cbase + C.interrupts]++;
  }

  /**
   * Delivers `f` to `q`: as it is when `q` can take it, else through the
   * software fallback. Counts every outcome on `q`.
   */
  deliver(q: DpPort, f: Frame): void {
    this.held = false;
    this.#first = true;
    const len = f.len;
    if (!f.offload) {
      if (len > q.maxFrame) {
        this.#c[q.cbase + C.dropTooBig]++;
        return;
      }
      // The kernel's word that the checksum is good goes on to guests that may hear it.
      const flags = f.dataValid && (q.egressCaps & OFFLOAD_CSUM) !== 0
        ? VIRTIO_NET_HDR_F_DATA_VALID
        : 0;
      this.#whole(q, f, flags, 0, 0, 0, 0, 0);
      return;
    }
    const h = f.hdr;
    const action = egressAction(h, f.pkt, q.egressCaps);
    if (action === EgressAction.SEGMENT) {
      this.#segment(q, f);
      return;
    }
    // A checksum-only frame is a plain frame in size; a GSO frame passed whole is bounded
    // by its IP length (the parser checked it) and its segments by gso_size.
    if (h.gsoType === 0 && len > q.maxFrame) {
      this.#c[q.cbase + C.dropTooBig]++;
      return;
    }
    if (action === EgressAction.PASS) {
      // Rebuilt from validated values (item 39): flags are NEEDS_CSUM only (ingress.ts), and
      // hdr_len, a hint the receiver may act on, is the exact L2–L4 length for GSO, else 0;
      // gso_size means nothing without a GSO type and goes out as 0 (as passHeader).
      const gso = h.gsoType !== 0;
      const hdrLen = gso ? f.pkt.payloadOff : 0;
      const gsoSize = gso ? h.gsoSize : 0;
      this.#whole(q, f, h.flags, h.gsoType, hdrLen, gsoSize, h.csumStart, h.csumOffset);
    } else {
      this.#completed(q, f);
    }
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
  ): void {
    const len = f.len;
    const head = gsoType !== 0 ? hdrLen : 0;
    if (q.kind === PortKind.VHOST) {
      const need = q.hdrLen + len;
      const chains = this.#acquire(q, need);
      if (chains < 0) return;
      this.#rxHeader(q, chains, flags, gsoType, hdrLen, gsoSize, csumStart, csumOffset);
      if (head > 0) writeBytes(this.#dst, q.hdrLen, f.headers, head);
      copySegments(this.#dst, q.hdrLen + head, f.segs, f.pos + head, len - head);
      this.#commit(q, chains, need);
    } else if (
      !this.#tapWrite(
        q,
        f.segs,
        f.pos,
        len,
        flags,
        gsoType,
        hdrLen,
        gsoSize,
        csumStart,
        csumOffset,
        head > 0 ? f.headers : null,
      )
    ) {
      return;
    }
    this.#c[q.cbase + C.txPackets]++;
    this.#c[q.cbase + C.txBytes] += len;
  }

  // NEEDS_CSUM for a port without checksum offload: copy, then complete in its buffers.
  #completed(q: DpPort, f: Frame): void {
    const len = f.len, h = f.hdr;
    if (q.kind === PortKind.VHOST) {
      const need = q.hdrLen + len;
      const chains = this.#acquire(q, need);
      if (chains < 0) return;
      this.#rxHeader(q, chains, 0, 0, 0, 0, 0, 0);
      copySegments(this.#dst, q.hdrLen, f.segs, f.pos, len);
      completeChecksum(this.#dst, q.hdrLen, len, h.csumStart, h.csumOffset);
      this.#commit(q, chains, need);
    } else {
      if (len > this.#segSize) {
        this.#c[q.cbase + C.dropTooBig]++;
        return;
      }
      const seg = this.#segList;
      seg.reset();
      seg.push(this.#segView, this.#segWords, this.#segOffset, len, this.#segAddr);
      copySegments(seg, 0, f.segs, f.pos, len);
      completeChecksum(seg, 0, len, h.csumStart, h.csumOffset);
      if (!this.#tapWrite(q, seg, 0, len, 0, 0, 0, 0, 0, 0)) return;
    }
    this.#c[q.cbase + C.swChecksummed]++;
    this.#c[q.cbase + C.txPackets]++;
    this.#c[q.cbase + C.txBytes] += len;
  }

  // GSO for a port that cannot take it: segments straight into its buffers.
  #segment(q: DpPort, f: Frame): void {
    const c = this.#c, h = f.hdr, pkt = f.pkt, len = f.len;
    const count = segmentCount(h, pkt, len);
    // The first segment is the longest: if it fits the egress MTU, all do (item 38).
    if (count <= 0 || segmentFrameLen(h, pkt, len, 0) > q.maxFrame) {
      c[q.cbase + C.dropTooBig]++;
      return;
    }
    if (this.holdOk && q.kind === PortKind.VHOST && q.rx !== null) {
      // Each segment takes at least one RX chain: with fewer available, wait for
      // the guest (engine.ts HOLD_MS) rather than deliver half a frame and drop the rest.
      let avail = q.rxKnown;
      if (avail < count) {
        avail = q.rx.available(); // -1 (a bad ring) is left to #acquire to report
        if (avail >= 0) q.rxKnown = avail;
      }
      if (avail >= 0 && avail < count) {
        this.held = true;
        return;
      }
    }
    const partial = (q.egressCaps & OFFLOAD_CSUM) !== 0;
    const flags = partial ? VIRTIO_NET_HDR_F_NEEDS_CSUM : 0;
    const cs = partial ? pkt.l4Off : 0;
    const co = partial ? (pkt.l4Proto === IPPROTO_TCP ? TCP_CSUM_OFFSET : UDP_CSUM_OFFSET) : 0;
    c[q.cbase + C.swSegmented]++;
    for (let k = 0; k < count; k++) {
      const segLen = segmentFrameLen(h, pkt, len, k);
      let n: number;
      if (q.kind === PortKind.VHOST) {
        const need = q.hdrLen + segLen;
        const chains = this.#acquire(q, need);
        if (chains < 0) return; // counted; the rest of the frame is lost with it
        this.#rxHeader(q, chains, flags, 0, 0, 0, cs, co);
        n = writeSegment(h, pkt, f.headers, f.segs, f.pos, len, k, this.#dst, q.hdrLen, !partial);
        this.#commit(q, chains, q.hdrLen + n);
      } else {
        const seg = this.#segList;
        seg.reset();
        seg.push(this.#segView, this.#segWords, this.#segOffset, segLen, this.#segAddr);
        n = writeSegment(h, pkt, f.headers, f.segs, f.pos, len, k, seg, 0, !partial);
        if (!this.#tapWrite(q, seg, 0, n, flags, 0, 0, 0, cs, co)) return;
      }
      c[q.cbase + C.swSegments]++;
      c[q.cbase + C.txPackets]++;
      c[q.cbase + C.txBytes] += n;
    }
  }

  /**
   * Takes RX chains from `q` until they hold `need` bytes (one chain, or
   * several with MRG_RXBUF), filling `#dst`. Returns the chain count, or
   * -1 when the guest has too few buffers (counted; the chains go back,
   * item 26) or its ring is bad (the port breaks).
   */
  #acquire(q: DpPort, need: number): number {
    const c = this.#c;
    const ring = q.rx;
    if (ring === null) {
      c[q.cbase + C.dropNoBuffer]++;
      return -1;
    }
    // The guest's RX avail index is read again only when the chains we
    // already know of run out: one shared-memory load per burst, not per frame.
    let avail = q.rxKnown;
    if (avail === 0) {
      avail = ring.available();
      if (avail < 0) {
        this.#breakPort(q, "RX avail index more than the ring size ahead");
        return -1;
      }
    }
    const dst = this.#dst;
    const heads = this.#heads, caps = this.#caps;
    dst.reset();
    let chains = 0;
    while (dst.total < need) {
      if (chains >= avail && chains < MAX_MERGE && (chains === 0 || q.mergeable)) {
        avail = ring.available(); // maybe the guest added buffers meanwhile
        if (avail < 0) avail = 0;
      }
      if (chains >= avail || chains >= MAX_MERGE || (chains > 0 && !q.mergeable)) {
        // Not enough buffers: give back what we took, the guest keeps them (item 26).
        ring.unget(chains);
        q.rxKnown = avail;
        if (this.holdOk && this.#first) {
          this.held = true; // the engine retries it next round, bounded by HOLD_MS
          return -1;
        }
        c[q.cbase + C.dropNoBuffer]++;
        return -1;
      }
      const head = ring.nextHead();
      const got = ring.walk(head, dst, true);
      if (got < 0) {
        ring.unget(chains + 1);
        c[q.cbase + C.dropBadDescriptor]++;
        this.#breakPort(q, `bad RX descriptor chain (${walkErrorName(got)})`);
        return -1;
      }
      heads[chains] = head;
      caps[chains] = got;
      chains++;
    }
    q.rxKnown = avail - chains;
    this.#first = false;
    return chains;
  }

  // Returns the chains taken by #acquire as used, `used` bytes in all (§2.7.8).
  // Every write into a guest's RX buffers ends here, so a migrating guest's
  // dirty log gets the pages written (header and payload), after the writes.
  #commit(q: DpPort, chains: number, used: number): void {
    if (q.log !== null) logSegments(q.log, this.#dst, used);
    const ring = q.rx!;
    const heads = this.#heads, caps = this.#caps;
    let remaining = used;
    for (let i = 0; i < chains; i++) {
      const l = caps[i] < remaining ? caps[i] : remaining;
      ring.pushUsed(heads[i], l);
      remaining -= l;
    }
  }

  // The virtio-net header at the start of #dst (§5.1.6), num_buffers = chains.
  #rxHeader(
    q: DpPort,
    chains: number,
    flags: number,
    gsoType: number,
    hdrLen: number,
    gsoSize: number,
    csumStart: number,
    csumOffset: number,
  ): void {
    const dst = this.#dst;
    const hl = q.hdrLen;
    const w0 = flags | (gsoType << 8) | (hdrLen << 16);
    const w1 = gsoSize | (csumStart << 16);
    const w2 = csumOffset | ((hl === NET_HDR_SIZE ? chains : 0) << 16);
    const o = dst.offs[0];
    if (hl === NET_HDR_SIZE && dst.lens[0] >= hl && (o & 3) === 0) {
      // Usually: the header lies in the first buffer, 4-aligned (little-endian words).
      const w = dst.words[0], i = wordIndex(o);
      w[i] = w0;
      w[i + 1] = w1;
      w[i + 2] = w2;
      return;
    }
    const h32 = this.#hdr32;
    h32[0] = w0;
    h32[1] = w1;
    h32[2] = w2;
    const list = this.#hdrList;
    list.reset();
    list.push(this.#hdr, h32, 0, hl, this.#hdrAddr);
    copySegments(dst, 0, list, 0, hl);
  }

  /**
   * One frame to a TAP: our header (from validated values, never the
   * guest's bytes: item 39) and the frame straight from `src`, in one
   * writev. With `head`, the frame's first `hdrLen` bytes are taken from
   * it (the validated header copy, staged in our scratch memory) and only
   * the rest from `src`. Returns false when the write failed (counted).
   */
  #tapWrite(
    q: DpPort,
    src: SegList,
    pos: number,
    len: number,
    flags: number,
    gsoType: number,
    hdrLen: number,
    gsoSize: number,
    csumStart: number,
    csumOffset: number,
    head: Uint8Array | null = null,
  ): boolean {
    const h32 = this.#hdr32;
    h32[0] = flags | (gsoType << 8) | (hdrLen << 16);
    h32[1] = gsoSize | (csumStart << 16);
    h32[2] = csumOffset; // num_buffers 0: unused by the kernel on transmit
    const iov = this.#iov;
    iov.clear();
    iov.push(this.#hdrAddr, NET_HDR_SIZE);
    let left = len;
    if (head !== null && hdrLen > 0) {
      const v = this.#segView, o = this.#segOffset;
      for (let i = 0; i < hdrLen; i++) v[o + i] = head[i];
      iov.push(this.#segAddr, hdrLen);
      pos += hdrLen;
      left -= hdrLen;
    }
    for (let i = 0; i < src.count && left > 0; i++) {
      let l = src.lens[i];
      if (pos >= l) {
        pos -= l;
        continue;
      }
      l -= pos;
      if (l > left) l = left;
      iov.push(src.addrs[i] + pos, l);
      left -= l;
      pos = 0;
    }
    if (libc.writev(q.fd, iov.bytes, iov.count) < 0) {
      this.#c[q.cbase + C.dropTapError]++;
      return false;
    }
    return true;
  }
}

/** A WalkError code's name, for reports. */
export function walkErrorName(code: number): string {
  for (const [k, v] of Object.entries(WalkError)) if (v === code) return k;
  return `${code}`;
}
