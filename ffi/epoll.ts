/**
 * epoll(7): readiness of kick eventfds, TAP fds and sockets.
 *
 * `wait` is a synchronous poll (a dataplane worker may block in it; the
 * main thread only with timeout 0); `waitAsync` runs on Deno's thread pool
 * for the main thread's idle sleeps.
 *
 * @module
 */

import { errno, libc } from "./libc.ts";
import { check, SysError } from "./errno.ts";
import { EPOLL_CLOEXEC, EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLL_CTL_MOD } from "./constants.ts";
import { EPOLL_EVENT } from "./structs.ts";

/** An epoll instance with a reusable event buffer. */
export class Epoll {
  /** The epoll fd. */
  readonly fd: number;
  readonly #events: Uint8Array<ArrayBuffer>;
  readonly #view: DataView;
  readonly #ctl = new Uint8Array(new ArrayBuffer(EPOLL_EVENT.size));
  readonly #ctlView = new DataView(this.#ctl.buffer);
  /** Most events one wait returns. */
  readonly maxEvents: number;

  constructor(maxEvents = 64) {
    this.fd = check("epoll_create1", libc.epoll_create1(EPOLL_CLOEXEC));
    this.maxEvents = maxEvents;
    this.#events = new Uint8Array(new ArrayBuffer(maxEvents * EPOLL_EVENT.size));
    this.#view = new DataView(this.#events.buffer);
  }

  #control(op: number, name: string, fd: number, events: number, token: number): void {
    this.#ctlView.setUint32(EPOLL_EVENT.events, events, true);
    this.#ctlView.setUint32(EPOLL_EVENT.data, token >>> 0, true);
    this.#ctlView.setUint32(EPOLL_EVENT.data + 4, 0, true);
    check("epoll_ctl", libc.epoll_ctl(this.fd, op, fd, this.#ctl), `${name} fd ${fd}`);
  }

  /** Watches `fd` for `events`; `token` (u32) comes back with each event. */
  add(fd: number, events: number, token: number): void {
    this.#control(EPOLL_CTL_ADD, "add", fd, events, token);
  }

  /** Changes the events or token of a watched fd. */
  modify(fd: number, events: number, token: number): void {
    this.#control(EPOLL_CTL_MOD, "modify", fd, events, token);
  }

  /** Stops watching `fd` (ignores an fd that is not watched or already closed). */
  remove(fd: number): void {
    if (libc.epoll_ctl(this.fd, EPOLL_CTL_DEL, fd, this.#ctl) < 0) {
      const e = errno();
      if (e !== 2 /* ENOENT */ && e !== 9 /* EBADF */) {
        throw new SysError("epoll_ctl", e, `remove fd ${fd}`);
      }
    }
  }

  /**
   * Synchronous epoll_wait: blocks the calling thread up to `timeoutMs`
   * (0 polls, -1 forever). Returns the number of events; EINTR gives 0.
   */
  wait(timeoutMs: number): number {
    const n = libc.epoll_wait(this.fd, this.#events, this.maxEvents, timeoutMs);
    if (n < 0) {
      const e = errno();
      if (e === 4 /* EINTR */) return 0;
      throw new SysError("epoll_wait", e);
    }
    return n;
  }

  /**
   * epoll_wait on Deno's thread pool: the event loop runs meanwhile. errno
   * belongs to the pool thread, so a failure reports only that it failed.
   */
  async waitAsync(timeoutMs: number): Promise<number> {
    const n = await libc.epoll_wait_nb(this.fd, this.#events, this.maxEvents, timeoutMs);
    if (n < 0) throw new Error(`Cannot wait on epoll fd ${this.fd}: epoll_wait returned ${n}`);
    return n;
  }

  /** The token of event `i` from the last wait. */
  token(i: number): number {
    return this.#view.getUint32(i * EPOLL_EVENT.size + EPOLL_EVENT.data, true);
  }

  /** The event bits of event `i` from the last wait. */
  events(i: number): number {
    return this.#view.getUint32(i * EPOLL_EVENT.size + EPOLL_EVENT.events, true);
  }

  /** Closes the epoll fd. */
  close(): void {
    libc.close(this.fd);
  }
}
