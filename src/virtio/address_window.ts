/**
 * One byte view over this process's whole user address space, made once
 * per thread. `copyWithin` on it moves bytes between any two mappings (two
 * guests, or a guest and a staging buffer) with no allocation — a
 * `subarray` per frame would allocate. Creating the view commits no
 * memory; only addresses that passed a guest-memory translation are ever
 * touched through it.
 *
 * Measured on the testbed (bench/copy_bench.ts): 64 B ≈ 50 ns, 1500 B ≈ 60 ns,
 * 9000 B ≈ 160 ns, the same as `set(subarray())` without its garbage.
 *
 * @module
 */

/** Lowest address the window covers (the first pages are never mapped). */
export const WINDOW_BASE = 0x10000;
/** x86-64 user space ends at 2^47. */
const WINDOW_END = 2 ** 47;

/** The window: `window[addr - WINDOW_BASE]` is the byte at `addr`. */
export const window: Uint8Array = new Uint8Array(
  Deno.UnsafePointerView.getArrayBuffer(
    Deno.UnsafePointer.create(BigInt(WINDOW_BASE))!,
    WINDOW_END - WINDOW_BASE,
  ),
);
