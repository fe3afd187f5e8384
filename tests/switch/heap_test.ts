/**
 * The per-frame path allocates nothing. The young generation is made large
 * (128 MB semi-spaces) so no collection can hide garbage: the heap growth
 * over a million forwarded frames is then what the path allocated.
 */
import { assert } from "@std/assert";

Deno.test("forwarding a million frames allocates nothing (flat heap)", async () => {
  for (const size of [64, 1500]) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--v8-flags=--min-semi-space-size=128,--max-semi-space-size=128",
        new URL("../../bench/heap.ts", import.meta.url).pathname,
        "1000000",
        `${size}`,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    assert(out.success, `heap bench failed: ${new TextDecoder().decode(out.stderr)}`);
    const result = JSON.parse(text.trim().split("\n").pop()!);
    console.log(`${size} B frames: ${JSON.stringify(result)}`);
    assert(result.frames >= 1_000_000);
    // One allocation per frame would be at least 16 MB here.
    assert(result.heapGrowthBytes < 1024 * 1024, `heap grew ${result.heapGrowthBytes} bytes`);
  }
});
