/**
 * Packet capture on the main thread: turns a port's capture flag on in
 * the shared ring, drains the ring on a timer and writes each port's
 * frames to its pcapng file (see pcapng.ts for the format). One capture
 * per port at a time; it stops after `count` frames, on `stop()`, or when
 * the port goes away.
 *
 * @module
 */

import { logger } from "../log.ts";
import {
  type CaptureBuffers,
  CaptureConsumer,
  type CaptureRecord,
  Direction,
  SNAPLEN,
} from "./capture_ring.ts";
import {
  enhancedPacket,
  EPB_INBOUND,
  EPB_OUTBOUND,
  interfaceDescription,
  sectionHeader,
  vnetComment,
} from "./pcapng.ts";

const log = logger("capture");

/** How often the ring is drained while a capture runs (ms). At 8 MiB, ~1.6 GB/s before drops. */
const DRAIN_MS = 5;

/** Which directions to capture. */
export type CaptureDirection = "rx" | "tx" | "both";

/** What `start` needs. */
export interface CaptureRequest {
  /** Port id and name. */
  port: number;
  portName: string;
  portType: string;
  /** The pcapng file to create (overwritten if it exists). */
  file: string;
  direction: CaptureDirection;
  /** Stop after this many frames (default: until stopped). */
  count?: number;
}

/** A capture's state, as the API shows it. */
export interface CaptureStatus {
  port: string;
  file: string;
  direction: CaptureDirection;
  /** Frames written to the file. */
  written: number;
  /** Frames the ring had no room for (the dataplane does not wait). */
  dropped: number;
  count: number | null;
  /** "running" or "done". */
  state: string;
  startedAt: string;
}

interface Active {
  req: CaptureRequest;
  file: Deno.FsFile;
  written: number;
  startedAt: Date;
  chunks: Uint8Array[];
  bytes: number;
  done: boolean;
  finished: Promise<CaptureStatus>;
  resolve: (s: CaptureStatus) => void;
}

const MASKS: Record<CaptureDirection, number> = {
  rx: Direction.RX,
  tx: Direction.TX,
  both: Direction.RX | Direction.TX,
};

/** Captures by port. */
export class CaptureManager {
  readonly #ring: CaptureConsumer;
  readonly #active = new Map<number, Active>();
  /** Finished captures, kept for status queries (last one per port). */
  readonly #finished = new Map<string, CaptureStatus>();
  #timer: ReturnType<typeof setInterval> | undefined;

  constructor(buffers: CaptureBuffers) {
    this.#ring = new CaptureConsumer(buffers);
  }

  /** Frames the ring dropped for port `id` since its capture began. */
  dropped(id: number): number {
    return this.#ring.dropped(id);
  }

  /** Starts capturing; resolves to its status when it was set up. */
  async start(req: CaptureRequest): Promise<CaptureStatus> {
    if (this.#active.has(req.port)) {
      throw new Error(
        `Cannot capture on port ${req.portName}: a capture is running (stop it first)`,
      );
    }
    if (req.count !== undefined && !(Number.isInteger(req.count) && req.count > 0)) {
      throw new Error(`Cannot capture ${req.count} frames: count must be a positive integer`);
    }
    let file: Deno.FsFile;
    try {
      file = await Deno.open(req.file, { write: true, create: true, truncate: true });
    } catch (e) {
      throw new Error(`Cannot create capture file ${req.file}: ${(e as Error).message}`, {
        cause: e,
      });
    }
    file.writeSync(sectionHeader());
    file.writeSync(interfaceDescription(req.portName, `vswitch ${req.portType} port`, SNAPLEN));
    let resolve!: (s: CaptureStatus) => void;
    const finished = new Promise<CaptureStatus>((r) => (resolve = r));
    const a: Active = {
      req,
      file,
      written: 0,
      startedAt: new Date(),
      chunks: [],
      bytes: 0,
      done: false,
      finished,
      resolve,
    };
    this.#active.set(req.port, a);
    this.#ring.resetCounters(req.port);
    this.#ring.setFlags(req.port, MASKS[req.direction]);
    this.#timer ??= setInterval(() => this.#drain(), DRAIN_MS);
    log.info`Capture on ${req.portName} (${req.direction}) to ${req.file}`;
    return this.#status(a);
  }

  /** Whether a capture runs on port `id`. */
  running(id: number): boolean {
    return this.#active.has(id);
  }

  /** Stops the capture on port `id`: drains what is in the ring, closes the file. */
  stop(id: number): CaptureStatus | undefined {
    const a = this.#active.get(id);
    if (!a) return undefined;
    this.#ring.setFlags(id, 0);
    this.#drain();
    this.#finish(a);
    return this.#status(a);
  }

  /** Resolves when the capture on port `id` ends. */
  finished(id: number): Promise<CaptureStatus> | undefined {
    return this.#active.get(id)?.finished;
  }

  /** Every running capture, then the last finished one of each other port. */
  list(): CaptureStatus[] {
    const running = [...this.#active.values()].map((a) => this.#status(a));
    const names = new Set(running.map((s) => s.port));
    return [...running, ...[...this.#finished.values()].filter((s) => !names.has(s.port))];
  }

  /** Status of the capture (running or last finished) on a port name. */
  statusOf(portName: string): CaptureStatus | undefined {
    const a = [...this.#active.values()].find((x) => x.req.portName === portName);
    return a ? this.#status(a) : this.#finished.get(portName);
  }

  /** Stops every capture. */
  close(): void {
    for (const id of [...this.#active.keys()]) this.stop(id);
  }

  #status(a: Active): CaptureStatus {
    return {
      port: a.req.portName,
      file: a.req.file,
      direction: a.req.direction,
      written: a.written,
      dropped: this.#ring.dropped(a.req.port),
      count: a.req.count ?? null,
      state: a.done ? "done" : "running",
      startedAt: a.startedAt.toISOString(),
    };
  }

  #drain(): void {
    this.#ring.drain((r) => this.#record(r));
    for (const a of [...this.#active.values()]) {
      this.#flush(a);
      if (a.req.count !== undefined && a.written >= a.req.count) this.#finish(a);
    }
  }

  #record(r: CaptureRecord): void {
    const a = this.#active.get(r.port);
    // Frames of a port whose capture just ended (or that was replaced) are dropped here.
    if (!a || a.done) return;
    if (a.req.count !== undefined && a.written >= a.req.count) return;
    const dir = r.direction === Direction.RX ? EPB_INBOUND : EPB_OUTBOUND;
    const epb = enhancedPacket(0, r.timestampUs, r.data, r.origLen, dir, vnetComment(r));
    a.chunks.push(epb);
    a.bytes += epb.length;
    a.written++;
    if (a.bytes > 1 << 20) this.#flush(a);
  }

  #flush(a: Active): void {
    if (a.chunks.length === 0) return;
    const all = new Uint8Array(a.bytes);
    let o = 0;
    for (const c of a.chunks) {
      all.set(c, o);
      o += c.length;
    }
    a.chunks = [];
    a.bytes = 0;
    try {
      let done = 0;
      while (done < all.length) done += a.file.writeSync(all.subarray(done));
    } catch (e) {
      log.error`Cannot write capture file ${a.req.file}: ${(e as Error).message}; capture stopped`;
      this.#ring.setFlags(a.req.port, 0);
      this.#finish(a);
    }
  }

  #finish(a: Active): void {
    if (a.done) return;
    this.#flush(a);
    a.done = true;
    this.#ring.setFlags(a.req.port, 0);
    try {
      a.file.close();
    } catch { /* already closed */ }
    this.#active.delete(a.req.port);
    const s = this.#status(a);
    this.#finished.set(a.req.portName, s);
    log.info`Capture on ${a.req.portName} ended: ${a.written} frames, ${s.dropped} dropped`;
    a.resolve(s);
    if (this.#active.size === 0 && this.#timer !== undefined) {
      clearInterval(this.#timer);
      this.#timer = undefined;
    }
  }
}
