/**
 * The driver of one vhost-user net queue pair (VIRTIO 1.2 §5.1.2: receiveq
 * 2n, transmitq 2n+1): the guest's TX virtqueue is this port's ingress, its
 * RX virtqueue the egress. Ingress takes bursts of chains and parses them
 * into the driver's own frame records; egress takes RX chains for one
 * frame, writes its virtio-net header (§5.1.6) and hands the chains back.
 *
 * Chain shapes: Linux's virtio_net and DPDK's virtio-user send, with
 * VERSION_1 / ANY_LAYOUT, one descriptor holding header and frame, or the
 * header and one data descriptor (§5.1.6.1 lets the header share a
 * buffer); the ring's walk has a straight path for those (split_ring.ts),
 * and parsing then reads the header and MACs from the first segment.
 *
 * Nothing here allocates per frame; every bound on guest data comes from
 * the virtqueue's walk (CHECKLIST 15–21, 28) and the parser (22–25,
 * 34–37).
 *
 * @module
 */

import { eventfdSignal } from "../../../ffi/eventfd.ts";
import { SegList, wordIndex } from "../../virtio/chain.ts";
import { logSegments } from "../../virtio/dirty_log.ts";
import { NET_HDR_SIZE } from "../../virtio/net_header.ts";
import type { Virtqueue } from "../../virtio/virtqueue.ts";
import { WalkError } from "../../virtio/split_ring.ts";
import { writeBytes } from "../../net/segment.ts";
import { C } from "../counters.ts";
import type { DpPort } from "../dp_port.ts";
import { type Frame, makeBurst, MAX_SEGS, OUT_DROP } from "../frame.ts";
import { BURST, type PortDriver } from "./port_driver.ts";

/** Most RX chains one mergeable frame may take (64 KiB in 1 KiB buffers). */
export const MAX_MERGE = 64;

/** `acquire`: the guest has no buffer now, and the frame may wait for one (HOLD_MS). */
export const ACQUIRE_HELD = -2;
/** `acquire`: the frame was dropped (counted), or the ring is bad (the port broke). */
export const ACQUIRE_DROPPED = -1;

/** Stops a port after a fault (the engine's breakPort). */
export type BreakPort = (p: DpPort, reason: string) => void;

/** One vhost-user net queue pair. */
export class VhostNetQueuePair implements PortDriver {
  /** The guest's RX virtqueue (we write), null until started. */
  rx: Virtqueue | null = null;
  /** The guest's TX virtqueue (we read). */
  tx: Virtqueue | null = null;
  /** Call eventfds per queue (-1: none). */
  callRx = -1;
  callTx = -1;
  /** virtio-net header size the guest negotiated (10, or 12 with MRG_RXBUF / VERSION_1). */
  hdrLen = NET_HDR_SIZE;
  /** MRG_RXBUF negotiated. */
  mergeable = false;
  /** RX chains known to be available beyond those taken (avail.idx read lazily). */
  rxKnown = 0;
  readonly burst: Frame[] = makeBurst(BURST);
  /** The engine parses a guest's frames, each just before its delivery. */
  readonly parses = false;
  /** The RX chains of the frame being delivered (filled by `acquire`). */
  readonly dst: SegList = new SegList(MAX_SEGS);
  readonly #heads = new Int32Array(MAX_MERGE);
  readonly #caps = new Float64Array(MAX_MERGE);
  readonly #hdrBytes = new Uint8Array(16);
  readonly #hdrWords = new Uint32Array(this.#hdrBytes.buffer);
  readonly #port: DpPort;
  readonly #c: Float64Array;
  readonly #breakPort: BreakPort;
  /** Chains given back by the last `complete` (held frames), taken first next time. */
  #again = 0;

  constructor(
    port: DpPort,
    counters: Float64Array,
    breakPort: BreakPort,
  ) {
    this.#port = port;
    this.#c = counters;
    this.#breakPort = breakPort;
  }

  /**
   * Starts (a ring) or stops (null) queue `q` of the pair: 0 the RX
   * virtqueue, 1 the TX one (control path, between rounds).
   */
  setQueue(q: number, ring: Virtqueue | null, callFd: number): void {
    if (q === 0) {
      this.rx = ring;
      this.rxKnown = 0;
      this.callRx = callFd;
    } else {
      this.tx = ring;
      this.callTx = callFd;
      this.#again = 0;
    }
  }

  receive(max: number): number {
    const ring = this.tx;
    if (ring === null) return 0;
    const p = this.#port;
    let n = ring.available();
    if (n <= 0) {
      if (n < 0) this.#breakPort(p, "TX avail index more than the ring size ahead");
      return 0;
    }
    if (n > max) n = max;
    const c = this.#c, cb = p.cbase;
    const burst = this.burst;
    const again = this.#again;
    this.#again = 0;
    const hl = this.hdrLen;
    for (let k = 0; k < n; k++) {
      const f = burst[k];
      const head = ring.nextHead();
      f.head = head;
      f.again = k < again;
      f.segs.reset();
      const total = ring.walk(head, f.segs, false);
      if (total < 0) {
        c[cb + C.dropBadDescriptor]++;
        f.out = OUT_DROP;
        continue;
      }
      f.pos = hl;
      f.len = total - hl;
      f.out = 0;
    }
    return n;
  }

  complete(n: number, taken: number, seen: number): void {
    const ring = this.tx;
    if (ring === null) return;
    if (taken < n) {
      ring.unget(n - taken); // held back: taken again next round
      this.#again = seen - taken;
    }
    // TX buffers go back only now, after every copy out of them, with length
    // 0: the device wrote nothing (§2.7.8).
    const burst = this.burst;
    for (let k = 0; k < taken; k++) ring.pushUsed(burst[k].head, 0);
    if (taken > 0 && ring.publish()) this.#call(this.callTx);
  }

  flush(): void {
    const rx = this.rx;
    if (rx !== null && rx.pendingUsed > 0 && !this.#port.broken && rx.publish()) {
      this.#call(this.callRx);
    }
  }

  /** Interrupts the guest through `fd` (-1: none), counting it. */
  #call(fd: number): void {
    if (fd >= 0 && eventfdSignal(fd)) this.#c[this.#port.cbase + C.interrupts]++;
  }

  /**
   * Whether at least `count` RX chains are available (reading avail.idx
   * only if the known ones do not suffice). A bad ring answers true and is
   * left to `acquire` to report.
   */
  hasChains(count: number): boolean {
    if (this.rxKnown >= count || this.rx === null) return true;
    const avail = this.rx.available();
    if (avail < 0) return true;
    this.rxKnown = avail;
    return avail >= count;
  }

  /**
   * Takes RX chains until they hold `need` bytes (one chain, or several
   * with MRG_RXBUF) into `dst`. Returns the chain count; ACQUIRE_HELD when
   * the guest has too few buffers and `mayHold` (nothing counted, the
   * chains go back); ACQUIRE_DROPPED when it has too few and may not be
   * waited for (counted, item 26), or its ring is bad (the port breaks).
   */
  acquire(need: number, mayHold: boolean): number {
    const ring = this.rx;
    // The usual case: a chain we know of holds the whole frame.
    if (ring !== null && this.rxKnown > 0) {
      const dst = this.dst;
      dst.reset();
      const head = ring.nextHead();
      const got = ring.walk(head, dst, true);
      if (got >= need) {
        this.#heads[0] = head;
        this.#caps[0] = got;
        this.rxKnown--;
        return 1;
      }
      return this.#acquireMore(need, mayHold, head, got);
    }
    return this.#acquireMore(need, mayHold, -1, 0);
  }

  // The rest of `acquire`: more chains, none known, or a bad one. `head0` is
  // the chain `acquire` already took and `got0` its walk's answer (head0 -1:
  // none taken). Apart so that `acquire` stays small enough to inline.
  #acquireMore(need: number, mayHold: boolean, head0: number, got0: number): number {
    const p = this.#port;
    const c = this.#c;
    const ring = this.rx;
    if (ring === null) {
      c[p.cbase + C.dropNoBuffer]++;
      return ACQUIRE_DROPPED;
    }
    const dst = this.dst;
    const heads = this.#heads, caps = this.#caps;
    const mergeable = this.mergeable;
    // The guest's RX avail index is read again only when the chains we
    // already know of run out: one shared-memory load per burst, not per frame.
    let avail = this.rxKnown;
    let chains = 0;
    if (head0 >= 0) {
      if (got0 < 0) return this.#badChain(got0, 1);
      heads[0] = head0;
      caps[0] = got0;
      chains = 1;
    } else {
      if (avail === 0) {
        avail = ring.available();
        if (avail < 0) {
          this.#breakPort(p, "RX avail index more than the ring size ahead");
          return ACQUIRE_DROPPED;
        }
      }
      dst.reset();
    }
    while (dst.total < need) {
      if (chains >= avail && chains < MAX_MERGE && (chains === 0 || mergeable)) {
        avail = ring.available(); // maybe the guest added buffers meanwhile
        if (avail < 0) avail = 0;
      }
      if (chains >= avail || chains >= MAX_MERGE || (chains > 0 && !mergeable)) {
        // Not enough buffers: give back what we took, the guest keeps them (item 26).
        ring.unget(chains);
        this.rxKnown = avail;
        if (mayHold) return ACQUIRE_HELD;
        c[p.cbase + C.dropNoBuffer]++;
        return ACQUIRE_DROPPED;
      }
      const head = ring.nextHead();
      const got = ring.walk(head, dst, true);
      if (got < 0) return this.#badChain(got, chains + 1);
      heads[chains] = head;
      caps[chains] = got;
      chains++;
    }
    this.rxKnown = avail - chains;
    return chains;
  }

  // A bad RX chain: the `taken` chains go back, it is counted and the port breaks.
  #badChain(code: number, taken: number): number {
    this.rx!.unget(taken);
    this.#c[this.#port.cbase + C.dropBadDescriptor]++;
    this.#breakPort(this.#port, `bad RX descriptor chain (${walkErrorName(code)})`);
    return ACQUIRE_DROPPED;
  }

  /**
   * Returns the chains `acquire` took as used, `used` bytes in all
   * (§2.7.8). Every write into a guest's RX buffers ends here, so a
   * migrating guest's dirty log gets the pages written (header and
   * payload), after the writes.
   */
  commit(chains: number, used: number): void {
    const log = this.#port.log;
    if (log !== null) logSegments(log, this.dst, used);
    const ring = this.rx!;
    const heads = this.#heads, caps = this.#caps;
    let remaining = used;
    for (let i = 0; i < chains; i++) {
      const l = caps[i] < remaining ? caps[i] : remaining;
      ring.pushUsed(heads[i], l);
      remaining -= l;
    }
  }

  /**
   * The virtio-net header (§5.1.6) at the start of `dst`, from three
   * little-endian words (flags | gso_type << 8 | hdr_len << 16,
   * gso_size | csum_start << 16, csum_offset), with num_buffers = `chains`
   * when the header has that field.
   */
  writeHeader(chains: number, w0: number, w1: number, w2: number): void {
    const dst = this.dst;
    const hl = this.hdrLen;
    const nb = hl === NET_HDR_SIZE ? w2 | (chains << 16) : w2;
    const o = dst.offs[0];
    if (hl === NET_HDR_SIZE && dst.lens[0] >= hl && (o & 3) === 0) {
      // Usually: the header lies in the first buffer, 4-aligned (little-endian words).
      const w = dst.words[0], i = wordIndex(o);
      w[i] = w0;
      w[i + 1] = w1;
      w[i + 2] = nb;
      return;
    }
    const h = this.#hdrWords;
    h[0] = w0;
    h[1] = w1;
    h[2] = nb;
    writeBytes(dst, 0, this.#hdrBytes, hl);
  }
}

/** A WalkError code's name, for reports. */
export function walkErrorName(code: number): string {
  for (const [k, v] of Object.entries(WalkError)) if (v === code) return k;
  return `${code}`;
}
