/**
 * One vhost-user connection: reads messages (header, payload, fds) from a
 * non-blocking UNIX socket, hands them in order to the device, writes
 * replies. Any malformed input closes this connection, closing every fd it
 * sent (CHECKLIST items 1–4); the device is reset so the port can be
 * connected again.
 *
 * @module
 */

import type { Logger } from "@logtape/logtape";
import { MessageIo } from "../../ffi/socket.ts";
import { closeAll, closeFd } from "../../ffi/io.ts";
import { EPOLLHUP } from "../../ffi/constants.ts";
import { ackPayload, type Message, ProtocolError, type VhostUserDevice } from "./device.ts";
import { FLAG_REPLY, HEADER_SIZE, MAX_FDS, MAX_PAYLOAD, requestName, VERSION } from "./protocol.ts";
import type { Reactor } from "./reactor.ts";

/** A connected frontend. */
export class Connection {
  readonly #io = new MessageIo(MAX_FDS);
  readonly #header = new Uint8Array(new ArrayBuffer(HEADER_SIZE));
  readonly #headerView = new DataView(this.#header.buffer);
  #have = 0;
  #payload: Uint8Array | null = null;
  #fds: number[] = [];
  #queue: Message[] = [];
  #busy = false;
  #closed = false;
  /** Resolves when the connection is closed and the device reset. */
  readonly closed: Promise<string>;
  #resolveClosed!: (reason: string) => void;

  constructor(
    readonly fd: number,
    readonly device: VhostUserDevice,
    readonly reactor: Reactor,
    readonly log: Logger,
  ) {
    this.closed = new Promise((r) => (this.#resolveClosed = r));
    reactor.watch(fd, (events) => this.#onReadable(events));
  }

  #onReadable(events: number): void {
    if (this.#closed) return;
    try {
      this.#read();
    } catch (e) {
      this.#closeQuietly(`${(e as Error).message}`);
      return;
    }
    if ((events & EPOLLHUP) !== 0 && !this.#closed) this.#read();
  }

  // Reads whatever is there; complete messages go to the queue.
  #read(): void {
    for (;;) {
      const target = this.#payload ?? this.#header;
      const want = this.#payload ? this.#payload.length - this.#have : HEADER_SIZE - this.#have;
      if (want === 0) {
        this.#complete();
        continue;
      }
      const view = target.subarray(this.#have);
      const r = this.#io.recv(this.fd, view, want);
      if (r === null) return; // EAGAIN: wait for more
      this.#fds.push(...r.fds);
      if (this.#fds.length > MAX_FDS) {
        throw new ProtocolError(`Cannot accept message: more than ${MAX_FDS} fds`);
      }
      if (r.bytes === 0) {
        const mid = this.#have > 0 || this.#payload !== null;
        throw new ProtocolError(
          mid ? "Connection closed in the middle of a message" : "Frontend disconnected",
        );
      }
      this.#have += r.bytes;
      if (!this.#payload && this.#have === HEADER_SIZE) {
        const size = this.#headerView.getUint32(8, true);
        if (size > MAX_PAYLOAD) {
          throw new ProtocolError(
            `Cannot accept ${
              requestName(this.#headerView.getUint32(0, true))
            }: payload of ${size} bytes (limit ${MAX_PAYLOAD})`,
          );
        }
        this.#payload = new Uint8Array(size);
        this.#have = 0;
        if (size === 0) this.#complete();
      } else if (this.#payload && this.#have === this.#payload.length) {
        this.#complete();
      }
    }
  }

  // close() only fails on a bug; that must still not become an unhandled rejection.
  #closeQuietly(reason: string): void {
    this.close(reason).catch((e) => this.log.error`Cannot close connection: ${e}`);
  }

  #complete(): void {
    const msg: Message = {
      request: this.#headerView.getUint32(0, true),
      flags: this.#headerView.getUint32(4, true),
      payload: this.#payload ?? new Uint8Array(0),
      fds: this.#fds,
    };
    this.#payload = null;
    this.#have = 0;
    this.#fds = [];
    this.#queue.push(msg);
    if (!this.#busy) {
      this.#process().catch((e) => this.#closeQuietly(`Internal error: ${(e as Error).stack}`));
    }
  }

  // One message at a time, in order: a handler may wait for the dataplane.
  async #process(): Promise<void> {
    this.#busy = true;
    while (this.#queue.length > 0 && !this.#closed) {
      const msg = this.#queue.shift()!;
      try {
        this.log.debug`<- ${
          requestName(msg.request)
        } (${msg.payload.length} B, ${msg.fds.length} fds)`;
        const outcome = await this.device.handle(msg);
        if (outcome instanceof Uint8Array) this.#send(msg.request, outcome);
        else if (this.device.wantsAck(msg)) this.#send(msg.request, ackPayload(outcome));
        else if (!outcome) this.log.warn`${requestName(msg.request)} refused`;
      } catch (e) {
        closeAll(msg.fds);
        msg.fds = [];
        this.#busy = false;
        await this.close(
          e instanceof ProtocolError ? e.message : `Internal error: ${(e as Error).stack}`,
        );
        return;
      }
      closeAll(msg.fds); // whatever the device did not keep
    }
    this.#busy = false;
  }

  #send(request: number, payload: Uint8Array): void {
    const buf = new Uint8Array(HEADER_SIZE + payload.length);
    const v = new DataView(buf.buffer);
    v.setUint32(0, request, true);
    v.setUint32(4, VERSION | FLAG_REPLY, true);
    v.setUint32(8, payload.length, true);
    buf.set(payload, HEADER_SIZE);
    this.#io.send(this.fd, buf);
  }

  /** Closes the socket, drops queued messages (closing their fds) and resets the device. */
  async close(reason: string): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.reactor.unwatch(this.fd);
    closeFd(this.fd);
    for (const m of this.#queue) closeAll(m.fds);
    this.#queue = [];
    closeAll(this.#fds);
    this.#fds = [];
    if (reason === "Frontend disconnected") this.log.info`${reason}`;
    else this.log.warn`Connection closed: ${reason}`;
    // Wait for a message still being handled before resetting under it.
    while (this.#busy) await new Promise((r) => setTimeout(r, 1));
    await this.device.reset();
    this.#resolveClosed(reason);
  }
}
