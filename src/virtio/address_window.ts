/**
 * Copy windows: byte views under which `copyWithin` moves bytes between
 * any two mapped ranges (every guest region this thread maps, and the
 * engine's scratch memory) with no allocation.
 *
 * Why windows at all: `dst.set(src.subarray(...))` allocates a typed array
 * per copy; `copyWithin` on one view spanning both buffers allocates
 * nothing (~40 ns + memmove, bench/forward_bench.ts). But its offsets must
 * be V8 small integers (Smis): a larger offset is boxed as a HeapNumber on
 * every builtin call, 48 bytes of garbage per copy. Deno's V8 has no
 * pointer compression, so Smis are 32-bit: copyWithin at offsets up to
 * 2^31 - 8192 in a 2 GiB view allocated nothing per call, at 2^31 + 8 it
 * allocated 48 bytes per call (a 10^6-copy probe of 1500 B, 2026-12-01).
 * Real guests have 2–16 GiB and a switch has several, so one view cannot
 * span them. Four modes, chosen by `updateWindow` on the control path:
 *
 * - single: the whole span (lowest to highest mapped address) is below
 *   2^31. One view from the lowest address; nothing is mapped for it.
 * - packed: the span is not, but the ranges' bytes are (the kernel put
 *   the worker's scratch and the guests' regions gigabytes apart, as it
 *   does with DPDK's hugetlbfs memory in bench:loop, or small guests).
 *   Every range is mapped again, side by side, into one view below 2^31
 *   (by mremap or from its file, as chunks are below), and a copy finds
 *   its bytes there from the segment's range: three loads a side. A
 *   chunked copy costs 20 ns more than a single one (a probe of 1500 B
 *   copySegments between two memfd ranges, 2026-12-06: 58 against 79 ns),
 *   which cost bench:loop's 1500 B case 11 % against the code before
 *   windows (`bench:loop-ab 844e06f`); see the README's "Guest memory
 *   size" for what packed mode measured.
 * - chunked: every range is cut into chunks that start CHUNK bytes apart
 *   and reach CHUNK_SPAN = CHUNK + CHUNK_OVERLAP bytes. A segment (one
 *   descriptor's buffer) belongs to the chunk it starts in, if it ends
 *   inside that chunk's span (SegList.push works that out once); every
 *   copy piece lies inside one segment, so inside that chunk. For each
 *   pair of chunks a < b, a "pair window" holds a second mapping of chunk
 *   a at 0 and of chunk b at CHUNK_SPAN, made with mremap(old, 0, len,
 *   MAYMOVE|FIXED, to) (ffi/memory.ts duplicateAt: the same pages, so a
 *   store through the window is a store to the guest). Each chunk also
 *   gets a window of its own, for copies inside it. All offsets stay below
 *   2 × CHUNK_SPAN < 2^31. A copy from chunk a to chunk b indexes
 *   `views[a * chunks + b]` (chain.ts copyPiece).
 * - no window for a segment (it is not inside one chunk, its list was
 *   filled before the last rebuild, or the pairs were not made): the copy
 *   falls back to a 32-bit word loop, allocation-free at any offset in
 *   optimized code (tests/switch/heap_test.ts `--max-pairs 0`) but slower.
 *
 * Bounds: pair windows grow with the square of the chunk count (N chunks:
 * N(N-1)/2 windows). Four 4 GiB guests in QEMU's two 2 GiB regions each
 * (3 chunks a region) plus the scratch: 25 chunks, 300 pair windows, each
 * 2 GiB of address space and 2–4 VMAs; built in ~30 ms. Above
 * MAX_PAIR_WINDOWS (4096: ~90 GiB of guest memory, 8 TiB of the 128 TiB
 * user address space, ~16,000 of the 65,530 VMAs vm.max_map_count
 * allows) no pairs are made and copies between chunks use the word loop;
 * above MAX_CHUNKS (256) every copy does.
 *
 * Page tables: a window maps the same pages again, so a guest page a copy
 * touches through a window costs one more page-table entry (8 B per 4 KiB
 * page per window it is touched through), kept until the rebuild.
 *
 * Only addresses that passed a guest-memory translation are ever touched
 * through a window; making windows commits no memory. A window keeps the
 * pages it maps alive until the next rebuild, which the engine runs after
 * every memory table change and port removal (so a guest's memory is
 * released even if its table is unmapped first).
 *
 * hugetlbfs memory (QEMU guests on `/dev/hugepages`, DPDK's virtio-user)
 * cannot be duplicated by mremap (it may not grow a hugetlbfs mapping): a
 * chunk of such a range is mapped again from its file instead (`Range.fd`,
 * the vhost-user region's fd, kept open by the memory table), at the
 * offset of the chunk's first byte. That needs huge-page alignment of the
 * file offset, the length and the place: chunk starts and spans are
 * multiples of HUGE_PAGE, and so is every slot. A range that can be
 * neither duplicated nor mapped from a file leaves no pair windows at all
 * (see `windowInfo`).
 *
 * @module
 */

import { duplicateAt, madvise, mapFileAt, reserve, unmapRange } from "../../ffi/memory.ts";
import { MADV_DONTDUMP } from "../../ffi/constants.ts";

/** Largest span the single window may cover (offsets stay 32-bit Smis). */
export const WINDOW_MAX_SPAN = 2 ** 31 - 1;

const PAGE = 4096;
/**
 * How far one chunk's mapping reaches past the next chunk's start: the
 * longest segment that still gets a window when it starts in the last
 * bytes of a chunk. Segments are descriptor buffers; the ones Linux and
 * DPDK post are at most 64 KiB + a header (a GSO frame in one buffer),
 * so 2 MiB (one huge page, the alignment hugetlbfs chunks need) leaves
 * room; a longer buffer starting within its length of a chunk's end only
 * takes the word loop. Costs nothing but address space.
 */
export const CHUNK_OVERLAP = 2 * 1024 * 1024;
/** hugetlbfs's page on x86-64 (2 MiB): the alignment of chunk starts, spans and slots. */
export const HUGE_PAGE = 2 * 1024 * 1024;
/**
 * Bytes one chunk's mapping covers: 1 GiB less one huge page, so a pair
 * window (two of them side by side) is 2^31 - 4 MiB and every copy
 * offset, end included, stays a Smi. Huge-page aligned, as a second
 * mapping of hugetlbfs memory needs (and page-aligned, as mremap needs).
 */
export const CHUNK_SPAN = 2 ** 30 - HUGE_PAGE;
/** Distance between chunk starts in a range. */
export const CHUNK = CHUNK_SPAN - CHUNK_OVERLAP;
/** Address space per window: room for two chunks. */
const SLOT = 2 * CHUNK_SPAN;
/** Most pair windows made (see the module notes for what this costs). */
export const MAX_PAIR_WINDOWS = 4096;
/** Most chunks with windows of their own (the pair table has N² entries). */
export const MAX_CHUNKS = 256;

const EMPTY = new Uint8Array(0);

/** The window state of this thread, read by chain.ts per copy. */
export const win = {
  /** Bumped by every rebuild; a segment list filled before it has no windows. */
  epoch: 0,
  /** Single mode: one view from `base` over every range. */
  single: false,
  /** Single mode: address of `views[0][0]`. */
  base: 0,
  /** Single mode: bytes covered. */
  span: 0,
  /** Packed mode: every range mapped again, side by side, into `views[0]`. */
  packed: false,
  /** Packed mode, per range: where its page-aligned start lies in `views[0]`. */
  rangeAt: new Float64Array(0),
  /** Chunk count (1 in single mode); the pair tables have chunks² entries. */
  chunks: 0,
  /** Ranges known (chunked mode); a segment names its range by index. */
  ranges: 0,
  /** Per range: page-aligned start address. */
  rangeStart: new Float64Array(0),
  /** Per range: bytes from that start to the range's end. */
  rangeSize: new Float64Array(0),
  /** Per range: index of its first chunk. */
  rangeFirst: new Int32Array(0),
  /** Per chunk: bytes of it a segment may reach (its span, cut at the range end). */
  chunkLen: new Float64Array(0),
  /** Per pair k = a * chunks + b (copy from chunk a to chunk b): 1 if views[k] holds both. */
  has: new Uint8Array(0),
  /** Per pair: the view. */
  views: [] as Uint8Array[],
  /** Per pair: where chunk a (the source) starts in the view. */
  srcAt: new Float64Array(0),
  /** Per pair: where chunk b (the destination) starts in the view. */
  dstAt: new Float64Array(0),
  /**
   * Copies without a window use `set(subarray())` (one allocation each)
   * instead of the word loop: how the switch copied before pair windows,
   * kept only so benchmarks can show the difference.
   */
  legacy: false,
};

/** A mapped range: address and size. */
export interface Range {
  address: number;
  size: number;
  /** The file the range can be mapped from again (hugetlbfs), or absent / -1. */
  fd?: number;
  /** The offset in that file of the range's first byte. */
  fileOffset?: number;
}

/** How `updateWindow` builds windows (benchmarks and tests; the switch keeps the default). */
export interface WindowOptions {
  /**
   * "auto" (default): single when the span fits, else chunked;
   * "chunked": chunked even when the span fits;
   * "packed": packed even when the span fits (tests), chunked when the bytes do not;
   * "legacy": single when the span fits, else every copy uses set(subarray()).
   */
  mode?: "auto" | "chunked" | "packed" | "legacy";
  /** Pair windows at most (default MAX_PAIR_WINDOWS). */
  maxPairs?: number;
}

/** What the current windows cover, for logs and tests. */
export interface WindowInfo {
  mode: "none" | "single" | "packed" | "chunked" | "fallback";
  chunks: number;
  /** Pair windows mapped. */
  pairs: number;
  /** Chunk mappings made again from a file (hugetlbfs), not duplicated with mremap. */
  fromFile: number;
  /** Why pairs are missing, if they are. */
  reason: string;
}

/** One chunk of a range, as planned. */
export interface Chunk {
  /** Range index. */
  range: number;
  /** Address of the chunk's first byte (page-aligned). */
  address: number;
  /** Bytes a segment may reach from `address`. */
  length: number;
}

/** No windows (before the first rebuild, and after `closeWindow`). */
export const NO_WINDOW: Readonly<WindowInfo> = {
  mode: "none",
  chunks: 0,
  pairs: 0,
  fromFile: 0,
  reason: "",
};

let options: Required<WindowOptions> = { mode: "auto", maxPairs: MAX_PAIR_WINDOWS };
let info: Readonly<WindowInfo> = NO_WINDOW;
/** Reservations this thread mapped (address, length), unmapped on rebuild. */
const reserved: number[] = [];

/** Sets how later rebuilds build windows (benchmarks, tests). */
export function configureWindow(o: WindowOptions): void {
  options = { mode: o.mode ?? "auto", maxPairs: o.maxPairs ?? MAX_PAIR_WINDOWS };
  win.legacy = options.mode === "legacy";
}

/** The current windows. */
export function windowInfo(): WindowInfo {
  return { ...info };
}

/**
 * The chunks of `ranges` in order (range 0's first): each range starts at
 * its page (mremap needs page-aligned addresses), chunk j of it at
 * start + j × CHUNK, reaching CHUNK_SPAN bytes or to the range's end.
 */
export function planChunks(ranges: readonly Range[]): Chunk[] {
  const out: Chunk[] = [];
  ranges.forEach((r, i) => {
    const start = r.address - (r.address % PAGE);
    const size = r.address + r.size - start;
    for (let off = 0; off === 0 || off < size; off += CHUNK) {
      out.push({ range: i, address: start + off, length: Math.min(CHUNK_SPAN, size - off) });
    }
  });
  return out;
}

/**
 * Rebuilds the windows over `ranges` (control path), unmapping the old
 * ones first. Segment lists must name a range by its index in `ranges`
 * (SegList.push); lists filled before this call get no windows. Returns
 * whether every copy between ranges has a window.
 */
export function updateWindow(ranges: readonly Range[]): boolean {
  release();
  win.epoch++;
  if (ranges.length === 0) return false;
  let lo = Infinity, hi = 0;
  for (const r of ranges) {
    if (r.address < lo) lo = r.address;
    if (r.address + r.size > hi) hi = r.address + r.size;
  }
  if (hi - lo <= WINDOW_MAX_SPAN && options.mode !== "chunked" && options.mode !== "packed") {
    setSingle(lo, hi);
    info = { ...NO_WINDOW, mode: "single", chunks: 1 };
    return true;
  }
  if ((options.mode === "auto" || options.mode === "packed") && setPacked(ranges)) return true;
  if (options.mode === "legacy") {
    info = { ...NO_WINDOW, mode: "fallback", reason: "legacy mode: set(subarray())" };
    return false;
  }
  const chunks = planChunks(ranges);
  const n = chunks.length;
  if (n > MAX_CHUNKS) {
    singleOverCluster(ranges, `${n} chunks > ${MAX_CHUNKS}`);
    return false;
  }
  setTables(n, ranges.length);
  let c = 0;
  ranges.forEach((r, i) => {
    const start = r.address - (r.address % PAGE);
    win.rangeStart[i] = start;
    win.rangeSize[i] = r.address + r.size - start;
    win.rangeFirst[i] = c;
    while (c < n && chunks[c].range === i) c++;
  });
  for (let a = 0; a < n; a++) win.chunkLen[a] = chunks[a].length;
  const pairs = (n * (n - 1)) / 2;
  const reason = pairs > options.maxPairs ? `${pairs} pair windows > ${options.maxPairs}` : "";
  let fromFile: number;
  try {
    fromFile = makeSlots(chunks, ranges, reason === "");
  } catch (e) {
    // Not every mapping can be made twice (a private mapping; hugetlbfs
    // memory whose file we were not given, or at an offset that is not
    // huge-page aligned): no pair windows, then. One window over the
    // largest cluster of ranges that fits still serves the copies inside it
    // (say two guests that lie together, the worker's scratch far away),
    // and every other copy takes the word loop.
    unmapReserved();
    singleOverCluster(ranges, `Cannot duplicate a mapping: ${(e as Error).message}`);
    return false;
  }
  info = { mode: "chunked", chunks: n, pairs: reason === "" ? pairs : 0, fromFile, reason };
  win.single = false;
  win.ranges = ranges.length;
  return reason === "";
}

/**
 * Single mode over the cluster of `ranges` with the most bytes whose span
 * fits WINDOW_MAX_SPAN (copies are checked by address, so ranges outside
 * it simply get no window); `reason` says why there is nothing better.
 */
function singleOverCluster(ranges: readonly Range[], reason: string): void {
  const sorted = [...ranges].sort((a, b) => a.address - b.address);
  let best = -1, bestLo = 0, bestHi = 0, bytes = 0, first = 0;
  for (let i = 0; i < sorted.length; i++) {
    bytes += sorted[i].size;
    const end = sorted[i].address + sorted[i].size;
    while (end - sorted[first].address > WINDOW_MAX_SPAN) bytes -= sorted[first++].size;
    if (first <= i && bytes > best) {
      best = bytes;
      bestLo = sorted[first].address;
      bestHi = Math.max(...sorted.slice(first, i + 1).map((r) => r.address + r.size));
    }
  }
  if (best <= 0) {
    setTables(1, 0);
    info = { ...NO_WINDOW, mode: "fallback", reason };
    return;
  }
  setSingle(bestLo, bestHi);
  const inside = sorted.filter((r) => r.address >= bestLo && r.address + r.size <= bestHi).length;
  info = {
    ...NO_WINDOW,
    mode: "single",
    chunks: 1,
    reason: `${reason}; one window over ${inside} of ${ranges.length} ranges`,
  };
}

/** Single mode: one view over [lo, hi), a span that fits WINDOW_MAX_SPAN. */
function setSingle(lo: number, hi: number): void {
  setTables(1, 0);
  win.single = true;
  win.base = lo;
  win.span = hi - lo;
  win.views[0] = view(lo, hi - lo);
  win.has[0] = 1;
  win.chunkLen[0] = hi - lo;
}

/** Unmaps every window this thread made (close). */
export function closeWindow(): void {
  updateWindow([]);
}

/**
 * Places the windows in one reservation of SLOT-byte slots: a slot per
 * chunk (a second mapping of it at the slot's start) and, with `pairs`, a
 * slot per pair a < b (chunk a at 0, chunk b at CHUNK_SPAN; both copy
 * directions use it). One ArrayBuffer spans the reservation and the views
 * are typed arrays into it: V8 counts an external ArrayBuffer's length as
 * external memory and runs a full GC ("external memory pressure") for
 * each new one, 5–20 ms apiece, so one buffer per window made 276 windows
 * take 5.2 s; one buffer takes one GC (~25 ms for 300 windows in all).
 * Returns how many chunk mappings it made from a file (hugetlbfs).
 */
function makeSlots(chunks: Chunk[], ranges: readonly Range[], pairs: boolean): number {
  const n = chunks.length;
  const slots = n + (pairs ? (n * (n - 1)) / 2 : 0);
  // One huge page more than the slots need, so that they can start huge-page aligned.
  const whole = reserve(slots * SLOT + HUGE_PAGE);
  reserved.push(whole, slots * SLOT + HUGE_PAGE);
  const base = Math.ceil(whole / HUGE_PAGE) * HUGE_PAGE;
  let slot = 0;
  let fromFile = 0;
  // Ranges whose mremap failed: later chunks of them go straight to their file.
  const noDup = new Set<number>();
  const place = (c: Chunk, at: number) => {
    if (placeChunk(c, ranges, noDup, at)) fromFile++;
  };
  const lens: number[] = [];
  for (let a = 0; a < n; a++) {
    place(chunks[a], base + slot * SLOT);
    lens.push(chunks[a].length);
    slot++;
  }
  if (pairs) {
    for (let a = 0; a < n; a++) {
      for (let b = a + 1; b < n; b++) {
        place(chunks[a], base + slot * SLOT);
        place(chunks[b], base + slot * SLOT + CHUNK_SPAN);
        lens.push(CHUNK_SPAN + chunks[b].length);
        slot++;
      }
    }
  }
  // Out of core dumps: guest memory once is enough (and 300 windows of it
  // would be 600 GiB). It also tells the windows apart from the guest's own
  // mappings in /proc/<pid>/smaps (VmFlags "dd"; tests/helpers/procfs.ts).
  madvise(base, slots * SLOT, MADV_DONTDUMP);
  const buf = Deno.UnsafePointerView.getArrayBuffer(
    Deno.UnsafePointer.create(BigInt(base))!,
    slots * SLOT,
  );
  slot = 0;
  for (let a = 0; a < n; a++, slot++) {
    win.views[a * n + a] = new Uint8Array(buf, slot * SLOT, lens[slot]);
    win.has[a * n + a] = 1;
  }
  if (!pairs) return fromFile;
  for (let a = 0; a < n; a++) {
    for (let b = a + 1; b < n; b++, slot++) {
      const v = new Uint8Array(buf, slot * SLOT, lens[slot]);
      win.views[a * n + b] = v;
      win.dstAt[a * n + b] = CHUNK_SPAN;
      win.has[a * n + b] = 1;
      win.views[b * n + a] = v;
      win.srcAt[b * n + a] = CHUNK_SPAN;
      win.has[b * n + a] = 1;
    }
  }
  return fromFile;
}

/**
 * Maps chunk `c` again at `at` (inside a reservation of ours): duplicated
 * with mremap, or, for a range in `noDup` or whose mremap fails and that
 * has a file (hugetlbfs), from its file. Returns whether it came from the
 * file; throws if it cannot be mapped.
 */
function placeChunk(c: Chunk, ranges: readonly Range[], noDup: Set<number>, at: number): boolean {
  const r = ranges[c.range];
  if (!noDup.has(c.range)) {
    try {
      duplicateAt(c.address, pageUp(c.length), at);
      return false;
    } catch (e) {
      if (r.fd === undefined || r.fd < 0) throw e;
      noDup.add(c.range);
    }
  }
  // The chunk's first byte lies (c.address - r.address) into the range, so that far past
  // the range's own offset in its file; c.address is page-aligned, r.address need not be.
  const offset = (r.fileOffset ?? 0) + (c.address - r.address);
  mapFileAt(r.fd!, offset, hugeUp(c.length), at);
  return true;
}

/**
 * Packed mode, if the ranges' bytes fit one view: each range from its page
 * mapped again at the next huge-page boundary of one reservation (the
 * alignment a second mapping of hugetlbfs memory needs). Returns false,
 * having mapped nothing, when they do not fit or a range cannot be mapped
 * again (then chunked mode tries, and says why).
 */
function setPacked(ranges: readonly Range[]): boolean {
  const whole: Chunk[] = ranges.map((r, i) => {
    const start = r.address - (r.address % PAGE);
    return { range: i, address: start, length: r.address + r.size - start };
  });
  let total = 0;
  for (const c of whole) total += hugeUp(c.length);
  if (total > WINDOW_MAX_SPAN - PAGE) return false;
  const reservation = reserve(total + HUGE_PAGE);
  reserved.push(reservation, total + HUGE_PAGE);
  const base = Math.ceil(reservation / HUGE_PAGE) * HUGE_PAGE;
  const at: number[] = [];
  let fromFile = 0;
  try {
    let off = 0;
    for (const c of whole) {
      if (placeChunk(c, ranges, new Set(), base + off)) fromFile++;
      at.push(off);
      off += hugeUp(c.length);
    }
  } catch {
    unmapReserved();
    return false;
  }
  madvise(base, total, MADV_DONTDUMP); // out of core dumps, as makeSlots says
  setTables(1, ranges.length);
  win.rangeAt = new Float64Array(at);
  whole.forEach((c, i) => {
    win.rangeStart[i] = c.address;
    win.rangeSize[i] = c.length;
  });
  win.views[0] = view(base, total);
  win.has[0] = 1;
  win.chunkLen[0] = total;
  win.packed = true;
  win.ranges = ranges.length;
  info = { mode: "packed", chunks: ranges.length, pairs: 0, fromFile, reason: "" };
  return true;
}

// Fresh tables for `n` chunks and `ranges` ranges, nothing windowed yet.
function setTables(n: number, ranges: number): void {
  win.single = false;
  win.packed = false;
  win.rangeAt = new Float64Array(0);
  win.chunks = n;
  win.ranges = 0; // set when the chunk tables are complete
  win.rangeStart = new Float64Array(ranges);
  win.rangeSize = new Float64Array(ranges);
  win.rangeFirst = new Int32Array(ranges);
  win.chunkLen = new Float64Array(n);
  win.has = new Uint8Array(n * n);
  win.views = new Array<Uint8Array>(n * n).fill(EMPTY);
  win.srcAt = new Float64Array(n * n);
  win.dstAt = new Float64Array(n * n);
}

// Drops every view, then unmaps what this thread reserved (views first:
// nothing may reach an unmapped window).
function release(): void {
  setTables(0, 0);
  win.base = 0;
  win.span = 0;
  info = NO_WINDOW;
  unmapReserved();
}

function unmapReserved(): void {
  for (let i = 0; i < reserved.length; i += 2) unmapRange(reserved[i], reserved[i + 1]);
  reserved.length = 0;
}

function view(address: number, length: number): Uint8Array {
  return new Uint8Array(
    Deno.UnsafePointerView.getArrayBuffer(Deno.UnsafePointer.create(BigInt(address))!, length),
  );
}

function pageUp(n: number): number {
  return Math.ceil(n / PAGE) * PAGE;
}

function hugeUp(n: number): number {
  return Math.ceil(n / HUGE_PAGE) * HUGE_PAGE;
}
