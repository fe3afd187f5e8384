/**
 * Copy windows (src/virtio/address_window.ts): the chunk plan, which chunk
 * a segment gets, and copies through pair windows, the word loop and the
 * single window, checked byte for byte through the original mappings.
 */
import { assert, assertEquals, assertMatch } from "@std/assert";
import {
  CHUNK,
  CHUNK_OVERLAP,
  CHUNK_SPAN,
  closeWindow,
  configureWindow,
  planChunks,
  updateWindow,
  win,
  WINDOW_MAX_SPAN,
  windowInfo,
} from "../../src/virtio/address_window.ts";
import { copySegments, SegList, segmentChunk } from "../../src/virtio/chain.ts";
import { ftruncate, mmap, munmap } from "../../ffi/memory.ts";
import { cString, libc } from "../../ffi/libc.ts";
import { closeFd } from "../../ffi/io.ts";
import { requireOrSkip, uniqueSuffix } from "../helpers/env.ts";
import {
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  MAP_SHARED,
  O_CLOEXEC,
  O_CREAT,
  O_RDWR,
  PROT_READ,
  PROT_WRITE,
} from "../../ffi/constants.ts";
import { TestMemory } from "../helpers/memfd_memory.ts";
import { windowMappings } from "../helpers/procfs.ts";

const MIB = 1024 * 1024;

Deno.test("chunk plan: boundaries, a range of exactly CHUNK, unaligned starts", () => {
  assert(2 * CHUNK_SPAN < 2 ** 31, "a pair window's offsets stay Smis");
  assertEquals(CHUNK_SPAN % 4096, 0);
  assertEquals(CHUNK % 4096, 0);
  const p = planChunks([
    { address: 0x7000_0000_0000, size: 4096 * 3 + 100 }, // the scratch: one chunk
    { address: 0x7100_0000_0000, size: CHUNK }, // exactly one chunk
    { address: 0x7200_0000_0000, size: CHUNK + 1 }, // one byte into a second
    { address: 0x7300_0000_0123, size: 2 * CHUNK }, // unaligned: starts at its page
  ]);
  assertEquals(p.map((c) => c.range), [0, 1, 2, 2, 3, 3, 3]);
  assertEquals(p[0].length, 4096 * 3 + 100);
  assertEquals(p[1].length, CHUNK);
  assertEquals([p[2].length, p[3].length], [CHUNK + 1, 1]);
  assertEquals(p[3].address, 0x7200_0000_0000 + CHUNK);
  assertEquals(p[4].address, 0x7300_0000_0000);
  assertEquals([p[5].address - p[4].address, p[6].length], [CHUNK, 0x123]);
});

/** `len` bytes at `off` of `tm` (range `range`) as a one-segment list. */
function seg(tm: TestMemory, off: number, len: number, range: number): SegList {
  const l = new SegList(2);
  l.push(tm.bytes, new Uint32Array(tm.map.buffer), off, len, tm.map.address + off, -1, range);
  return l;
}

function fill(tm: TestMemory, off: number, len: number, seed: number): Uint8Array {
  const b = new Uint8Array(len);
  for (let i = 0; i < len; i++) b[i] = (i * 7 + seed) & 0xff;
  tm.bytes.set(b, off);
  return b;
}

Deno.test("chunked windows: a segment's chunk, straddling into the overlap, copies both ways", () => {
  // Two sparse memfds: a (2 chunks and a bit) and b (one chunk).
  const a = new TestMemory(2 * CHUNK + 8 * MIB), b = new TestMemory(64 * MIB);
  try {
    configureWindow({ mode: "chunked" });
    const ranges = [{ address: a.map.address, size: a.size }, {
      address: b.map.address,
      size: b.size,
    }];
    assert(updateWindow(ranges), JSON.stringify(windowInfo()));
    assertEquals(windowInfo().chunks, 4); // a: 3 chunks, b: 1
    assertEquals(windowInfo().pairs, 6);
    // A second mapping per chunk and two per pair; a rebuild unmaps the old ones.
    assertEquals(windowMappings().length, 4 + 2 * 6);
    updateWindow(ranges);
    assertEquals(windowMappings().length, 4 + 2 * 6);

    // Chunk of a segment: start chunk, offset in it; out of span or range: none.
    const at = (off: number, len: number, range = 0) => {
      const l = seg(a, off, len, range);
      const { chunk, offset } = segmentChunk(l, 0);
      return [chunk, offset];
    };
    assertEquals(at(0, 100), [0, 0]);
    assertEquals(at(CHUNK - 100, 1600), [0, CHUNK - 100]); // straddles into the overlap
    assertEquals(at(CHUNK, 64), [1, 0]);
    assertEquals(at(CHUNK - 100, CHUNK_OVERLAP + 100), [0, CHUNK - 100]); // to the span's end
    assertEquals(at(CHUNK - 100, CHUNK_OVERLAP + 101)[0], -1); // one byte past it
    assertEquals(at(2 * CHUNK + 100, 64), [2, 100]);
    assertEquals(at(a.size - 64, 65)[0], -1); // past the range
    assertEquals(at(0, 100, 1)[0], -1); // the wrong range
    assertEquals(at(0, 100, 7)[0], -1); // no such range

    // Copies between chunks, in the overlap, both directions: the bytes arrive.
    const cases: [number, number][] = [
      [CHUNK - 700, 5 * MIB + 3], // a chunk 0, straddling its edge → b
      [CHUNK + 5, 1 * MIB + 1],
      [2 * CHUNK + 4 * MIB + 2, 20 * MIB + 1],
    ];
    for (const [aOff, bOff] of cases) {
      for (const n of [1500, 9000, 65550]) {
        const src = fill(a, aOff, n, n);
        const sl = seg(a, aOff, n, 0), dl = seg(b, bOff, n, 1);
        assert(
          segmentChunk(sl, 0).chunk >= 0 && segmentChunk(dl, 0).chunk >= 0,
          "both on a window",
        );
        b.bytes.fill(0, bOff - 8, bOff + n + 8);
        assertEquals(copySegments(dl, 0, sl, 0, n), n);
        assertEquals(b.bytes.subarray(bOff, bOff + n), src, `a@${aOff} → b@${bOff}, ${n} B`);
        assertEquals(b.bytes[bOff - 1], 0, "nothing before");
        assertEquals(b.bytes[bOff + n], 0, "nothing after");
        const back = fill(b, bOff, n, n + 1);
        assertEquals(copySegments(sl, 0, dl, 0, n), n);
        assertEquals(a.bytes.subarray(aOff, aOff + n), back, `b@${bOff} → a@${aOff}`);
      }
    }
    // Inside one chunk (the original mapping's view) and between a's own chunks.
    const s1 = fill(a, 100, 3000, 9);
    copySegments(seg(a, CHUNK - 50, 3000, 0), 0, seg(a, 100, 3000, 0), 0, 3000);
    assertEquals(a.bytes.subarray(CHUNK - 50, CHUNK - 50 + 3000), s1);
    const before = a.bytes.slice(150, 3150); // overlapping: copyWithin moves like memmove
    copySegments(seg(a, 200, 3000, 0), 0, seg(a, 150, 3000, 0), 0, 3000);
    assertEquals(a.bytes.subarray(200, 3200), before);
    closeWindow();
    assertEquals(windowMappings().length, 0, "closed: every window unmapped");
  } finally {
    closeWindow();
    configureWindow({});
    a.close();
    b.close();
  }
});

Deno.test("no window: stale lists, no pairs and odd phases copy through the word loop", () => {
  const a = new TestMemory(2 * CHUNK), b = new TestMemory(16 * MIB);
  try {
    configureWindow({ mode: "chunked" });
    const ranges = [{ address: a.map.address, size: a.size }, {
      address: b.map.address,
      size: b.size,
    }];
    updateWindow(ranges);
    const stale = seg(a, CHUNK + 4000, 1500, 0);
    updateWindow(ranges); // a rebuild: lists filled before it have no windows
    const src = fill(a, CHUNK + 4000, 1500, 3);
    copySegments(seg(b, 64, 1500, 1), 0, stale, 0, 1500);
    assertEquals(b.bytes.subarray(64, 1564), src);

    configureWindow({ mode: "chunked", maxPairs: 0 });
    assertEquals(updateWindow(ranges), false);
    assertMatch(windowInfo().reason, /pair windows > 0/);
    // Every source and destination phase, lengths around the word loop's edges.
    for (let sp = 0; sp < 4; sp++) {
      for (let dp = 0; dp < 4; dp++) {
        for (const n of [1, 3, 7, 8, 9, 300, 1501]) {
          const so = CHUNK + 8192 + sp, dOff = 4096 + dp;
          const bytes = fill(a, so, n, sp * 16 + dp + n);
          b.bytes.fill(0xee, dOff - 4, dOff + n + 4);
          copySegments(seg(b, dOff, n, 1), 0, seg(a, so, n, 0), 0, n);
          assertEquals(b.bytes.subarray(dOff, dOff + n), bytes, `phases ${sp}/${dp}, ${n} B`);
          assertEquals([b.bytes[dOff - 1], b.bytes[dOff + n]], [0xee, 0xee]);
        }
      }
    }
  } finally {
    closeWindow();
    configureWindow({});
    a.close();
    b.close();
  }
});

Deno.test("the scratch (shared anonymous) gets pair windows; a private mapping cannot", () => {
  const g = new TestMemory(CHUNK + MIB);
  const scratch = mmap(-1, 200_000, 0, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS);
  const priv = mmap(-1, 200_000, 0, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
  try {
    configureWindow({ mode: "chunked" });
    const s8 = new Uint8Array(scratch.buffer), s32 = new Uint32Array(scratch.buffer);
    assert(updateWindow([{ address: scratch.address, size: 200_000 }, {
      address: g.map.address,
      size: g.size,
    }]));
    const frame = new Uint8Array(1514).map((_, i) => i * 13);
    s8.set(frame, 12);
    const sl = new SegList(1);
    sl.push(s8, s32, 12, 1514, scratch.address + 12); // range 0 by default
    assertEquals(segmentChunk(sl, 0).chunk, 0);
    const dOff = CHUNK + 12;
    const dl = seg(g, dOff, 1514, 1);
    assertEquals(segmentChunk(dl, 0).chunk, 2);
    copySegments(dl, 0, sl, 0, 1514);
    assertEquals(g.bytes.subarray(dOff, dOff + 1514), frame);

    assertEquals(
      updateWindow([{ address: priv.address, size: 200_000 }, {
        address: g.map.address,
        size: g.size,
      }]),
      false,
    );
    assertMatch(windowInfo().reason, /Cannot duplicate a mapping: .*mremap.*EINVAL/);
    assertEquals(windowInfo().pairs, 0);
    // Without pair windows, one window over the ranges that fit together still serves
    // copies between them: both, when the kernel placed them within 2^31 of each other.
    const lo = Math.min(priv.address, g.map.address);
    const hi = Math.max(priv.address + 200_000, g.map.address + g.size);
    const together = hi - lo <= WINDOW_MAX_SPAN;
    assertEquals(windowInfo().mode, "single");
    assertMatch(
      windowInfo().reason,
      together ? /one window over 2 of 2/ : /one window over 1 of 2/,
    );
    const p8 = new Uint8Array(priv.buffer);
    p8.set(frame, 40);
    const pl = new SegList(1);
    pl.push(p8, new Uint32Array(priv.buffer), 40, 1514, priv.address + 40);
    g.bytes.fill(0, dOff, dOff + 1514);
    const gl = seg(g, dOff, 1514, 1);
    if (together) {
      assertEquals(segmentChunk(pl, 0).chunk, 0, "the private mapping is in the window");
      assertEquals(segmentChunk(gl, 0).chunk, 0, "and so is the guest");
    }
    copySegments(gl, 0, pl, 0, 1514);
    assertEquals(g.bytes.subarray(dOff, dOff + 1514), frame);
  } finally {
    closeWindow();
    configureWindow({});
    munmap(scratch);
    munmap(priv);
    g.close();
  }
});

Deno.test("single window when the span fits: any range, no mapping made", () => {
  const a = new TestMemory(4 * MIB), b = new TestMemory(4 * MIB);
  try {
    assert(updateWindow([{ address: a.map.address, size: a.size }, {
      address: b.map.address,
      size: b.size,
    }]));
    assertEquals(windowInfo().mode, "single");
    assert(win.single);
    const src = fill(a, 1001, 1500, 1);
    const sl = seg(a, 1001, 1500, 5); // the range does not matter here
    assertEquals(segmentChunk(sl, 0).chunk, 0);
    copySegments(seg(b, 2001, 1500, 0), 0, sl, 0, 1500);
    assertEquals(b.bytes.subarray(2001, 3501), src);
  } finally {
    closeWindow();
    a.close();
    b.close();
  }
});

Deno.test("packed window: ranges side by side in one view; a wrong or stale range copies anyway", () => {
  const a = new TestMemory(4 * MIB), b = new TestMemory(8 * MIB);
  try {
    configureWindow({ mode: "packed" });
    assert(updateWindow([{ address: a.map.address + 100, size: a.size - 100 }, {
      address: b.map.address,
      size: b.size,
    }]));
    const info = windowInfo();
    assertEquals([info.mode, info.chunks, info.pairs, info.fromFile], ["packed", 2, 0, 0]);
    assert(win.packed && !win.single);
    // Range 0 starts at its page (a's first byte), each range at a 2 MiB boundary.
    assertEquals([...win.rangeAt], [0, 4 * MIB]);
    const src = fill(a, 4 * MIB - 1600, 1500, 3);
    const sl = seg(a, 4 * MIB - 1600, 1500, 0);
    assertEquals(segmentChunk(sl, 0), { chunk: 0, offset: 4 * MIB - 1600 });
    const dl = seg(b, 8 * MIB - 1500, 1500, 1); // ends at the range's last byte
    assertEquals(segmentChunk(dl, 0), { chunk: 0, offset: 4 * MIB + 8 * MIB - 1500 });
    assertEquals(copySegments(dl, 0, sl, 0, 1500), 1500);
    assertEquals(b.bytes.subarray(8 * MIB - 1500), src);
    const back = fill(b, 777, 9000, 4);
    assertEquals(copySegments(seg(a, 5, 9000, 0), 0, seg(b, 777, 9000, 1), 0, 9000), 9000);
    assertEquals(a.bytes.subarray(5, 9005), back, "b → a");
    // A segment named by the wrong range, or by none the window knows, is not in the
    // window (its bytes lie outside that range): the word loop, same bytes.
    for (const wrong of [1, 2, -1]) {
      const bad = seg(a, 3000, 1500, wrong);
      assertEquals(segmentChunk(bad, 0).chunk, -1, `range ${wrong}`);
      b.bytes.fill(0, 0, 1500);
      const want = fill(a, 3000, 1500, wrong + 9);
      assertEquals(copySegments(seg(b, 0, 1500, 1), 0, bad, 0, 1500), 1500);
      assertEquals(b.bytes.subarray(0, 1500), want, `range ${wrong}: copied all the same`);
    }
  } finally {
    closeWindow();
    configureWindow({});
    a.close();
    b.close();
  }
});

Deno.test("hugetlbfs memory gets pair windows from its file; without the fd it gets none", () => {
  // What QEMU guests on /dev/hugepages and DPDK's virtio-user hand us: mremap cannot
  // duplicate it, so the window maps the region's fd again at the chunk's offset.
  const why = Deno.uid() !== 0
    ? "needs root (hugepages)"
    : Number(Deno.readTextFileSync("/proc/meminfo").match(/HugePages_Free:\s+(\d+)/)?.[1] ?? 0) <
        8
    ? "needs 8 free 2 MiB hugepages"
    : undefined;
  if (!requireOrSkip("hugetlbfs copy windows", why)) return;
  const path = `/dev/hugepages/vswitch-window-${uniqueSuffix()}`;
  const rawFd = libc.open(cString(path), O_RDWR | O_CREAT | O_CLOEXEC, 0o600);
  assert(rawFd >= 0, `open ${path}`);
  const b = new TestMemory(64 * MIB);
  let h: ReturnType<typeof mmap> | undefined;
  try {
    // 8 MiB of hugepages, the region's first byte 2 MiB into the file (as QEMU's high region
    // of one backing file starts at its offset there).
    ftruncate(rawFd, 10 * MIB);
    h = mmap(rawFd, 8 * MIB, 2 * MIB);
    const hb = new Uint8Array(h.buffer), h32 = new Uint32Array(h.buffer), hAddr = h.address;
    configureWindow({ mode: "chunked" });
    const ranges = [
      { address: h.address, size: 8 * MIB, fd: rawFd, fileOffset: 2 * MIB },
      { address: b.map.address, size: b.size },
    ];
    assert(updateWindow(ranges), JSON.stringify(windowInfo()));
    assertEquals(windowInfo().pairs, 1);
    assertEquals(windowInfo().fromFile, 2, "its own window and its half of the pair");
    const hl = (off: number, n: number) => {
      const l = new SegList(1);
      l.push(hb, h32, off, n, hAddr + off, -1, 0);
      return l;
    };
    const copiesBothWays = () => {
      for (const [hOff, bOff, n] of [[12, 5 * MIB + 3, 1514], [6 * MIB + 7, 100, 65550]]) {
        const src = new Uint8Array(n).map((_, i) => (i * 7 + n) & 0xff);
        hb.set(src, hOff);
        const sl = hl(hOff, n), dl = seg(b, bOff, n, 1);
        assert(segmentChunk(sl, 0).chunk >= 0 && segmentChunk(dl, 0).chunk >= 0, "on a window");
        assertEquals(copySegments(dl, 0, sl, 0, n), n);
        assertEquals(b.bytes.subarray(bOff, bOff + n), src, `huge@${hOff} → b@${bOff}`);
        const back = fill(b, bOff, n, n + 1);
        assertEquals(copySegments(sl, 0, dl, 0, n), n);
        assertEquals(hb.subarray(hOff, hOff + n), back, "b → huge: the guest's own pages");
      }
    };
    copiesBothWays();
    // Packed (what bench:loop's testpmd memory gets): both ranges side by side in one
    // view, the hugetlbfs one mapped from its file at its offset.
    configureWindow({ mode: "packed" });
    assert(updateWindow(ranges), JSON.stringify(windowInfo()));
    assertEquals([windowInfo().mode, windowInfo().fromFile], ["packed", 1]);
    copiesBothWays();
    configureWindow({ mode: "chunked" });
    // Without its fd the same memory cannot be windowed twice: no pairs, and the reason.
    assertEquals(updateWindow([{ address: h.address, size: 8 * MIB }, ranges[1]]), false);
    assertEquals(windowInfo().pairs, 0);
    assertMatch(windowInfo().reason, /Cannot duplicate a mapping: .*mremap/);
  } finally {
    closeWindow();
    configureWindow({});
    if (h) munmap(h);
    b.close();
    closeFd(rawFd);
    Deno.removeSync(path);
  }
});
