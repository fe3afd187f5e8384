/**
 * Forwards a million frames through the engine in-process and reports the
 * heap growth. Run it with large semi-spaces so no scavenge hides garbage:
 * `deno run -A --v8-flags=--min-semi-space-size=128,--max-semi-space-size=128 bench/heap.ts`
 * (tests/switch/heap_test.ts does). Prints one JSON line.
 *
 * `bench/heap.ts FRAMES SIZE --guests 4 --mem 4g --at top` runs four guests
 * of 4 GiB (QEMU's layout) with their buffers above 4 GiB guest-physical;
 * `--window legacy` copies the way the switch did before pair windows.
 */
import process from "node:process";
import { ForwardRig } from "./harness.ts";
import { rigArgs } from "./rig_args.ts";
import { configureWindow, windowInfo } from "../src/virtio/address_window.ts";

const { positional, rig: shape, window } = rigArgs(Deno.args);
const FRAMES = Number(positional[0] ?? 1_000_000);
const size = Number(positional[1] ?? 64);
configureWindow(window);
const rig = new ForwardRig({ frameLen: size, ...shape });
for (let i = 0; i < 20_000; i++) rig.step(); // warm up: JIT, FDB, rings
const start = rig.delivered;
const before = Deno.memoryUsage().heapUsed;
const cpu0 = process.cpuUsage();
const t0 = performance.now();
while (rig.delivered - start < FRAMES) rig.step();
const ms = performance.now() - t0;
const cpu = process.cpuUsage(cpu0);
const after = Deno.memoryUsage().heapUsed;
const w = windowInfo();
console.log(JSON.stringify({
  frames: rig.delivered - start,
  frameBytes: size,
  guests: shape.guests,
  memBytes: shape.memSize ?? null,
  window: w.mode,
  pairWindows: w.pairs,
  heapGrowthBytes: after - before,
  mpps: Number(((rig.delivered - start) / ms / 1000).toFixed(2)),
  // CPU time of this process per frame: less moved than Mpps by other load
  // on a shared machine (time the rig waited for a core is not in it).
  cpuNsPerFrame: Math.round(((cpu.user + cpu.system) * 1000) / (rig.delivered - start)),
}));
rig.close();
