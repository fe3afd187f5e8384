/**
 * The per-frame path allocates nothing. The young generation is made large
 * (128 MB semi-spaces) so no collection can hide garbage: the heap growth
 * over a million forwarded frames is then what the path allocated.
 *
 * Also with four guests of 4 GiB each (QEMU's layout, buffers above 4 GiB
 * guest-physical): their memory spans more than a 2^31-byte window, so
 * copies go through pair windows (src/virtio/address_window.ts). A control
 * run copies the way the switch did before those (`--window legacy`,
 * set(subarray()) per copy) and must show the garbage, so a probe that
 * stopped seeing allocations would fail here.
 */
import { assert } from "@std/assert";
import { v8FlagsArg } from "../../src/switch/v8_flags.ts";

interface HeapResult {
  frames: number;
  heapGrowthBytes: number;
  window: string;
  pairWindows: number;
}

async function heapRun(size: number, extra: string[] = []): Promise<HeapResult> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      v8FlagsArg("--min-semi-space-size=128", "--max-semi-space-size=128"),
      new URL("../../bench/heap.ts", import.meta.url).pathname,
      "1000000",
      `${size}`,
      ...extra,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assert(out.success, `heap bench failed: ${new TextDecoder().decode(out.stderr)}`);
  const result = JSON.parse(text.trim().split("\n").pop()!);
  console.log(`${size} B frames ${extra.join(" ")}: ${JSON.stringify(result)}`);
  assert(result.frames >= 1_000_000);
  return result;
}

// One allocation per frame would be at least 16 MB over a million frames. The
// bound is 4 MiB, not less: runs of the same code read 0.18 MB mostly, and now
// and then 0.3–1.5 MB (a late recompile's code and feedback, at fdb5ec3 as on
// main, 2026-12-06), which a 1 MiB bound failed about one run in six.
const FLAT = 4 * 1024 * 1024;
const BIG = ["--guests", "4", "--mem", "4g", "--at", "top"];

Deno.test("forwarding a million frames allocates nothing (flat heap)", async () => {
  for (const size of [64, 1500]) {
    const r = await heapRun(size);
    assert(r.heapGrowthBytes < FLAT, `heap grew ${r.heapGrowthBytes} bytes`);
  }
});

Deno.test("4 × 4 GiB guests: a million frames allocate nothing (pair windows)", async () => {
  for (const size of [64, 1500]) {
    const r = await heapRun(size, BIG);
    assert(r.window === "chunked" && r.pairWindows > 0, `copies on pair windows: ${r.window}`);
    assert(r.heapGrowthBytes < FLAT, `heap grew ${r.heapGrowthBytes} bytes`);
  }
  // No pair windows (beyond MAX_PAIR_WINDOWS): the word loop, also allocation-free.
  const words = await heapRun(1500, [...BIG, "--max-pairs", "0"]);
  assert(words.pairWindows === 0, `no pair windows: ${words.pairWindows}`);
  assert(words.heapGrowthBytes < FLAT, `word loop: heap grew ${words.heapGrowthBytes} bytes`);
  // The control: set(subarray()) per copy, as before pair windows.
  const legacy = await heapRun(1500, [...BIG, "--window", "legacy"]);
  assert(legacy.heapGrowthBytes > 16 * FLAT, `the probe sees garbage: ${legacy.heapGrowthBytes}`);
});
