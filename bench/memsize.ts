/**
 * Guest memory size and forwarding speed (issue 11, point 4): the
 * in-process rig (bench/harness.ts ForwardRig, the real Engine, no socket
 * or worker) with guests of 256 MiB, 2 GiB, 4 GiB and four of 4 GiB, their
 * rings and buffers at the top of their memory (above 4 GiB
 * guest-physical when there are more than 2 GiB: QEMU's q35 layout), at
 * 64 B and 1500 B, each twice in the same run:
 *
 * - before: copies the way the switch made them until pair windows
 *   (`--window legacy`: one window while the span fits 2^31 bytes, else
 *   set(subarray()) per copy, an allocation each);
 * - after: the switch as it is (`--window auto`).
 *
 * Each figure is the median of RUNS runs of bench/heap.ts in a fresh
 * process (default V8 flags, so garbage costs what it costs), by CPU time
 * per frame (the rig is one thread; CPU time moves less than wall-clock
 * Mpps when other work shares the machine), with the Mpps of that run.
 * 256 MiB is the reference: its span fits one window either way.
 *
 * `flock /tmp/vswitch-heavy.lock deno task bench:memsize [--frames N] [--runs N]`
 * (about 2 minutes); writes bench/results/memsize-latest.json.
 *
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";
import { v8FlagsArg } from "../src/switch/v8_flags.ts";

const args = parseArgs(Deno.args, { string: ["frames", "runs"] });
const FRAMES = Number(args.frames ?? 2_000_000);
const RUNS = Number(args.runs ?? 3);

const CASES = [
  { name: "2 × 256 MiB", guests: 2, mem: "256m" },
  { name: "2 × 2 GiB", guests: 2, mem: "2g" },
  { name: "2 × 4 GiB", guests: 2, mem: "4g" },
  { name: "4 × 4 GiB", guests: 4, mem: "4g" },
];
const SIZES = [64, 1500];
const heap = new URL("./heap.ts", import.meta.url).pathname;

interface Run {
  mpps: number;
  cpuNsPerFrame: number;
  window: string;
  pairWindows: number;
}

async function once(guests: number, mem: string, size: number, window: string): Promise<Run> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      v8FlagsArg(),
      heap,
      `${FRAMES}`,
      `${size}`,
      "--guests",
      `${guests}`,
      "--mem",
      mem,
      "--at",
      "top",
      "--window",
      window,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(`Cannot run bench/heap.ts: ${new TextDecoder().decode(out.stderr)}`);
  }
  return JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").pop()!);
}

async function median(guests: number, mem: string, size: number, window: string): Promise<Run> {
  const runs: Run[] = [];
  for (let i = 0; i < RUNS; i++) runs.push(await once(guests, mem, size, window));
  runs.sort((a, b) => a.cpuNsPerFrame - b.cpuNsPerFrame);
  return runs[runs.length >> 1];
}

const rows = [];
console.log(`${FRAMES} frames per run, median of ${RUNS}; buffers at the top of guest memory`);
console.log(
  "case         | frame  | before CPU ns/frame, Mpps (copies) | after CPU ns/frame, Mpps (copies) | before/after",
);
for (const c of CASES) {
  for (const size of SIZES) {
    // Alternate before and after so a load change hits both alike.
    const before = await median(c.guests, c.mem, size, "legacy");
    const after = await median(c.guests, c.mem, size, "auto");
    const how = (r: Run) => r.window === "chunked" ? `pairs (${r.pairWindows})` : r.window;
    const ratio = before.cpuNsPerFrame / after.cpuNsPerFrame;
    rows.push({
      case: c.name,
      guests: c.guests,
      memPerGuest: c.mem,
      frameBytes: size,
      before: { cpuNsPerFrame: before.cpuNsPerFrame, mpps: before.mpps, copies: how(before) },
      after: { cpuNsPerFrame: after.cpuNsPerFrame, mpps: after.mpps, copies: how(after) },
      ratio: Number(ratio.toFixed(2)),
    });
    const cell = (r: Run) => `${r.cpuNsPerFrame}, ${r.mpps.toFixed(2)} (${how(r)})`;
    console.log(
      `${c.name.padEnd(12)} | ${`${size} B`.padEnd(6)} | ${cell(before).padEnd(30)} | ${
        cell(after).padEnd(33)
      } | ${ratio.toFixed(2)}`,
    );
  }
}

const report = {
  date: new Date().toISOString(),
  command: "flock /tmp/vswitch-heavy.lock deno task bench:memsize",
  frames: FRAMES,
  runs: RUNS,
  deno: Deno.version.deno,
  loadAverage: Deno.loadavg(),
  note: "before: one window while the span fits 2^31 B, else set(subarray()) per copy; " +
    "after: pair windows (src/virtio/address_window.ts); median run by CPU ns per frame; " +
    "ratio = before/after CPU per frame (> 1: after is cheaper)",
  rows,
};
const dir = new URL("./results/", import.meta.url).pathname;
await Deno.writeTextFile(`${dir}memsize-latest.json`, JSON.stringify(report, null, 2) + "\n");
console.log(`wrote ${dir}memsize-latest.json`);
