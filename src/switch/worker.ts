/**
 * The dataplane worker: owns the rings, the FDB and the forwarding loop.
 * It never awaits per frame. While traffic flows densely it polls; when idle it
 * re-enables guest notifications, re-checks the rings (so no kick is lost)
 * and blocks in a synchronous epoll_wait on kick fds, TAP fds and its
 * command eventfd — blocking a worker thread costs nothing.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { Epoll } from "../../ffi/epoll.ts";
import { eventfdRead } from "../../ffi/eventfd.ts";
import { EPOLLIN } from "../../ffi/constants.ts";
import { GuestMemory } from "../virtio/guest_memory.ts";
import { SplitRing } from "../virtio/split_ring.ts";
import { queueOptions } from "../virtio/virtqueue.ts";
import { windowInfo } from "../virtio/address_window.ts";
import { Engine } from "./engine.ts";
import { DpPort, guestEgressCaps, guestIngressCaps, PortKind } from "./dp_port.ts";
import { MAX_GSO_FRAME } from "./frame.ts";
import { DirtyLog } from "../virtio/dirty_log.ts";
import { Fdb } from "./fdb.ts";
import { C, COUNTERS_PER_PORT } from "./counters.ts";
import { CaptureProducer } from "./capture_ring.ts";
import { installProfileCounts } from "./profile_counts.ts";
import {
  type BrokenEvent,
  type Command,
  type CommandOf,
  CONTROL,
  type Envelope,
  type Op,
  type Reply,
  type Results,
  type WindowEvent,
} from "./dataplane_api.ts";

/**
 * Adaptive polling: after a round that took at least DENSE_ROUND frames,
 * keep polling this long after the last frame before sleeping in epoll.
 * Long enough to ride over the gaps of a flowing stream (no kick, no
 * wake-up latency), short enough that idle guests cost nothing (see the
 * README's idle-CPU figure).
 */
const POLL_GRACE_MS = 0.5;
/**
 * A round that took fewer frames than this sends the worker to sleep at
 * its first empty round after it. Measured rounds (frames taken per round):
 * - bench:loop (DPDK generator, 64 B and 1500 B): 0 or ≥ 64, never between;
 *   it needs the spin (an empty round is followed by a full one within µs).
 * - bench:iperf (TCG guests, TSO, 64 KiB frames): 1–3 frames, 8+ in under
 *   1 % of rounds; with the spin the worker ran ~1 M empty rounds per
 *   7 k busy ones, and on 2 cores that CPU is taken from the vCPUs.
 * bench:iperf guest ↔ guest, same run (3 runs each, medians, ÷ bridge):
 * spin always 0.68 / 0.69, sleep at once 1.05 / 1.02; guest ↔ host: spin
 * always 0.85 / 0.41, this policy 1.03 / 0.99. bench:loop's rounds never
 * fall below it, so it spins there as before.
 */
const DENSE_ROUND = 8;
/** Longest sleep, so FDB aging runs even without traffic. */
const SLEEP_MS = 1000;
const AGING_PERIOD_MS = 1000;

// epoll tokens: 0 is the command eventfd; kick fds and TAP fds carry the port id.
const TOKEN_COMMAND = 0;
const TOKEN_KICK = 0x10000;
const TOKEN_TAP = 0x20000;

// Bench-only: VSWITCH_PROFILE_COUNTS=FILE wraps ring methods with counters (unset: nothing).
installProfileCounts();

const inbox: Envelope[] = [];
let wake: (() => void) | null = null;
self.onmessage = (e: MessageEvent<Envelope>) => {
  inbox.push(e.data);
  const w = wake;
  wake = null;
  w?.();
};

let engine: Engine;
let counters: Float64Array;
let control: Int32Array;
let commandFd = -1;
/** The capture ring's producer end (the engine offers frames of ports whose flag is set). */
let capture: CaptureProducer;
const epoll = new Epoll(64);
/** Kick fd per port id (TX queue), for epoll removal. */
const kickFds = new Map<number, number>();
let handled = 0;
let running = true;

function reply(r: Reply): void {
  self.postMessage(r);
}

function port(id: number): DpPort {
  const p = engine.byId[id];
  if (p === undefined) throw new Error(`Cannot find port ${id} in the dataplane`);
  return p;
}

function unwatchKick(id: number): void {
  const fd = kickFds.get(id);
  if (fd !== undefined) epoll.remove(fd);
  kickFds.delete(id);
}

/**
 * One handler per command (dataplane_api.ts): each returns what `Results`
 * says its command answers, so both ends agree on every reply.
 */
const handlers: { [K in Op]: (cmd: CommandOf<K>) => Results[K] } = {
  init(cmd) {
    counters = new Float64Array(cmd.counters);
    control = new Int32Array(cmd.control);
    commandFd = cmd.commandFd;
    epoll.add(commandFd, EPOLLIN, TOKEN_COMMAND);
    engine = new Engine(counters, new Fdb(8192, cmd.agingMs), onBroken);
    capture = new CaptureProducer(cmd.capture);
    engine.setCapture(capture);
  },
  addPort(cmd) {
    const p = new DpPort(cmd.id, cmd.kind, cmd.name, cmd.maxFrame, cmd.fd);
    p.ingressCaps = cmd.ingressCaps;
    p.egressCaps = cmd.egressCaps;
    counters.fill(0, p.cbase, p.cbase + COUNTERS_PER_PORT);
    engine.add(p);
    if (p.kind === PortKind.TAP) epoll.add(p.fd, EPOLLIN, TOKEN_TAP + p.id);
  },
  removePort(cmd) {
    const p = engine.byId[cmd.id];
    if (p === undefined) return;
    unwatchKick(p.id);
    Atomics.store(capture.flags, p.id, 0); // the next port with this id starts uncaptured
    if (p.kind === PortKind.TAP) epoll.remove(p.fd);
    p.vq?.setQueue(0, null, -1);
    p.vq?.setQueue(1, null, -1);
    p.mem = null;
    engine.remove(cmd.id);
  },
  setMemory(cmd) {
    const p = port(cmd.id);
    const vq = p.vq;
    if (vq !== null && (vq.rx !== null || vq.tx !== null)) {
      throw new Error(`Cannot change memory of port ${p.name}: queues running`);
    }
    p.mem = cmd.regions === null ? null : new GuestMemory(cmd.regions);
    engine.updateWindow();
    if (cmd.regions === null) p.broken = false; // a new connection starts clean
  },
  startQueue(cmd) {
    const p = port(cmd.id);
    const s = cmd.start;
    const vq = p.vq;
    if (p.mem === null || vq === null) {
      throw new Error(`Cannot start queue ${s.q} of port ${p.name}: no memory table`);
    }
    // A GSO frame may be longer than the MTU (CHECKLIST 21, 35: the parser bounds it).
    const maxReadable = s.hdrLen + Math.max(p.maxFrame, MAX_GSO_FRAME);
    const ring = new SplitRing(queueOptions(p.mem, s, maxReadable));
    ring.setLog(p.log);
    vq.hdrLen = s.hdrLen;
    vq.mergeable = s.mergeable;
    p.ingressCaps = guestIngressCaps(s.features);
    p.egressCaps = guestEgressCaps(s.features);
    vq.setQueue(s.q, ring, s.callFd);
    if (s.q !== 0) {
      ring.setNoNotify(true);
      if (s.kickFd >= 0) {
        unwatchKick(p.id);
        epoll.add(s.kickFd, EPOLLIN, TOKEN_KICK + p.id);
        kickFds.set(p.id, s.kickFd);
      }
    }
  },
  stopQueue(cmd) {
    const vq = port(cmd.id).vq;
    const ring = vq === null ? null : cmd.q === 0 ? vq.rx : vq.tx;
    if (vq === null || ring === null) return -1;
    ring.publish(); // nothing may stay unpublished (normally already done by the round)
    vq.setQueue(cmd.q, null, -1);
    if (cmd.q !== 0) unwatchKick(cmd.id);
    return ring.lastAvail;
  },
  setCall(cmd) {
    const vq = port(cmd.id).vq;
    if (vq === null) return;
    if (cmd.q === 0) vq.callRx = cmd.fd;
    else vq.callTx = cmd.fd;
  },
  setMaxFrame(cmd) {
    port(cmd.id).maxFrame = cmd.maxFrame;
  },
  setLog(cmd) {
    // Between two rounds: no frame is half-written, and after this reply the
    // old log is never touched again, so the control plane may unmap it.
    const p = port(cmd.id);
    p.log = cmd.log === null
      ? null
      : new DirtyLog(cmd.log.address, cmd.log.size, counters, p.cbase + C.dirtyLogBeyond);
    p.vq?.rx?.setLog(p.log);
    p.vq?.tx?.setLog(p.log);
  },
  inject(cmd) {
    engine.inject(port(cmd.id), cmd.frame, performance.now());
  },
  fdb(_cmd) {
    return engine.fdb.entries(performance.now());
  },
  fdbFlush(cmd) {
    return cmd.id < 0 ? engine.fdb.clear() : engine.fdb.removePort(cmd.id);
  },
  setAging(cmd) {
    engine.fdb.agingMs = cmd.ms;
  },
  stop(_cmd) {
    running = false;
  },
};

function execute(cmd: Command): Reply["result"] {
  return (handlers[cmd.op] as (c: Command) => Reply["result"])(cmd);
}

/** The windows last reported to the main thread (as JSON: compared on the control path only). */
let reportedWindow = "";

/** Tells the main thread when a command changed the copy windows. */
function reportWindow(): void {
  const info = windowInfo();
  const text = JSON.stringify(info);
  if (text === reportedWindow) return;
  reportedWindow = text;
  const ev: WindowEvent = { event: "window", info };
  self.postMessage(ev);
}

function onBroken(p: DpPort, reason: string): void {
  // A stopped port's kicks must not wake us any more (a guest could kick forever).
  unwatchKick(p.id);
  const ev: BrokenEvent = { event: "broken", id: p.id, reason };
  self.postMessage(ev);
}

async function drainCommands(): Promise<void> {
  const posted = Atomics.load(control, CONTROL.posted);
  while (handled < posted) {
    while (inbox.length === 0) await new Promise<void>((r) => (wake = r));
    const env = inbox.shift()!;
    handled++;
    try {
      reply({ seq: env.seq, ok: true, result: execute(env) });
    } catch (e) {
      reply({ seq: env.seq, ok: false, error: (e as Error).message });
    }
    reportWindow();
  }
}

function setNotify(on: boolean): void {
  const ports = engine.ports;
  for (let i = 0; i < ports.length; i++) ports[i].vq?.tx?.setNoNotify(!on);
}

function anyAvailable(): boolean {
  const ports = engine.ports;
  for (let i = 0; i < ports.length; i++) {
    const t = ports[i].vq?.tx ?? null;
    if (t !== null && !ports[i].broken && t.available() !== 0) return true;
  }
  return false;
}

function sleep(): void {
  setNotify(true);
  // Re-check after re-enabling kicks: a frame made available in between
  // would otherwise wait for the next kick that never comes (§2.7.10).
  if (!anyAvailable()) {
    const n = epoll.wait(SLEEP_MS);
    for (let i = 0; i < n; i++) {
      const t = epoll.token(i);
      if (t >= TOKEN_KICK && t < TOKEN_TAP) {
        const id = t - TOKEN_KICK;
        const fd = kickFds.get(id);
        if (fd !== undefined) eventfdRead(fd);
        counters[id * COUNTERS_PER_PORT + C.wakeups]++;
      } else if (t === TOKEN_COMMAND) {
        eventfdRead(commandFd);
      }
    }
  }
  setNotify(false);
}

async function run(): Promise<void> {
  // The first message is init; wait for it.
  while (inbox.length === 0) await new Promise<void>((r) => (wake = r));
  const first = inbox.shift()!;
  execute(first);
  handled = 1;
  reply({ seq: first.seq, ok: true });
  reportWindow();
  let lastWork = performance.now();
  let dense = false;
  let lastAging = lastWork;
  while (running) {
    if (Atomics.load(control, CONTROL.posted) !== handled) {
      await drainCommands();
      continue;
    }
    const now = performance.now();
    const work = engine.round(now);
    Atomics.add(control, CONTROL.rounds, 1);
    if (now - lastAging >= AGING_PERIOD_MS) {
      engine.fdb.age(now);
      lastAging = now;
    }
    if (work > 0) {
      lastWork = now;
      dense = work >= DENSE_ROUND;
      continue;
    }
    if (dense && now - lastWork < POLL_GRACE_MS) continue;
    sleep();
    lastWork = performance.now();
    dense = false;
  }
  epoll.close();
  self.close();
}

run();
