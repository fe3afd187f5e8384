/**
 * checksum.ts against RFC 1071's example and a plain reference (sum of
 * big-endian 16-bit words, carries folded): random buffers, odd lengths and
 * offsets, every split into 2–4 segments at odd and even points, all-0xff
 * (carry) buffers, 64 KiB buffers.
 */
import { assertEquals } from "@std/assert";
import {
  complement16,
  finish,
  fold16,
  pseudoSumV4,
  pseudoSumV6,
  sumBytes,
  sumSegments,
  sumView,
} from "../../src/net/checksum.ts";
import { Arena, buildPacket, cutsToLens, prng, randomBytes, refSum } from "./packets.ts";

const arena = new Arena(8 << 20);

function listOf(bytes: Uint8Array, lens: number[], phases: number[] = [0]) {
  return arena.list(lens, phases, bytes);
}

Deno.test("RFC 1071 §3 example: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2", () => {
  const b = new Uint8Array([0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]);
  assertEquals(fold16(sumBytes(b, 0, 8)), 0xddf2);
  assertEquals(complement16(sumBytes(b, 0, 8)), 0x220d);
  const w = new Uint32Array(b.buffer);
  assertEquals(sumView(b, w, 0, 8), 0xddf2);
  arena.clear();
  assertEquals(sumSegments(listOf(b, [3, 5]), 0, 8, 0), 0xddf2);
});

Deno.test("fold16 folds carries of large sums exactly", () => {
  assertEquals(fold16(0), 0);
  assertEquals(fold16(0xffff), 0xffff);
  assertEquals(fold16(0x10000), 1);
  assertEquals(fold16(0x1fffe), 0xffff);
  assertEquals(fold16(2 ** 52 - 1), (2 ** 52 - 1) % 0xffff || 0xffff);
  assertEquals(finish(0xffff), 0xffff); // complement 0 is sent as 0xffff
  assertEquals(finish(0), 0xffff);
  assertEquals(finish(0x1234), 0xedcb);
});

Deno.test("sumView equals the reference for every length 0–300 at every offset phase", () => {
  const buf = randomBytes(1024, 7);
  const w = new Uint32Array(buf.buffer);
  for (let off = 0; off < 8; off++) {
    for (let len = 0; len <= 300; len++) {
      assertEquals(sumView(buf, w, off, len), refSum(buf, off, off + len), `off ${off} len ${len}`);
      assertEquals(fold16(sumBytes(buf, off, len)), refSum(buf, off, off + len));
    }
  }
});

Deno.test("random buffers: sumView and sumSegments equal the reference", () => {
  const r = prng(99);
  arena.clear();
  for (let t = 0; t < 300; t++) {
    const len = r() % 4000;
    const b = randomBytes(len, t + 1);
    const ref = refSum(b);
    const off = r() % 16;
    const big = new Uint8Array((len + 35) & ~3);
    big.set(b, off);
    assertEquals(sumView(big, new Uint32Array(big.buffer), off, len), ref, `len ${len}`);
    const cuts = [r() % (len + 1), r() % (len + 1), r() % (len + 1)];
    const l = listOf(b, cutsToLens(len, cuts), [r() & 7, r() & 7, r() & 7, r() & 7]);
    assertEquals(sumSegments(l, 0, len, 0), ref, `len ${len} cuts ${cuts}`);
    if (t % 50 === 49) arena.clear();
  }
});

Deno.test("every split into 2, 3 and 4 segments, at odd and even points and phases", () => {
  const n = 41; // odd: the end of the buffer is an odd byte too
  const b = randomBytes(n, 5);
  const ref = refSum(b);
  let cases = 0;
  for (let i = 1; i < n; i++) {
    for (let j = i; j < n; j++) {
      for (let k = j; k < n; k += 3) {
        arena.clear();
        const lens = cutsToLens(n, [i, j, k]);
        const phases = [i & 7, (j + 3) & 7, (k + 5) & 7, 1];
        assertEquals(sumSegments(listOf(b, lens, phases), 0, n, 0), ref, `cuts ${i} ${j} ${k}`);
        cases++;
      }
    }
  }
  // A long buffer split at odd points still uses word loads in each piece.
  const long = randomBytes(3001, 6);
  const longRef = refSum(long);
  for (const cuts of [[1], [333], [1, 2], [999, 1001, 2999], [7, 1500, 1501], [2, 4, 6]]) {
    arena.clear();
    assertEquals(
      sumSegments(listOf(long, cutsToLens(3001, cuts), [3, 1, 2, 0]), 0, 3001, 0),
      longRef,
    );
  }
  assertEquals(cases > 2000, true);
});

Deno.test("a range inside a list: any start, any length, with an initial sum", () => {
  const b = randomBytes(200, 11);
  arena.clear();
  const l = listOf(b, [13, 1, 50, 7, 129], [1, 2, 3, 0, 5]);
  for (let pos = 0; pos < 200; pos += 7) {
    for (let len = 0; pos + len <= 200; len += 11) {
      assertEquals(sumSegments(l, pos, len, 0x12345), refSum(b, pos, pos + len, 0x12345));
    }
  }
});

Deno.test("all-0xff buffers (every word carries) and all-zero buffers", () => {
  for (const len of [1, 2, 3, 63, 64, 65, 1500, 1501, 65535, 65536]) {
    const b = new Uint8Array(len).fill(0xff);
    const w = new Uint32Array(b.buffer, 0, len >> 2);
    assertEquals(sumView(b, w, 0, len), refSum(b), `len ${len}`);
    arena.clear();
    assertEquals(
      sumSegments(listOf(b, cutsToLens(len, [len >> 1, (len >> 1) + 1])), 0, len, 0),
      refSum(b),
    );
    const z = new Uint8Array((len + 7) & ~3);
    assertEquals(sumView(z, new Uint32Array(z.buffer), 1, len), 0);
  }
});

Deno.test("64 KiB buffers: random and 0xff, whole and in 1 KiB-ish odd pieces", () => {
  for (const fill of [-1, 0xff, 0xfe]) {
    const b = fill < 0 ? randomBytes(65536, 3) : new Uint8Array(65536).fill(fill);
    const ref = refSum(b);
    assertEquals(sumView(b, new Uint32Array(b.buffer), 0, 65536), ref);
    const lens: number[] = [];
    for (let left = 65536, i = 0; left > 0; i++) {
      const n = Math.min(left, 1021 + (i % 7));
      lens.push(n);
      left -= n;
    }
    arena.clear();
    assertEquals(sumSegments(listOf(b, lens, [0, 1, 2, 3, 5]), 0, 65536, 0), ref);
  }
});

Deno.test("pseudo-header sums equal the reference (IPv4, IPv6)", () => {
  const v4 = buildPacket({ ip: 4 });
  const p4 = pseudoSumV4(v4.frame, v4.l3, 6, 0x1_2345);
  assertEquals(fold16(p4), refSum(v4.frame, v4.l3 + 12, v4.l3 + 20, 6 + 1 + 0x2345));
  const v6 = buildPacket({ ip: 6, l4: "udp" });
  const p6 = pseudoSumV6(v6.frame, v6.l3, 17, 1480);
  assertEquals(fold16(p6), refSum(v6.frame, v6.l3 + 8, v6.l3 + 40, 17 + 1480));
});

Deno.test("a segment without a word view is summed bytewise", () => {
  const b = randomBytes(1000, 21);
  arena.clear();
  const l = listOf(b, [333, 667], [1, 0]);
  l.words[1] = new Uint32Array(0);
  assertEquals(sumSegments(l, 0, 1000, 0), refSum(b));
});
