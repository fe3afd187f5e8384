/**
 * A racing guest for the double-fetch test (CHECKLIST item 24): rewrites
 * 32-bit words of guest memory in a tight loop, cycling each through a
 * list of values, while the switch reads them.
 */
/// <reference lib="deno.worker" />

interface Job {
  address: number;
  length: number;
  words: { offset: number; values: number[] }[];
  ms: number;
}

self.onmessage = (e: MessageEvent<Job>) => {
  const { address, length, words, ms } = e.data;
  const buf = Deno.UnsafePointerView.getArrayBuffer(
    Deno.UnsafePointer.create(BigInt(address))!,
    length,
  );
  const u32 = new Uint32Array(buf);
  const end = Date.now() + ms;
  let flips = 0;
  while (Date.now() < end) {
    for (let k = 0; k < 64; k++, flips++) {
      for (const w of words) u32[w.offset >>> 2] = w.values[flips % w.values.length];
    }
  }
  self.postMessage(flips);
};
