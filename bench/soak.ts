/**
 * `deno task soak` (as root; a heavy run: `flock /tmp/vswitch-heavy.lock
 * deno task soak`): does anything leak over many connections? Not in CI.
 *
 * The switch runs in its own process (tests/helpers/switch_child.ts, the
 * library as the CLI embeds it) with ports a and b, two TypeScript drivers
 * exchanging frames the whole time (tests/hostile/harness.ts), and port
 * "bad" for the churn:
 *
 * 1. `--cycles` (10,000) connect → negotiate → one frame → disconnect
 *    cycles of the TypeScript driver (tests/helpers/frontend.ts);
 * 2. `--qemu-cycles` (200) cycles of a real QEMU guest on the same port:
 *    boot until its eth0 is up (QEMU negotiated the device, the guest's
 *    virtio_net runs), an ARP broadcast from it, then SIGKILL.
 *
 * Every tenth of a phase it prints what the switch process holds: fds a
 * connection brings (sockets, eventfds, memfds, epoll), shared file
 * mappings (guest memory), RSS, and the control plane's heap after a full
 * GC. Readings are taken more often (every 1/40 of a phase) for a
 * least-squares slope per cycle of each, over the phase after its first
 * tenth (warm-up: JIT, heap sizing). It exits 1 if a slope reaches its
 * limit (LIMITS), if a↔b traffic stopped or lost a frame, or if a guest
 * failed to boot; it writes everything to bench/results/soak-<time>.json
 * and soak-latest.json.
 *
 * Usage: deno task soak [--cycles N] [--qemu-cycles M]   (M = 0: no QEMU)
 *
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";
import { ethFrame, VirtioNetDriver } from "../tests/helpers/frontend.ts";
import { A, BAD, sleep, Stage } from "../tests/hostile/harness.ts";
import { guestImage, testGuest } from "../tests/helpers/guests.ts";
import { guestsUnavailable } from "../src/guest/qemu.ts";
import {
  CONNECTION_FDS,
  type Holdings,
  holdings,
  sameFds,
  sharedLines,
  slope,
} from "../tests/helpers/holdings.ts";

const args = parseArgs(Deno.args, {
  string: ["cycles", "qemu-cycles"],
  default: { cycles: "10000", "qemu-cycles": "200" },
});
function count(name: string, v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) {
    console.error(`Cannot run the soak: --${name} wants a whole number ≥ 0, not "${v}"`);
    Deno.exit(2);
  }
  return n;
}
const CYCLES = count("cycles", args.cycles);
const QEMU_CYCLES = count("qemu-cycles", args["qemu-cycles"]);
if (QEMU_CYCLES > 0 && guestsUnavailable()) {
  console.error(`Cannot run the QEMU cycles: ${guestsUnavailable()} (or give --qemu-cycles 0)`);
  Deno.exit(2);
}

/**
 * Slope limits per cycle: at or above one, the phase fails.
 *
 * - fds and shared mappings: a leak of one per 1,000 driver cycles (0.001)
 *   or one per 100 QEMU cycles (0.01) reaches the limit; a clean switch is
 *   exactly flat (0), and one stray reading moves the slope by far less.
 * - heap after GC: 64 B per driver cycle is 640 KiB per 10,000
 *   connections, less than one retained object graph per connection (a
 *   kept Connection measured 1.8 KiB, tests/hostile/lifecycle_test.ts);
 *   1 KiB per QEMU cycle (fewer, noisier points: a reading varies by
 *   ~80 KiB with when V8 last compacted).
 * - anonymous RSS (RssAnon: what the switch allocated itself, the
 *   dataplane worker's heap and FFI buffers included, which the heap
 *   figure does not see): 0.5 KiB per driver cycle (5 MiB per 10,000);
 *   64 KiB per QEMU cycle, above V8 growing a space now and then.
 *
 * All RSS and its shared part (RssShmem) are reported without a limit:
 * shared pages are guest RAM the switch touched, and they grow as the
 * drivers of a and b hand it buffers at ever new addresses (their bump
 * allocators never reuse one), not with anything the switch keeps. A
 * guest memory region left mapped shows in the mapping count instead.
 */
const LIMITS = {
  driver: { fds: 0.001, sharedMappings: 0.001, heapBytes: 64, anonKiB: 0.5 },
  qemu: { fds: 0.01, sharedMappings: 0.01, heapBytes: 1024, anonKiB: 64 },
};
type Figure = keyof typeof LIMITS.driver;

/** One reading of the switch process. */
interface Sample {
  cycle: number;
  /** Seconds since the phase began. */
  secs: number;
  /** fds a connection can bring, summed over CONNECTION_FDS. */
  fds: number;
  fdsByKind: Record<string, number>;
  sharedMappings: number;
  sharedFiles: number;
  rssKiB: number;
  anonKiB: number;
  shmemKiB: number;
  heapKiB: number;
  /** Frames a and b exchanged since the phase began. */
  a2bFrames: number;
}

interface Phase {
  name: "driver" | "qemu";
  cycles: number;
  warmup: number;
  samples: Sample[];
  slopes: Record<Figure | "rssKiB" | "shmemKiB", number>;
  limits: Record<Figure, number>;
  failures: string[];
  seconds: number;
}

const t0 = performance.now();
const stage = await Stage.create();
const sp = stage.sp;
const pump = stage.pump;

/** Resolves once `done` holds; throws after `ms` (a bound on waiting, not a speed check). */
async function waitFor(what: string, done: () => Promise<boolean> | boolean, ms = 30_000) {
  const deadline = Date.now() + ms;
  while (!(await done())) {
    if (Date.now() > deadline) throw new Error(`Timed out after ${ms} ms waiting for ${what}`);
    await sleep(2);
  }
}

const disconnected = async () => !(await sp.stats()).bad.connected;

/** A reading after the control plane finished the last reset (fds stop changing). */
async function reading(prev: Holdings | undefined): Promise<Holdings> {
  let h = await holdings(sp);
  for (let i = 0; prev && !sameFds(h, prev) && i < 20; i++) {
    await sleep(50);
    h = await holdings(sp);
  }
  return h;
}

function toSample(cycle: number, h: Holdings, since: number, pumpAt: number): Sample {
  const fdsByKind = Object.fromEntries(CONNECTION_FDS.map((k) => [k, h.fds[k]]));
  return {
    cycle,
    secs: Math.round((performance.now() - since) / 100) / 10,
    fds: CONNECTION_FDS.reduce((s, k) => s + h.fds[k], 0),
    fdsByKind,
    sharedMappings: sharedLines(h),
    sharedFiles: h.shared.size,
    rssKiB: h.rssKiB,
    anonKiB: h.anonKiB,
    shmemKiB: h.shmemKiB,
    heapKiB: Math.round(h.heapKiB),
    a2bFrames: pump.got - pumpAt,
  };
}

function print(name: string, total: number, s: Sample): void {
  const kinds = Object.entries(s.fdsByKind).map(([k, v]) => `${k} ${v}`).join(", ");
  console.log(
    `${name} ${
      String(s.cycle).padStart(String(total).length)
    }/${total}: fds ${s.fds} (${kinds}), ` +
      `memfd mappings ${s.sharedMappings} (${s.sharedFiles} files), RSS ${s.rssKiB} KiB ` +
      `(anonymous ${s.anonKiB}, shared ${s.shmemKiB}), ` +
      `heap ${s.heapKiB} KiB, a↔b ${s.a2bFrames} frames, ${s.secs} s`,
  );
}

/**
 * Runs `cycles` of `one`, sampling every 1/40 of the phase and printing
 * every 1/10; then fits the slopes and checks them against the limits.
 */
async function phase(
  name: Phase["name"],
  cycles: number,
  one: (i: number) => Promise<void>,
): Promise<Phase> {
  const start = performance.now();
  const sampleEvery = Math.max(1, Math.floor(cycles / 40));
  const printEvery = Math.max(1, Math.floor(cycles / 10));
  const warmup = Math.floor(cycles / 10);
  const samples: Sample[] = [];
  const failures: string[] = [];
  const pumpAt = pump.got;
  let prev: Holdings | undefined;
  let lastGot = pump.got;
  for (let i = 0; i <= cycles; i++) {
    if (i % sampleEvery === 0 || i === cycles) {
      prev = await reading(prev);
      const s = toSample(i, prev, start, pumpAt);
      samples.push(s);
      if (i % printEvery === 0 || i === cycles) print(name, cycles, s);
      if (i > 0 && pump.got === lastGot) failures.push(`a↔b traffic stopped near cycle ${i}`);
      lastGot = pump.got;
    }
    if (i < cycles) await one(i);
  }
  const fit = samples.filter((s) => s.cycle >= warmup);
  const xs = fit.map((s) => s.cycle);
  const slopes = {
    fds: slope(xs, fit.map((s) => s.fds)),
    sharedMappings: slope(xs, fit.map((s) => s.sharedMappings)),
    heapBytes: slope(xs, fit.map((s) => s.heapKiB * 1024)),
    anonKiB: slope(xs, fit.map((s) => s.anonKiB)),
    rssKiB: slope(xs, fit.map((s) => s.rssKiB)),
    shmemKiB: slope(xs, fit.map((s) => s.shmemKiB)),
  };
  const limits = LIMITS[name];
  for (const k of Object.keys(limits) as Figure[]) {
    if (slopes[k] >= limits[k]) {
      failures.push(`${k} grows ${slopes[k].toFixed(4)} per cycle (limit ${limits[k]})`);
    }
  }
  const seconds = Math.round((performance.now() - start) / 1000);
  console.log(
    `${name}: ${cycles} cycles in ${seconds} s; slopes per cycle after cycle ${warmup}: ` +
      (Object.keys(limits) as Figure[]).map((k) =>
        `${k} ${slopes[k].toFixed(4)} (limit ${limits[k]})`
      ).join(", ") +
      `; no limit: rssKiB ${slopes.rssKiB.toFixed(4)}, shmemKiB ${slopes.shmemKiB.toFixed(4)}` +
      (failures.length ? `\n${name}: FAILED: ${failures.join("; ")}` : ""),
  );
  return { name, cycles, warmup, samples, slopes, limits, failures, seconds };
}

/** One TypeScript-driver cycle: connect, negotiate, one frame taken, disconnect. */
async function driverCycle(i: number): Promise<void> {
  const g = await VirtioNetDriver.start(`${stage.dir}/bad.sock`, { queueSize: 64 });
  try {
    g.fillRx(4);
    g.send(ethFrame(A, BAD, 46, 0x32));
    await waitFor(`driver cycle ${i}'s frame to be taken`, () => g.tx.usedIdx() !== 0);
  } finally {
    g.close();
  }
  await waitFor(`driver cycle ${i}'s disconnect`, disconnected);
}

let bootFailures = 0;
const phases: Phase[] = [];
let pumpResult = { sent: 0, got: 0 };
try {
  pump.start();
  if (CYCLES > 0) phases.push(await phase("driver", CYCLES, driverCycle));
  if (QEMU_CYCLES > 0) {
    const img = await guestImage();
    // Guest 3 (52:54:00:00:00:03) on the "bad" port's socket; its console stays in memory.
    const g = testGuest("bad", stage.dir, 3, img, { logFile: undefined });
    phases.push(
      await phase("qemu", QEMU_CYCLES, async (i) => {
        try {
          await g.boot();
          // Traffic from the guest as it dies: an ARP broadcast that reaches a and b.
          g.run("ping -c 1 -W 1 10.0.0.9").catch(() => {});
          await sleep(20);
        } catch (e) {
          bootFailures++;
          console.log(`qemu cycle ${i}: ${(e as Error).message.split("\n")[0]}`);
        }
        try {
          Deno.kill(g.pid, "SIGKILL");
        } catch { /* not running */ }
        await g.exited().catch(() => {});
        await g.stop();
        await waitFor(`qemu cycle ${i}'s disconnect`, disconnected);
      }),
    );
  }
} finally {
  pumpResult = { sent: pump.sent, got: await pump.stop() };
  await stage.close();
}

const failures = phases.flatMap((p) => p.failures.map((f) => `${p.name}: ${f}`));
if (pumpResult.got !== pumpResult.sent) {
  failures.push(`a↔b: ${pumpResult.sent - pumpResult.got} of ${pumpResult.sent} frames lost`);
}
if (bootFailures > 0) failures.push(`qemu: ${bootFailures} boots failed`);

const git = new Deno.Command("git", { args: ["rev-parse", "--short", "HEAD"], stdout: "piped" });
const commit = new TextDecoder().decode((await git.output().catch(() => null))?.stdout).trim();
const report = {
  date: new Date().toISOString(),
  commit,
  machine: `${navigator.hardwareConcurrency} cores, load average ${
    Deno.loadavg().map((l) => l.toFixed(2)).join(" ")
  } at the end`,
  method: "switch child process; ports a, b (TypeScript drivers exchanging frames throughout) " +
    "and bad (the churn); least-squares slope per cycle after each phase's first tenth",
  command: `deno task soak --cycles ${CYCLES} --qemu-cycles ${QEMU_CYCLES}`,
  phases,
  a2b: pumpResult,
  bootFailures,
  failures,
  pass: failures.length === 0,
  seconds: Math.round((performance.now() - t0) / 1000),
};
const out = new URL("./results", import.meta.url).pathname;
Deno.mkdirSync(out, { recursive: true });
const json = JSON.stringify(report, null, 2) + "\n";
const file = `${out}/soak-${report.date.replaceAll(":", "-").slice(0, 19)}.json`;
Deno.writeTextFileSync(file, json);
Deno.writeTextFileSync(`${out}/soak-latest.json`, json);
console.log(
  `\nsoak: ${report.pass ? "no leak" : `FAILED: ${failures.join("; ")}`} ` +
    `(${report.seconds} s, a↔b ${pumpResult.got}/${pumpResult.sent} frames); ${file}`,
);
Deno.exit(report.pass ? 0 : 1);
