/**
 * `GoodGuest`: the well-formed guest of target `b2`, a correct driver
 * whose rings and buffers the engine must only ever use as the spec says.
 *
 * @module
 */

import { type Mapping, mmap, munmap } from "../../ffi/memory.ts";
import { MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE } from "../../ffi/constants.ts";
import type { MappedRegion } from "../../src/types/memory.ts";
import { GuestMemory } from "../../src/virtio/guest_memory.ts";
import { SplitRing, VIRTQ_DESC_F_WRITE } from "../../src/virtio/split_ring.ts";
import { fail } from "./common.ts";
import { split64, writeDesc } from "./guest_memory.ts";

const GOOD_MAC = [0x02, 0, 0, 0, 0, 0x0b];
export const GOOD_RX = 128;
export const GOOD_TX = 64;
export const GOOD_MAX_FRAME = 9018;
export const GOOD_HDR = 12;

/**
 * A correct driver (§2.7, §5.1.6): RX buffers always posted (so the switch
 * never runs out for it), TX frames with a zero header. Its memory is
 * diffed around every round: only RX buffers it got back and the used
 * rings may change.
 */
export class GoodGuest {
  readonly map: Mapping;
  readonly u8: Uint8Array;
  readonly view: DataView;
  readonly region: MappedRegion;
  readonly mem: GuestMemory;
  readonly buf: number;
  static readonly RX_DESC = 0;
  static readonly RX_AVAIL = 0x800;
  static readonly RX_USED = 0x1000;
  static readonly TX_DESC = 0x1800;
  static readonly TX_AVAIL = 0x1c00;
  static readonly TX_USED = 0x2000;
  static readonly TX_BUFS = 0x4000;
  static readonly RX_BUFS = 0x4000 + GOOD_TX * 2048;
  #rxAvail = 0;
  #rxUsed = 0;
  readonly #rxOut: number[] = [];
  #txAvail = 0;
  #txUsed = 0;
  #txNext = 0;
  readonly size: number;

  constructor(readonly gpa: number, readonly mergeable: boolean) {
    this.buf = mergeable ? 4096 : 9216;
    this.size = GoodGuest.RX_BUFS + GOOD_RX * this.buf;
    this.map = mmap(-1, this.size, 0, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
    this.u8 = new Uint8Array(this.map.buffer);
    this.view = new DataView(this.map.buffer);
    this.region = { gpa, size: this.size, address: this.map.address };
    this.mem = new GuestMemory([this.region]);
    for (let i = 0; i < GOOD_RX; i++) {
      const [lo, hi] = split64(gpa + this.rxBuf(i));
      writeDesc(this.view, GoodGuest.RX_DESC + 16 * i, lo, hi, this.buf, VIRTQ_DESC_F_WRITE, 0);
      this.#postRx(i);
    }
  }

  rxBuf(i: number): number {
    return GoodGuest.RX_BUFS + i * this.buf;
  }

  #postRx(head: number): void {
    this.view.setUint16(GoodGuest.RX_AVAIL + 4 + 2 * (this.#rxAvail % GOOD_RX), head, true);
    this.#rxAvail = (this.#rxAvail + 1) & 0xffff;
    this.view.setUint16(GoodGuest.RX_AVAIL + 2, this.#rxAvail, true);
    this.#rxOut.push(head);
  }

  ring(q: 0 | 1): SplitRing {
    const [d, a, u, n] = q === 0
      ? [GoodGuest.RX_DESC, GoodGuest.RX_AVAIL, GoodGuest.RX_USED, GOOD_RX]
      : [GoodGuest.TX_DESC, GoodGuest.TX_AVAIL, GoodGuest.TX_USED, GOOD_TX];
    return new SplitRing({
      mem: this.mem,
      size: n,
      desc: { region: 0, offset: d },
      avail: { region: 0, offset: a },
      used: { region: 0, offset: u },
      base: 0,
      indirect: false,
      maxReadable: GOOD_HDR + GOOD_MAX_FRAME,
      eventIdx: false,
    });
  }

  /** Queues broadcast frames of these lengths; returns their bytes (without header). */
  send(lengths: number[], tag: number): Uint8Array[] {
    const frames: Uint8Array[] = [];
    for (const len of lengths) {
      const f = new Uint8Array(len);
      f.fill(0xff, 0, 6);
      f.set(GOOD_MAC, 6);
      f[12] = 0x88;
      f[13] = 0xb5;
      for (let i = 14; i < len; i++) f[i] = (tag + i) & 0xff;
      const slot = this.#txNext++ % GOOD_TX;
      const at = GoodGuest.TX_BUFS + slot * 2048;
      this.u8.fill(0, at, at + GOOD_HDR);
      this.u8.set(f, at + GOOD_HDR);
      const [lo, hi] = split64(this.gpa + at);
      writeDesc(this.view, GoodGuest.TX_DESC + 16 * slot, lo, hi, GOOD_HDR + len, 0, 0);
      this.view.setUint16(GoodGuest.TX_AVAIL + 4 + 2 * (this.#txAvail % GOOD_TX), slot, true);
      this.#txAvail = (this.#txAvail + 1) & 0xffff;
      frames.push(f);
    }
    this.view.setUint16(GoodGuest.TX_AVAIL + 2, this.#txAvail, true);
    return frames;
  }

  /** TX used entries since last time: every frame sent comes back, length 0 (§2.7.8). */
  reapTx(ctx: string): void {
    const idx = this.view.getUint16(GoodGuest.TX_USED + 2, true);
    if (idx !== this.#txAvail) fail(`${ctx}: good TX used.idx ${idx}, sent ${this.#txAvail}`);
    for (; this.#txUsed !== idx; this.#txUsed = (this.#txUsed + 1) & 0xffff) {
      const e = GoodGuest.TX_USED + 4 + 8 * (this.#txUsed % GOOD_TX);
      if (
        this.view.getUint32(e, true) !== this.#txUsed % GOOD_TX ||
        this.view.getUint32(e + 4, true) !== 0
      ) {
        fail(
          `${ctx}: good TX used entry ${this.#txUsed} = (${this.view.getUint32(e, true)}, ${
            this.view.getUint32(e + 4, true)
          })`,
        );
      }
    }
  }

  /**
   * RX used entries since last time, checked to name buffers we posted,
   * in order, with lengths ≤ the buffer; reposted. Returns them.
   */
  takeRx(ctx: string): { id: number; len: number }[] {
    const idx = this.view.getUint16(GoodGuest.RX_USED + 2, true);
    const n = (idx - this.#rxUsed) & 0xffff;
    if (n > this.#rxOut.length) {
      fail(`${ctx}: good RX used.idx moved by ${n} with ${this.#rxOut.length} buffers posted`);
    }
    const out: { id: number; len: number }[] = [];
    for (let k = 0; k < n; k++) {
      const e = GoodGuest.RX_USED + 4 + 8 * ((this.#rxUsed + k) % GOOD_RX);
      const id = this.view.getUint32(e, true), len = this.view.getUint32(e + 4, true);
      const want = this.#rxOut.shift()!;
      if (id !== want) {
        fail(`${ctx}: good RX used entry names buffer ${id}, next posted is ${want}`);
      }
      if (len > this.buf || len === 0) {
        fail(`${ctx}: good RX used length ${len} (buffers of ${this.buf})`);
      }
      out.push({ id, len });
    }
    this.#rxUsed = idx;
    for (const { id } of out) this.#postRx(id);
    return out;
  }

  close(): void {
    munmap(this.map);
  }
}
