/**
 * The control plane's handle on the dataplane worker: posts commands,
 * wakes the worker, and resolves each command's promise from its reply.
 *
 * @module
 */

import { eventfdCreate, eventfdWrite } from "../../ffi/eventfd.ts";
import { closeFd } from "../../ffi/io.ts";
import { logger } from "../log.ts";
import { createCounterBuffer } from "./counters.ts";
import { type CaptureBuffers, createCaptureBuffers } from "./capture_ring.ts";
import {
  type BrokenEvent,
  type CommandOf,
  CONTROL,
  type Op,
  type Reply,
  type Results,
  type WindowEvent,
} from "./dataplane_api.ts";
import { NO_WINDOW, type WindowInfo } from "../virtio/address_window.ts";

const log = logger("dataplane");

/** A running dataplane worker. */
export class Dataplane {
  /** Per-port counters the worker writes. */
  readonly counters: Float64Array;
  /** The capture ring the worker writes (capture.ts reads it). */
  readonly capture: CaptureBuffers = createCaptureBuffers();
  readonly #control: Int32Array;
  readonly #worker: Worker;
  readonly #commandFd: number;
  readonly #pending = new Map<
    number,
    { resolve: (r: Reply) => void; reject: (e: Error) => void }
  >();
  #seq = 0;
  #dead: Error | null = null;
  /** Called when the worker stops a port after a fault. */
  onBroken: (id: number, reason: string) => void = () => {};
  /** Called when the worker's copy windows change; `window` holds the latest. */
  onWindow: (info: WindowInfo) => void = () => {};
  /** The worker's copy windows as last reported (mode "none" before the first report). */
  window: Readonly<WindowInfo> = NO_WINDOW;
  /** Called once if the worker itself dies (nothing forwards any more). */
  onFatal: (err: Error) => void = () => {};

  private constructor(agingMs: number) {
    const counterBuffer = createCounterBuffer();
    const controlBuffer = new SharedArrayBuffer(CONTROL.length * 4);
    this.counters = new Float64Array(counterBuffer);
    this.#control = new Int32Array(controlBuffer);
    this.#commandFd = eventfdCreate();
    this.#worker = new Worker(new URL("./worker.ts", import.meta.url).href, { type: "module" });
    this.#worker.onmessage = (e: MessageEvent<Reply | BrokenEvent | WindowEvent>) =>
      this.#receive(e.data);
    this.#worker.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      this.#fail(new Error(`Dataplane worker failed: ${e.message}`));
    };
    this.#init = this.request({
      op: "init",
      counters: counterBuffer,
      control: controlBuffer,
      commandFd: this.#commandFd,
      agingMs,
      capture: this.capture,
    });
  }

  readonly #init: Promise<void>;

  /** Starts a worker and waits until it runs. */
  static async start(agingMs: number): Promise<Dataplane> {
    const dp = new Dataplane(agingMs);
    await dp.#init;
    return dp;
  }

  #fail(err: Error): void {
    if (this.#dead) return;
    this.#dead = err;
    log.fatal`${err.message}`;
    this.onFatal(err);
    for (const p of this.#pending.values()) p.reject(err);
    this.#pending.clear();
  }

  #receive(msg: Reply | BrokenEvent | WindowEvent): void {
    if ("event" in msg) {
      if (msg.event === "broken") this.onBroken(msg.id, msg.reason);
      else {
        this.window = msg.info;
        this.onWindow(msg.info);
      }
      return;
    }
    const p = this.#pending.get(msg.seq);
    if (!p) return;
    this.#pending.delete(msg.seq);
    p.resolve(msg);
  }

  /**
   * Sends a command and waits for the worker to carry it out. Rejects with
   * the worker's error message if it failed.
   */
  async request<K extends Op>(cmd: CommandOf<K>): Promise<Results[K]> {
    if (this.#dead) throw this.#dead;
    const seq = ++this.#seq;
    const reply = new Promise<Reply>((resolve, reject) =>
      this.#pending.set(seq, { resolve, reject })
    );
    this.#worker.postMessage({ ...cmd, seq });
    Atomics.add(this.#control, CONTROL.posted, 1);
    eventfdWrite(this.#commandFd, 1);
    const r = await reply;
    if (!r.ok) throw new Error(`Dataplane cannot ${cmd.op}: ${r.error}`);
    return r.result as Results[K];
  }

  /** Rounds the worker has run (liveness). */
  get rounds(): number {
    return Atomics.load(this.#control, CONTROL.rounds);
  }

  /** Stops the worker and releases its eventfd. */
  async stop(): Promise<void> {
    if (!this.#dead) {
      await this.request({ op: "stop" }).catch(() => {});
    }
    this.#worker.terminate();
    closeFd(this.#commandFd);
  }
}
