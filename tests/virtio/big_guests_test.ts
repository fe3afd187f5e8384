/**
 * Four guests of 4 GiB each (sparse memfds: only touched pages cost RAM),
 * mapped the way QEMU hands them over, with buffers above 2 GiB and above
 * 4 GiB: every copy between them takes a pair window (no allocation) and
 * the bytes arrive.
 */
import { assert, assertEquals } from "@std/assert";
import {
  closeWindow,
  type Range,
  updateWindow,
  windowInfo,
} from "../../src/virtio/address_window.ts";
import { copySegments, SegList, segmentChunk } from "../../src/virtio/chain.ts";
import { GuestMemory } from "../../src/virtio/guest_memory.ts";
import { mmap, munmap } from "../../ffi/memory.ts";
import { MAP_ANONYMOUS, MAP_SHARED, PROT_READ, PROT_WRITE } from "../../ffi/constants.ts";
import { HIGH_GPA, Q35_LOW, TestMemory } from "../helpers/memfd_memory.ts";

const GIB = 2 ** 30;

function firstDifference(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : a.length;
}

Deno.test("4 × 4 GiB guests: copies between buffers above 2 and 4 GiB take pair windows", () => {
  const tms = [0, 1, 2, 3].map(() => new TestMemory(4 * GIB));
  const scratch = mmap(-1, 1 << 20, 0, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS);
  try {
    // Guest 0: one region of 4 GiB (the way a single memory backend arrives);
    // guests 1-3: q35's 2 GiB at 0 and 2 GiB at 4 GiB, each mapped on its own.
    const mems = tms.map((tm, g) => new GuestMemory(tm.qemuRegions(g === 0 ? 4 * GIB : Q35_LOW)));
    const ranges: Range[] = [{ address: scratch.address, size: 1 << 20 }];
    for (const m of mems) {
      for (let i = 0; i < m.count; i++) {
        m.range[i] = ranges.length; // as Engine.updateWindow numbers them
        ranges.push({ address: m.base[i], size: m.size[i] });
      }
    }
    assert(updateWindow(ranges), JSON.stringify(windowInfo()));
    const w = windowInfo();
    assertEquals(w.mode, "chunked");
    assertEquals(w.chunks, 1 + 5 + 3 * 2 * 3); // scratch, 4 GiB region, 2 GiB regions
    assertEquals(w.pairs, (w.chunks * (w.chunks - 1)) / 2);

    // Buffers (guest-physical) per guest: above 2 GiB, at its top, above 4 GiB.
    const places = [
      [2 * GIB + 12345, 3.5 * GIB + 2, 4 * GIB - 70_000],
      [HIGH_GPA + 12, HIGH_GPA + 2 * GIB - 65_600, Q35_LOW - 70_000],
      [HIGH_GPA + GIB - 100, 1 * GIB - 300, HIGH_GPA + 1.5 * GIB + 1],
      [HIGH_GPA + 2 * GIB - 1514, 12, HIGH_GPA + 0.75 * GIB + 3],
    ];
    const seg = (g: number, gpa: number, len: number) => {
      const m = mems[g];
      const off = m.translate(gpa, len);
      assert(off >= 0, `guest ${g} maps ${gpa}`);
      const r = m.region;
      const l = new SegList(1);
      l.push(m.u8[r], m.u32[r], off, len, m.base[r] + off, gpa, m.range[r]);
      assert(segmentChunk(l, 0).chunk >= 0, `guest ${g} @${gpa.toString(16)} is on a window`);
      return l;
    };
    // Bytes at a guest-physical address, read through the memfd's own mapping.
    const memfdOffset = (g: number, gpa: number) =>
      g === 0 || gpa < HIGH_GPA ? gpa : gpa - HIGH_GPA + Q35_LOW;
    let copies = 0;
    for (let s = 0; s < 4; s++) {
      for (let d = 0; d < 4; d++) {
        if (s === d) continue;
        for (let i = 0; i < 3; i++) {
          const sg = places[s][i], dg = places[d][(i + s + d) % 3];
          for (const n of [1514, 65_536]) {
            const len = Math.min(n, 4 * GIB - memfdOffset(s, sg), 4 * GIB - memfdOffset(d, dg));
            const so = memfdOffset(s, sg), dOff = memfdOffset(d, dg);
            const src = tms[s].bytes.subarray(so, so + len);
            for (let k = 0; k < len; k += 97) src[k] = (k + s * 3 + d + i) & 0xff;
            src[len - 1] = 0x5a;
            assertEquals(copySegments(seg(d, dg, len), 0, seg(s, sg, len), 0, len), len);
            const got = tms[d].bytes.subarray(dOff, dOff + len);
            assertEquals(
              firstDifference(got, src),
              -1,
              `${s}@${sg.toString(16)} → ${d}@${dg.toString(16)}, ${len} B`,
            );
            copies++;
          }
        }
      }
    }
    assertEquals(copies, 72);
  } finally {
    closeWindow();
    munmap(scratch);
    for (const tm of tms) tm.close();
  }
});
