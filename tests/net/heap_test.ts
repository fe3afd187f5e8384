/**
 * The network-headers layer allocates nothing per frame: bench/net_heap.ts
 * runs header capture, parse, validation and checksum completion 200,000
 * times and segments 5,000 64 KiB TSO frames (230,000 segments) with 128 MB
 * semi-spaces, so no collection can hide garbage; the heap growth is what
 * those calls allocated.
 */
import { assert } from "@std/assert";

Deno.test("src/net per-frame functions allocate nothing (flat heap)", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--v8-flags=--min-semi-space-size=128,--max-semi-space-size=128",
      new URL("../../bench/net_heap.ts", import.meta.url).pathname,
      "200000",
      "5000",
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert(out.success, `net heap bench failed: ${new TextDecoder().decode(out.stderr)}`);
  const text = new TextDecoder().decode(out.stdout);
  const result = JSON.parse(text.trim().split("\n").pop()!);
  console.log(JSON.stringify(result));
  assert(result.segments >= 230_000);
  // One 16-byte allocation per small frame alone would be 3.2 MB.
  assert(result.heapGrowthBytes < 1024 * 1024, `heap grew ${result.heapGrowthBytes} bytes`);
});
