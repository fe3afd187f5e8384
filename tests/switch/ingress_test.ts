/**
 * The parse stage's MAC read: a frame whose MACs lie in its first segment
 * (at any alignment) and one whose MACs are split across segments give
 * the same destination and source for every byte pattern.
 */
import { assertEquals } from "@std/assert";
import { Frame } from "../../src/switch/frame.ts";
import { PARSE_OK, parseFrame } from "../../src/switch/ingress.ts";

const HDR = 12;

/** Parses `bytes` (vnet header + frame) placed at `at` in a buffer, split after `split` bytes. */
function macs(bytes: Uint8Array, at: number, split = 0): number[] {
  const buf = new ArrayBuffer(4096);
  const u8 = new Uint8Array(buf), u32 = new Uint32Array(buf);
  u8.set(bytes, at);
  const f = new Frame();
  f.segs.reset();
  if (split > 0) {
    f.segs.push(u8, u32, at, split, 0);
    u8.set(bytes.subarray(split), 2048);
    f.segs.push(u8, u32, 2048, bytes.length - split, 0);
  } else {
    f.segs.push(u8, u32, at, bytes.length, 0);
  }
  f.pos = HDR;
  f.len = bytes.length - HDR;
  assertEquals(parseFrame(f, 0, 9018, false), PARSE_OK);
  return [f.dstHi, f.dstLo, f.srcHi, f.srcLo];
}

Deno.test("MACs read the same from aligned, unaligned and split frames", () => {
  let seed = 7;
  const rand = () => (seed = (seed * 1103515245 + 12345) >>> 0) >>> 24;
  for (let n = 0; n < 500; n++) {
    const bytes = new Uint8Array(HDR + 60);
    for (let i = HDR; i < bytes.length; i++) bytes[i] = rand();
    if (n === 0) bytes.fill(0xff, HDR, HDR + 12); // every bit set: no sign trouble
    const d = bytes.subarray(HDR);
    const want = [
      (d[0] << 8) | d[1],
      d[2] * 2 ** 24 + d[3] * 2 ** 16 + d[4] * 2 ** 8 + d[5],
      (d[6] << 8) | d[7],
      d[8] * 2 ** 24 + d[9] * 2 ** 16 + d[10] * 2 ** 8 + d[11],
    ];
    assertEquals(macs(bytes, 0), want, "aligned");
    assertEquals(macs(bytes, 1), want, "unaligned");
    assertEquals(macs(bytes, 0, HDR + 5), want, "split inside the MACs");
  }
});
