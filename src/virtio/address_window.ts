/**
 * One byte view spanning every guest region this thread maps (and the
 * TAP staging area), so `copyWithin` moves bytes between any two of them
 * with no allocation. Offsets into the view must stay small integers
 * (V8 Smis): a larger offset is boxed as a HeapNumber on every builtin
 * call — 48 bytes of garbage per copy, measured by tests/switch/heap_test.ts.
 * Deno's V8 has no pointer compression, so Smis are 32-bit: copyWithin at
 * offsets up to 2^31 - 8192 in a 2 GiB view allocated nothing per call,
 * at 2^31 + 8 it allocated 48 bytes per call (a 10^6-copy probe of
 * 1500 B, 2026-12-01). So the window starts at the lowest mapped address
 * and is used only while the whole span stays below 2^31; otherwise copies
 * fall back to `set(subarray())` (correct, one small allocation each).
 *
 * Only addresses that passed a guest-memory translation are ever touched
 * through the window; making it commits no memory.
 *
 * Measured (bench/forward_bench.ts): 1500 B ≈ 40–60 ns, 9000 B ≈ 160 ns.
 *
 * @module
 */

/** Largest span the window may cover (offsets stay 32-bit Smis). */
export const WINDOW_MAX_SPAN = 2 ** 31 - 1;

/** The current window of this thread. */
export const win = {
  /** `view[addr - base]` is the byte at `addr` (when `ok`). */
  view: new Uint8Array(0),
  /** Address of `view[0]`. */
  base: 0,
  /** Whether every mapped range lies inside the window. */
  ok: false,
};

/** A mapped range: address and size. */
export interface Range {
  address: number;
  size: number;
}

/** Rebuilds the window over `ranges`; returns whether it fits. */
export function updateWindow(ranges: readonly Range[]): boolean {
  if (ranges.length === 0) {
    win.view = new Uint8Array(0);
    win.ok = false;
    return false;
  }
  let lo = Infinity, hi = 0;
  for (const r of ranges) {
    if (r.address < lo) lo = r.address;
    if (r.address + r.size > hi) hi = r.address + r.size;
  }
  if (hi - lo > WINDOW_MAX_SPAN) {
    win.view = new Uint8Array(0);
    win.ok = false;
    return false;
  }
  win.view = new Uint8Array(
    Deno.UnsafePointerView.getArrayBuffer(Deno.UnsafePointer.create(BigInt(lo))!, hi - lo),
  );
  win.base = lo;
  win.ok = true;
  return true;
}
