/**
 * The control plane's event loop for raw fds: one epoll instance on the
 * main thread, waited on with a thread-pool epoll_wait so Deno's event loop
 * (timers, signals, worker messages) keeps running. Serves the vhost-user
 * listening and connected sockets; never anything per frame.
 *
 * @module
 */

import { Epoll } from "../../ffi/epoll.ts";
import { eventfdCreate, eventfdRead, eventfdWrite } from "../../ffi/eventfd.ts";
import { closeFd } from "../../ffi/io.ts";
import { EPOLLIN, EPOLLRDHUP } from "../../ffi/constants.ts";
import { logger } from "../log.ts";

const log = logger("reactor");
const TOKEN_WAKE = 0;

/** Called when an fd is readable (or hung up). */
export type ReadyHandler = (events: number) => void;

/** A single-threaded readiness loop over raw fds. */
export class Reactor {
  readonly #epoll = new Epoll(32);
  readonly #wakeFd = eventfdCreate();
  readonly #handlers = new Map<number, { fd: number; handler: ReadyHandler }>();
  readonly #tokens = new Map<number, number>();
  #next = 1;
  #running = false;
  #loop: Promise<void> | null = null;

  constructor() {
    this.#epoll.add(this.#wakeFd, EPOLLIN, TOKEN_WAKE);
  }

  /** Calls `handler` whenever `fd` is readable. */
  watch(fd: number, handler: ReadyHandler): void {
    const token = this.#next++;
    this.#epoll.add(fd, EPOLLIN | EPOLLRDHUP, token);
    this.#handlers.set(token, { fd, handler });
    this.#tokens.set(fd, token);
    this.#start();
  }

  /** Stops watching `fd` (call before closing it). */
  unwatch(fd: number): void {
    const token = this.#tokens.get(fd);
    if (token === undefined) return;
    this.#tokens.delete(fd);
    this.#handlers.delete(token);
    this.#epoll.remove(fd);
  }

  #start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#loop = this.#run();
  }

  async #run(): Promise<void> {
    while (this.#running) {
      let n: number;
      try {
        n = await this.#epoll.waitAsync(1000);
      } catch (e) {
        log.error`epoll wait failed: ${e}`;
        continue;
      }
      // Copy the events out first: handlers may watch/unwatch.
      const ready: [number, number][] = [];
      for (let i = 0; i < n; i++) ready.push([this.#epoll.token(i), this.#epoll.events(i)]);
      for (const [token, events] of ready) {
        if (token === TOKEN_WAKE) {
          eventfdRead(this.#wakeFd);
          continue;
        }
        const h = this.#handlers.get(token);
        if (!h) continue;
        try {
          h.handler(events);
        } catch (e) {
          // A handler bug must not end the loop serving every other socket.
          log.error`Handler for fd ${h.fd} failed: ${e}`;
        }
      }
    }
  }

  /** Ends the loop (after the current wait) and releases its fds. */
  async close(): Promise<void> {
    this.#running = false;
    eventfdWrite(this.#wakeFd, 1);
    await this.#loop;
    this.#epoll.close();
    closeFd(this.#wakeFd);
  }
}
