/**
 * An in-process forwarding rig: guests' memory in memfds (of a chosen size,
 * laid out like QEMU's, the buffers where asked), guest A's TX ring full of
 * frames for guest B (and C's for D ...), B's RX ring full of buffers, and
 * the real Engine between them. `step()` runs one engine round and then
 * plays both guests (recycles A's sent buffers, reposts B's RX buffers),
 * so it can forward millions of frames without a socket or a worker.
 *
 * @module
 */

import { GuestMemory } from "../src/virtio/guest_memory.ts";
import { SplitRing } from "../src/virtio/split_ring.ts";
import { type BrokenHandler, DpPort, Engine, PortKind } from "../src/switch/engine.ts";
import { Fdb } from "../src/switch/fdb.ts";
import { C, COUNTERS_PER_PORT, createCounterBuffer } from "../src/switch/counters.ts";
import { TestMemory } from "../tests/helpers/memfd_memory.ts";
import { closeWindow, win } from "../src/virtio/address_window.ts";

const SIZE = 256;
const DESC = 0, AVAIL = 0x1000, USED = 0x2000, BUFS = 0x10000;
const BUF = 10240;
/** Bytes of guest memory the rings and buffers take (from `bufAt`). */
export const RIG_LAYOUT_BYTES = BUFS + SIZE * BUF;

/** One guest's rings and memory, driver side. */
class Guest {
  readonly tm: TestMemory;
  readonly mem: GuestMemory;
  /** Region holding the layout, and the layout's offset in it and guest-physical address. */
  readonly #region: number;
  readonly #off: number;
  readonly #at: number;
  #avail = 0;
  #used = 0;

  constructor(
    writable: boolean,
    frame: Uint8Array | undefined,
    posted: number,
    memSize: number | undefined,
    bufAt: number,
  ) {
    this.tm = new TestMemory(memSize ?? RIG_LAYOUT_BYTES);
    this.#at = bufAt;
    const regions = memSize === undefined ? this.tm.regions() : this.tm.qemuRegions();
    this.mem = new GuestMemory(regions);
    // The region holding the layout: regions lie back to back in the memfd.
    let r = 0, base = 0;
    while (bufAt >= base + regions[r].size) base += regions[r++].size;
    if (bufAt + RIG_LAYOUT_BYTES > base + regions[r].size) {
      throw new Error(`Cannot place the rig's buffers at ${bufAt}: they cross a region's end`);
    }
    this.#region = r;
    this.#off = bufAt - base;
    const gpa = regions[r].gpa + this.#off;
    for (let i = 0; i < SIZE; i++) {
      const at = BUFS + i * BUF;
      const len = frame ? 12 + frame.length : BUF;
      if (frame) this.tm.bytes.set(frame, bufAt + at + 12);
      this.tm.desc(bufAt + DESC, i, gpa + at, len, writable ? 2 : 0, 0);
    }
    this.post(posted);
  }

  ring(): SplitRing {
    const r = this.#region, o = this.#off;
    return new SplitRing({
      mem: this.mem,
      size: SIZE,
      desc: { region: r, offset: o + DESC },
      avail: { region: r, offset: o + AVAIL },
      used: { region: r, offset: o + USED },
      base: 0,
      indirect: true,
      maxReadable: 9018 + 12,
      eventIdx: false,
    });
  }

  /** Makes `n` more chains available (heads cycle through the table). */
  post(n: number): void {
    const v = this.tm.view, avail = this.#at + AVAIL;
    for (let i = 0; i < n; i++) {
      v.setUint16(avail + 4 + 2 * (this.#avail % SIZE), this.#avail % SIZE, true);
      this.#avail = (this.#avail + 1) & 0xffff;
    }
    v.setUint16(avail + 2, this.#avail, true);
  }

  /** Takes the used entries the engine published; returns how many. */
  reap(): number {
    const idx = this.tm.view.getUint16(this.#at + USED + 2, true);
    const n = (idx - this.#used) & 0xffff;
    this.#used = idx;
    return n;
  }
}

/** How a ForwardRig is built. */
export interface ForwardRigOptions {
  /** Frame length in bytes. */
  frameLen: number;
  /** What a port fault does (default: throw, a benchmark must not hide one). */
  onBroken?: BrokenHandler;
  /** RX buffers each receiver posts at the start (default: its whole ring). */
  rxPosted?: number;
  /**
   * Guests, an even number (default 2): guest 2i sends to guest 2i + 1.
   */
  guests?: number;
  /**
   * Bytes of memory per guest (default: just the rings and buffers). When
   * given, the memory is laid out as QEMU's q35 machine gives it
   * (memfd_memory.ts qemuRegions: 2 GiB at 0, the rest above 4 GiB).
   */
  memSize?: number;
  /** Where the rings and buffers start in each guest's memory (default 0). */
  bufAt?: number;
}

/** The rig: each even guest sends `frameLen`-byte frames to the next one through the engine. */
export class ForwardRig {
  readonly engine: Engine;
  readonly counters = new Float64Array(createCounterBuffer());
  readonly #guests: Guest[] = [];
  readonly #a: Guest;
  readonly #b: Guest;

  /**
   * `frameLen` alone, or options. `onBroken`: what a port fault does
   * (default: throw, a benchmark must not hide one). `rxPosted`: RX
   * buffers B posts at the start (default: its whole ring).
   */
  constructor(
    frameLen: number | ForwardRigOptions,
    onBroken?: BrokenHandler,
    rxPosted?: number,
  ) {
    const o: ForwardRigOptions = typeof frameLen === "number"
      ? { frameLen, onBroken, rxPosted }
      : frameLen;
    const guests = o.guests ?? 2;
    if (guests < 2 || guests % 2 !== 0 || guests > 16) {
      throw new Error(`Cannot build a rig of ${guests} guests: an even number from 2 to 16`);
    }
    // Guests first, then the engine (its scratch mapping lands next to
    // theirs: the span then depends on their sizes, not on what V8 mapped
    // in between; the real switch has no such luck, see address_window.ts).
    for (let g = 0; g < guests; g += 2) {
      // Sender g: src 02:00:00:00:00:(g+1), dst 02:00:00:00:00:(g+2).
      const frame = new Uint8Array(o.frameLen);
      frame.set([2, 0, 0, 0, 0, g + 2, 2, 0, 0, 0, 0, g + 1, 0x88, 0xb5]);
      const tx = new Guest(false, frame, SIZE, o.memSize, o.bufAt ?? 0);
      const rx = new Guest(true, undefined, o.rxPosted ?? SIZE, o.memSize, o.bufAt ?? 0);
      this.#guests.push(tx, rx);
    }
    this.engine = new Engine(
      this.counters,
      new Fdb(1024, 300_000),
      o.onBroken ?? ((p, why) => {
        throw new Error(`port ${p.name} broke: ${why}`);
      }),
    );
    for (let g = 0; g < guests; g += 2) {
      const tx = this.#guests[g], rx = this.#guests[g + 1];
      const pa = new DpPort(g, PortKind.VHOST, `g${g}`, 9018);
      const pb = new DpPort(g + 1, PortKind.VHOST, `g${g + 1}`, 9018);
      this.engine.add(pa);
      this.engine.add(pb);
      pa.mem = tx.mem;
      pa.vq!.setQueue(1, tx.ring(), -1);
      pb.mem = rx.mem;
      pb.vq!.setQueue(0, rx.ring(), -1);
      pb.vq!.mergeable = true;
      // The receiver must be known, or every frame would flood (to it anyway, but via the flood path).
      this.engine.fdb.learn(0x0200, g + 2, g + 1, 0);
    }
    this.#a = this.#guests[0];
    this.#b = this.#guests[1];
    this.#ownWindow();
  }

  // A thread has one set of copy windows (address_window.ts): when another
  // rig or benchmark built its own since, this rig's copies would take the
  // word loop, so it builds its own again first (one compare per round).
  #epoch = -1;
  #ownWindow(): void {
    if (this.#epoch === win.epoch) return;
    this.engine.updateWindow();
    this.#epoch = win.epoch;
  }

  /** One engine round plus both guests' work; returns frames forwarded. */
  step(): number {
    this.#ownWindow();
    const n = this.engine.round(0);
    for (const g of this.#guests) g.post(g.reap());
    return n;
  }

  /** One engine round at time `now` (ms) with no guest work; returns frames taken. */
  round(now: number): number {
    this.#ownWindow();
    return this.engine.round(now);
  }

  /** A's TX used entries published since the last call. */
  reapTx(): number {
    return this.#a.reap();
  }

  /** B posts `n` more RX buffers. */
  postRx(n: number): void {
    this.#b.post(n);
  }

  /** Frames delivered to the receivers so far. */
  get delivered(): number {
    let n = 0;
    for (let g = 1; g < this.#guests.length; g += 2) {
      n += this.counters[g * COUNTERS_PER_PORT + C.txPackets];
    }
    return n;
  }

  /** Releases the copy windows and the memory. */
  close(): void {
    if (this.#epoch === win.epoch) closeWindow();
    for (const g of this.#guests) g.tm.close();
  }
}
