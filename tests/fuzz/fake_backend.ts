/**
 * `FakeBackend`: the `DeviceBackend` targets `a` and `a2` give the device,
 * standing in for the dataplane worker and recording every violation of
 * what the device may hand it.
 *
 * @module
 */

import { type DeviceBackend, NUM_RINGS } from "../../src/vhost_user/device.ts";
import type { MappedRegion } from "../../src/types/memory.ts";
import { MAX_RING_SIZE } from "../../src/vhost_user/protocol.ts";
import type { QueueStart } from "../../src/types/queue.ts";
import { GuestMemory } from "../../src/virtio/guest_memory.ts";
import { ringPartSizes, SplitRing } from "../../src/virtio/split_ring.ts";
import { queueOptions } from "../../src/virtio/virtqueue.ts";
import { describe } from "./common.ts";
import { isOpen } from "./fds.ts";

/**
 * A DeviceBackend standing in for the dataplane worker, checking what the
 * device hands it: memory only while no ring runs (item 9), ring parts
 * inside a mapped region, aligned as §2.7 requires (desc 16, avail 2,
 * used 4), sizes a power of two ≤ 32768 (items 11, 12), live fds. It builds
 * the same GuestMemory and SplitRing the worker would and checks they read
 * and write where the device said. Violations are recorded, not thrown:
 * the device must not see an error it would not see in production.
 */
export class FakeBackend implements DeviceBackend {
  regions: MappedRegion[] | null = null;
  mem: GuestMemory | null = null;
  readonly running = new Map<number, QueueStart>();
  readonly violations: string[] = [];
  starts = 0;

  #v(msg: string): void {
    this.violations.push(msg);
  }

  setMemory(regions: MappedRegion[] | null): Promise<void> {
    if (this.running.size > 0) {
      this.#v(
        `setMemory(${regions === null ? "null" : "table"}) while rings ${[
          ...this.running.keys(),
        ]} run (item 9)`,
      );
    }
    this.regions = regions;
    this.mem = null;
    if (regions !== null) {
      regions.forEach((r, i) => {
        if (
          !(Number.isSafeInteger(r.gpa) && r.gpa >= 0 && r.size > 0 && Number.isSafeInteger(r.size))
        ) {
          this.#v(`region ${i} has gpa ${r.gpa} size ${r.size}`);
          return;
        }
        // A mapping past the end of its file would SIGBUS right here (item 7).
        const p = new Deno.UnsafePointerView(Deno.UnsafePointer.create(BigInt(r.address))!);
        p.getUint8(0);
        p.getUint8(r.size - 1);
      });
      try {
        const mem = new GuestMemory(regions);
        regions.forEach((r, i) => {
          const want = [r.size, Math.floor(r.size / 2), Math.floor(r.size / 4)];
          const got = [mem.u8[i].length, mem.u16[i].length, mem.u32[i].length];
          if (want.some((w, k) => w !== got[k])) {
            this.#v(
              `GuestMemory views of region ${i} (${r.size} B) cover ${got} elements, want ${want}`,
            );
          }
        });
        this.mem = mem;
      } catch (e) {
        this.#v(`GuestMemory cannot view the table the device accepted: ${describe(e)}`);
      }
    }
    return Promise.resolve();
  }

  setLog(log: { address: number; size: number } | null): Promise<void> {
    if (log !== null) {
      // The log must be mapped where the device says (a SIGBUS here otherwise).
      const p = new Deno.UnsafePointerView(Deno.UnsafePointer.create(BigInt(log.address))!);
      p.getUint8(0);
      p.getUint8(log.size - 1);
    }
    return Promise.resolve();
  }

  inject(frame: Uint8Array): Promise<void> {
    if (frame.length < 14) this.#v(`inject of a ${frame.length}-byte frame`);
    return Promise.resolve();
  }

  startQueue(s: QueueStart): Promise<void> {
    this.starts++;
    const where = `start of ring ${s.q}`;
    if (this.running.has(s.q)) this.#v(`${where}: already running`);
    if (s.q < 0 || s.q >= NUM_RINGS) this.#v(`${where}: no such ring`);
    if (s.size < 1 || s.size > MAX_RING_SIZE || (s.size & (s.size - 1)) !== 0) {
      this.#v(`${where}: size ${s.size} (item 11)`);
    }
    if (!(s.base >= 0 && s.base <= 0xffff)) this.#v(`${where}: base ${s.base}`);
    if (s.hdrLen !== 10 && s.hdrLen !== 12) this.#v(`${where}: header ${s.hdrLen}`);
    for (const fd of [s.kickFd, s.callFd]) {
      if (fd !== -1 && !isOpen(fd)) this.#v(`${where}: fd ${fd} is not open`);
    }
    const regions = this.regions;
    if (regions === null) {
      this.#v(`${where}: no memory table`);
      this.running.set(s.q, s);
      return Promise.resolve();
    }
    const sizes = ringPartSizes(s.size);
    const parts = [["desc", s.desc, sizes.desc, 16], ["avail", s.avail, sizes.avail, 2], [
      "used",
      s.used,
      sizes.used,
      4,
    ]] as const;
    let ok = true;
    for (const [name, part, len, align] of parts) {
      const r = regions[part.region];
      if (
        r === undefined || !Number.isSafeInteger(part.offset) || part.offset < 0 ||
        part.offset + len > r.size || part.offset % align !== 0
      ) {
        this.#v(
          `${where}: ${name} at region ${part.region} offset ${part.offset} (+${len}) not inside / not ${align}-aligned (item 12)`,
        );
        ok = false;
      }
    }
    if (ok && this.mem !== null) this.#useRing(s);
    this.running.set(s.q, s);
    return Promise.resolve();
  }

  // The worker's SplitRing must read avail.idx and write used.flags at the
  // offsets the device validated (typed-array views silently ignore writes
  // beyond their end, and Atomics throw: both would break the port).
  #useRing(s: QueueStart): void {
    const mem = this.mem!;
    const where =
      `ring ${s.q} (size ${s.size}, avail at ${s.avail.region}:${s.avail.offset}, used at ${s.used.region}:${s.used.offset})`;
    try {
      const ring = new SplitRing(queueOptions(mem, s, s.hdrLen + 9018));
      const a = mem.u8[s.avail.region], ao = s.avail.offset + 2;
      const saved = [a[ao], a[ao + 1]];
      const marker = (s.base + 1) & 0xffff;
      a[ao] = marker & 0xff;
      a[ao + 1] = marker >>> 8;
      const n = ring.available();
      a[ao] = saved[0];
      a[ao + 1] = saved[1];
      if (n !== 1) this.#v(`${where}: available() = ${n} after avail.idx = base + 1`);
      if (!s.eventIdx) {
        const u = mem.u8[s.used.region], uo = s.used.offset;
        const keep = [u[uo], u[uo + 1]];
        u[uo] = 0;
        u[uo + 1] = 0;
        ring.setNoNotify(true);
        const flag = u[uo] | (u[uo + 1] << 8);
        u[uo] = keep[0];
        u[uo + 1] = keep[1];
        if (flag !== 1) this.#v(`${where}: setNoNotify(true) did not set used.flags`);
      }
    } catch (e) {
      this.#v(`${where}: SplitRing failed on a validated ring: ${describe(e)}`);
    }
  }

  stopQueue(q: number): Promise<number> {
    const s = this.running.get(q);
    if (s === undefined) {
      this.#v(`stop of ring ${q} that is not running`);
      return Promise.resolve(0);
    }
    this.running.delete(q);
    return Promise.resolve(s.base);
  }

  setCall(q: number, fd: number): Promise<void> {
    if (!this.running.has(q)) this.#v(`setCall on ring ${q} that is not running`);
    if (fd !== -1 && !isOpen(fd)) this.#v(`setCall(${q}, ${fd}): fd not open`);
    return Promise.resolve();
  }

  setMtu(mtu: number): Promise<void> {
    if (!(Number.isInteger(mtu) && mtu >= 68 && mtu <= 65535)) this.#v(`setMtu(${mtu})`);
    return Promise.resolve();
  }

  take(): string[] {
    return this.violations.splice(0);
  }
}
