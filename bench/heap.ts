/**
 * Forwards a million frames through the engine in-process and reports the
 * heap growth. Run it with large semi-spaces so no scavenge hides garbage:
 * `deno run -A --v8-flags=--min-semi-space-size=128,--max-semi-space-size=128 bench/heap.ts`
 * (tests/switch/heap_test.ts does). Prints one JSON line.
 */
import { ForwardRig } from "./harness.ts";

const FRAMES = Number(Deno.args[0] ?? 1_000_000);
const size = Number(Deno.args[1] ?? 64);
const rig = new ForwardRig(size);
for (let i = 0; i < 20_000; i++) rig.step(); // warm up: JIT, FDB, rings
const start = rig.delivered;
const before = Deno.memoryUsage().heapUsed;
const t0 = performance.now();
while (rig.delivered - start < FRAMES) rig.step();
const ms = performance.now() - t0;
const after = Deno.memoryUsage().heapUsed;
console.log(JSON.stringify({
  frames: rig.delivered - start,
  frameBytes: size,
  heapGrowthBytes: after - before,
  mpps: Number(((rig.delivered - start) / ms / 1000).toFixed(2)),
}));
rig.close();
