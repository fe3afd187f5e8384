/**
 * The stage for hostile-input tests: a switch in its own process with two
 * well-behaved guests ("a" and "b", TypeScript drivers exchanging frames
 * the whole time) and a port "bad" for the attacker. Every case runs
 * inside `runCase`, which asserts what the checklist promises beyond the
 * case's own outcome: the good guests' traffic kept flowing while the
 * attack ran, the switch process is still up, and the attacker's
 * connection left no fd and no mapping behind.
 *
 * @module
 */

import { assert, assertEquals } from "@std/assert";
import type { CounterName } from "../../mod.ts";
import { ethFrame, RawFrontend, VirtioNetDriver } from "../helpers/frontend.ts";
import type { DriverOptions } from "../helpers/frontend.ts";
import { SwitchProcess } from "../helpers/switch_process.ts";

export const A = "02:00:00:00:00:0a";
export const B = "02:00:00:00:00:0b";
export const BAD = "02:00:00:00:00:66";
export const BCAST = "ff:ff:ff:ff:ff:ff";

/** Frames the pump sends: 60 bytes, payload starting with this byte. */
const PUMP_TAG = 0x5a;
const PUMP_LEN = 60;

/**
 * How long to wait for something that must happen (a frame, a counter, a
 * disconnect). Generous: on a loaded 2-core machine a step can stall for
 * seconds; only a switch that never does it should fail, never a slow one.
 */
export const WAIT_MS = 20_000;

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function isPump(f: Uint8Array): boolean {
  return f.length === PUMP_LEN && f[14] === PUMP_TAG;
}

/**
 * Frames a↔b every few milliseconds. Frames that are not the pump's
 * (sent by a case) are kept for the case to inspect.
 */
class Pump {
  sent = 0;
  got = 0;
  /** Non-pump frames received by a and b. */
  readonly extraA: Uint8Array[] = [];
  readonly extraB: Uint8Array[] = [];
  #running = false;
  #loop: Promise<void> = Promise.resolve();

  constructor(readonly da: VirtioNetDriver, readonly db: VirtioNetDriver) {}

  start(): void {
    this.sent = this.got = 0;
    this.extraA.length = this.extraB.length = 0;
    this.#running = true;
    this.#loop = this.#run();
  }

  #collect(): void {
    for (const f of this.da.receive()) isPump(f) ? this.got++ : this.extraA.push(f);
    for (const f of this.db.receive()) isPump(f) ? this.got++ : this.extraB.push(f);
    this.da.tx.takeUsed();
    this.db.tx.takeUsed();
  }

  async #run(): Promise<void> {
    while (this.#running) {
      // At most 64 in flight: the rings (256) never fill, so nothing may be lost.
      if (this.sent - this.got < 64) {
        this.da.send(ethFrame(B, A, PUMP_LEN - 14, PUMP_TAG));
        this.db.send(ethFrame(A, B, PUMP_LEN - 14, PUMP_TAG));
        this.sent += 2;
      }
      this.#collect();
      await sleep(3);
    }
  }

  /** Waits until `pred` holds for the extra frames at a (or the timeout). */
  async extraAtA(pred: (f: Uint8Array) => boolean, timeoutMs = WAIT_MS): Promise<Uint8Array> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const f = this.extraA.find(pred);
      if (f) return f;
      if (Date.now() > deadline) throw new Error("Expected frame never reached a");
      await sleep(5);
    }
  }

  /** Stops sending; waits for every frame in flight. Returns how many were exchanged. */
  async stop(): Promise<number> {
    this.#running = false;
    await this.#loop;
    const deadline = Date.now() + WAIT_MS;
    while (this.got < this.sent && Date.now() < deadline) {
      this.#collect();
      await sleep(5);
    }
    return this.got;
  }
}

/** One hostile case: the CHECKLIST item it covers and what it does and asserts. */
export interface Case {
  item: number;
  name: string;
  run: (s: Stage) => Promise<void>;
}

/** How a stage is set up (defaults: plain guests a and b, one attacker port). */
export interface StageOptions {
  /** Driver options of the good guests a and b (e.g. the offload features they negotiate). */
  a?: DriverOptions;
  b?: DriverOptions;
  /**
   * More ports a case may connect its own guests to (receivers it inspects);
   * like "bad", every guest on them is gone after the case.
   */
  ports?: readonly string[];
}

/**
 * Registers a test that runs `cases` in order on one stage, each as a step
 * under `Stage.runCase`.
 */
export function hostileTest(
  name: string,
  cases: readonly Case[],
  opts: StageOptions = {},
): void {
  Deno.test({
    name,
    sanitizeOps: false,
    sanitizeResources: false,
    async fn(t) {
      const stage = await Stage.create(opts);
      try {
        for (const c of cases) {
          await t.step(`item ${c.item}: ${c.name}`, () => stage.runCase(c.run));
        }
      } finally {
        await stage.close();
      }
    },
  });
}

/** What a case gets to work with. */
export class Stage {
  readonly #raws: RawFrontend[] = [];
  readonly #guests: VirtioNetDriver[] = [];
  #before: Record<string, Record<CounterName, number>> = {};
  /** Log index when the case started. */
  logFrom = 0;

  private constructor(
    readonly dir: string,
    readonly sp: SwitchProcess,
    readonly da: VirtioNetDriver,
    readonly db: VirtioNetDriver,
    readonly pump: Pump,
    readonly ports: readonly string[],
  ) {}

  /** Starts the switch process and the two good guests, and teaches it their MACs. */
  static async create(opts: StageOptions = {}): Promise<Stage> {
    const dir = await Deno.makeTempDir({ prefix: "vswitch-hostile-" });
    const extra = opts.ports ?? [];
    const sp = await SwitchProcess.start({
      a: `${dir}/a.sock`,
      b: `${dir}/b.sock`,
      bad: `${dir}/bad.sock`,
      ...Object.fromEntries(extra.map((p) => [p, `${dir}/${p}.sock`])),
    });
    const da = await VirtioNetDriver.start(`${dir}/a.sock`, { memMiB: 64, ...opts.a });
    const db = await VirtioNetDriver.start(`${dir}/b.sock`, { memMiB: 64, ...opts.b });
    da.fillRx(128);
    db.fillRx(128);
    await sleep(50);
    da.send(ethFrame(BCAST, A, 46));
    db.send(ethFrame(BCAST, B, 46));
    await da.receiveAtLeast(1);
    await db.receiveAtLeast(1);
    return new Stage(dir, sp, da, db, new Pump(da, db), ["bad", ...extra]);
  }

  /** A raw connection to the attacker's port (closed after the case). */
  raw(): RawFrontend {
    const c = RawFrontend.connect(`${this.dir}/bad.sock`);
    this.#raws.push(c);
    return c;
  }

  /**
   * A driver on the attacker's port (or another per-case port of
   * `StageOptions.ports`), fully negotiated (closed after the case).
   */
  async guest(opts: DriverOptions = {}, port = "bad"): Promise<VirtioNetDriver> {
    const g = await VirtioNetDriver.start(`${this.dir}/${port}.sock`, opts);
    this.#guests.push(g);
    return g;
  }

  /** Asserts the switch closed `c`, logging a reason that matches `re`. */
  async closedWith(c: RawFrontend, re: RegExp): Promise<void> {
    assert(await c.closedByPeer(), "the switch closed the connection");
    await this.sp.waitLog(re, this.logFrom);
  }

  /** How much a counter of `port` grew since the case started. */
  async delta(port: string, counter: CounterName): Promise<number> {
    const now = (await this.sp.stats())[port].counters[counter];
    return now - (this.#before[port]?.[counter] ?? 0);
  }

  /** Waits until a counter grew by at least `n`; returns the growth. */
  async until(port: string, counter: CounterName, n: number, timeoutMs = WAIT_MS): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const d = await this.delta(port, counter);
      if (d >= n || Date.now() > deadline) return d;
      await sleep(10);
    }
  }

  async #connected(port: string): Promise<boolean> {
    return (await this.sp.stats())[port].connected;
  }

  /**
   * Runs one case with the pump going, then checks the checklist's common
   * promises: the good guests' frames all arrived (and some did during the
   * case), the switch is up, and the attacker left no fd or mapping behind.
   */
  async runCase(fn: (s: Stage) => Promise<void>): Promise<void> {
    const fds = this.sp.fdCount();
    const maps = this.sp.maps("memfd:").length;
    const windows = this.sp.windows();
    this.logFrom = this.sp.logs.length;
    this.#before = Object.fromEntries(
      Object.entries(await this.sp.stats()).map(([k, v]) => [k, { ...v.counters }]),
    );
    this.pump.start();
    let exchanged;
    const gotAtStart = this.pump.got;
    try {
      await fn(this);
      // A case can be quicker than a pump round: wait (not time) for a few frames, sent
      // while the attacker is still connected.
      const until = Date.now() + WAIT_MS;
      while (Date.now() < until && this.pump.got - gotAtStart < 4) await sleep(5);
    } finally {
      for (const c of this.#raws.splice(0)) c.close();
      for (const g of this.#guests.splice(0)) g.close();
      const gone = Date.now() + WAIT_MS;
      for (const p of this.ports) {
        while (Date.now() < gone && await this.#connected(p)) await sleep(10);
      }
      exchanged = await this.pump.stop();
    }
    assert(this.sp.alive, `the switch process is up:\n${this.sp.dumpLogs(this.logFrom)}`);
    assertEquals(this.pump.got, this.pump.sent, "every frame between a and b arrived");
    assert(exchanged >= 4, `a and b kept exchanging frames during the case (${exchanged})`);
    const s = await this.sp.stats();
    assert(s.a.connected && s.b.connected, "the good guests are still connected");
    for (const p of this.ports) {
      assertEquals(s[p].connected, false, `the case's guest on ${p} is gone after the case`);
    }
    // fds and mappings: give the control plane a moment to finish the reset.
    const settled = Date.now() + WAIT_MS;
    while (Date.now() < settled && this.sp.fdCount() !== fds) await sleep(10);
    assertEquals(this.sp.fdCount(), fds, "no fd leaked");
    assertEquals(this.sp.maps("memfd:").length, maps, "no mapping leaked");
    // Copy windows are rebuilt when the attacker's memory goes (the worker's control path).
    while (Date.now() < settled && this.sp.windows() !== windows) await sleep(10);
    assertEquals(this.sp.windows(), windows, "copy windows as before the case");
  }

  /** Stops the good guests and the switch. */
  async close(): Promise<void> {
    this.da.close();
    this.db.close();
    await this.sp[Symbol.asyncDispose]();
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}
