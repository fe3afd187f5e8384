/**
 * An in-process forwarding rig: two guests' memory in memfds, guest A's TX
 * ring full of frames for guest B, guest B's RX ring full of buffers, and
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

const SIZE = 256;
const DESC = 0, AVAIL = 0x1000, USED = 0x2000, BUFS = 0x10000;
const BUF = 10240;

/** One guest's rings and memory, driver side. */
class Guest {
  readonly tm = new TestMemory(BUFS + SIZE * BUF);
  readonly mem = new GuestMemory(this.tm.regions());
  #avail = 0;
  #used = 0;

  constructor(writable: boolean, frame?: Uint8Array, posted = SIZE) {
    for (let i = 0; i < SIZE; i++) {
      const at = BUFS + i * BUF;
      const len = frame ? 12 + frame.length : BUF;
      if (frame) this.tm.bytes.set(frame, at + 12);
      this.tm.desc(DESC, i, at, len, writable ? 2 : 0, 0);
    }
    this.post(posted);
  }

  ring(): SplitRing {
    return new SplitRing({
      mem: this.mem,
      size: SIZE,
      desc: { region: 0, offset: DESC },
      avail: { region: 0, offset: AVAIL },
      used: { region: 0, offset: USED },
      base: 0,
      indirect: true,
      maxReadable: 9018 + 12,
      eventIdx: false,
    });
  }

  /** Makes `n` more chains available (heads cycle through the table). */
  post(n: number): void {
    const v = this.tm.view;
    for (let i = 0; i < n; i++) {
      v.setUint16(AVAIL + 4 + 2 * (this.#avail % SIZE), this.#avail % SIZE, true);
      this.#avail = (this.#avail + 1) & 0xffff;
    }
    v.setUint16(AVAIL + 2, this.#avail, true);
  }

  /** Takes the used entries the engine published; returns how many. */
  reap(): number {
    const idx = this.tm.view.getUint16(USED + 2, true);
    const n = (idx - this.#used) & 0xffff;
    this.#used = idx;
    return n;
  }
}

/** The rig: A sends `frameLen`-byte frames to B through the engine. */
export class ForwardRig {
  readonly engine: Engine;
  readonly counters = new Float64Array(createCounterBuffer());
  readonly #a: Guest;
  readonly #b: Guest;

  /**
   * `onBroken`: what a port fault does (default: throw, a benchmark must not hide one).
   * `rxPosted`: RX buffers B posts at the start (default: its whole ring).
   */
  constructor(frameLen: number, onBroken?: BrokenHandler, rxPosted?: number) {
    const frame = new Uint8Array(frameLen);
    frame.set([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x88, 0xb5]);
    this.#a = new Guest(false, frame);
    this.#b = new Guest(true, undefined, rxPosted);
    this.engine = new Engine(
      this.counters,
      new Fdb(1024, 300_000),
      onBroken ?? ((p, why) => {
        throw new Error(`port ${p.name} broke: ${why}`);
      }),
    );
    const pa = new DpPort(0, PortKind.VHOST, "a", 9018);
    const pb = new DpPort(1, PortKind.VHOST, "b", 9018);
    this.engine.add(pa);
    this.engine.add(pb);
    pa.mem = this.#a.mem;
    pa.vq!.setQueue(1, this.#a.ring(), -1);
    pb.mem = this.#b.mem;
    pb.vq!.setQueue(0, this.#b.ring(), -1);
    pb.vq!.mergeable = true;
    this.engine.updateWindow();
    // B must be known, or every frame would flood (to B anyway, but via the flood path).
    this.engine.fdb.learn(0x0200, 0x02, 1, 0);
  }

  /** One engine round plus both guests' work; returns frames forwarded. */
  step(): number {
    const n = this.engine.round(0);
    this.#a.post(this.#a.reap());
    this.#b.post(this.#b.reap());
    return n;
  }

  /** One engine round at time `now` (ms) with no guest work; returns frames taken. */
  round(now: number): number {
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

  /** Frames delivered to B so far. */
  get delivered(): number {
    return this.counters[COUNTERS_PER_PORT + C.txPackets];
  }

  /** Releases the memory. */
  close(): void {
    this.#a.tm.close();
    this.#b.tm.close();
  }
}
