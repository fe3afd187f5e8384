/**
 * What one device holds of its guest's memory: the memory table (a whole
 * SET_MEM_TABLE, or regions added and removed one by one with
 * CONFIGURE_MEM_SLOTS) and the dirty-page log of a migration (SET_LOG_BASE,
 * SET_LOG_FD, VHOST_F_LOG_ALL).
 *
 * Every change follows one handshake (CHECKLIST item 9): the device's rings
 * stop, the dataplane lets go of the old table (a command it acknowledges
 * between two rounds, so no frame is half-copied), the table changes and
 * old mappings are unmapped, the dataplane gets the new one, the rings
 * restart (re-translated; a ring whose memory went away stays stopped).
 * A replaced log goes the same way without stopping anything: the
 * dataplane switches to the new log between two rounds and acknowledges,
 * and only then is the old one unmapped, so it never writes into a log
 * that is gone.
 *
 * @module
 */

import type { Logger } from "@logtape/logtape";
import { closeAll } from "../../ffi/io.ts";
import { logBytesFor } from "../virtio/dirty_log.ts";
import type { DeviceBackend, Message } from "./device.ts";
import { LogArea } from "./log_area.ts";
import { MemoryTable, parseMemoryTable, parseMemRegion } from "./memory_table.ts";
import { ProtocolError } from "./protocol.ts";

/** What the device lets this module do to its rings. */
export interface RingControl {
  /** Stops every running ring (their bases kept). */
  stopAll(): Promise<void>;
  /** Starts every ring that is ready. */
  startAll(): Promise<void>;
}

function protocolError(e: unknown): ProtocolError {
  return new ProtocolError((e as Error).message, { cause: e });
}

/** A device's guest memory and dirty log. */
export class DeviceMemory {
  #table: MemoryTable | null = null;
  /** The log the frontend gave us last (mapped). */
  #log: LogArea | null = null;
  /** The log the dataplane writes into now (null: not logging). */
  #active: LogArea | null = null;
  #logging = false;
  #logFd = -1;

  constructor(
    readonly backend: DeviceBackend,
    readonly log: Logger,
    readonly rings: RingControl,
  ) {}

  /** The current table (null before the first SET_MEM_TABLE / ADD_MEM_REG). */
  get table(): MemoryTable | null {
    return this.#table;
  }

  /** Whether the dataplane logs dirty pages now. */
  get logging(): boolean {
    return this.#active !== null;
  }

  /** SET_MEM_TABLE: a whole new table; the old one is unmapped. */
  async setTable(msg: Message): Promise<void> {
    let regions;
    try {
      regions = parseMemoryTable(msg.payload, msg.fds.length);
    } catch (e) {
      throw protocolError(e);
    }
    let table: MemoryTable;
    await this.#change(() => {
      // Owns the fds now, closes them on failure.
      table = new MemoryTable(regions, msg.fds.splice(0));
      const old = this.#table;
      this.#table = table;
      old?.close();
    });
    if (table!.unsealed.length > 0) {
      this.log.debug`Memory regions ${table!.unsealed} are memfds not sealed against shrinking`;
    }
    this.log.info`Memory table: ${regions.length} regions, ${
      Math.floor(regions.reduce((s, r) => s + r.size, 0) / 2 ** 20)
    } MiB`;
  }

  /** ADD_MEM_REG: one more region, with exactly one fd. */
  async addRegion(msg: Message): Promise<void> {
    if (msg.fds.length !== 1) {
      throw new ProtocolError(`Cannot accept ADD_MEM_REG: ${msg.fds.length} fds, expected 1`);
    }
    let r;
    try {
      r = parseMemRegion(msg.payload);
    } catch (e) {
      throw protocolError(e);
    }
    const fd = msg.fds.pop()!;
    await this.#change(() => {
      this.#table ??= new MemoryTable([], []);
      this.#table.add(r, fd); // owns fd, closes it on failure
    });
    this.log.info`Memory table: region added at guest ${r.guestPhysAddr}, ${
      Math.floor(r.size / 2 ** 20)
    } MiB (${this.#table!.regions.length} regions)`;
  }

  /**
   * REM_MEM_REG: unmaps the region named by guest address, user address
   * and size. An fd attached is closed unused (the spec allows one for old
   * frontends). False, with nothing changed, when no region matches.
   */
  async removeRegion(msg: Message): Promise<boolean> {
    if (msg.fds.length > 1) {
      throw new ProtocolError(`Cannot accept REM_MEM_REG: ${msg.fds.length} fds`);
    }
    closeAll(msg.fds.splice(0));
    let r;
    try {
      r = parseMemRegion(msg.payload);
    } catch (e) {
      throw protocolError(e);
    }
    const table = this.#table;
    const known = table?.regions.some((x) =>
      x.guestPhysAddr === r.guestPhysAddr && x.userAddr === r.userAddr && x.size === r.size
    );
    if (!table || !known) {
      this.log.warn`Cannot remove memory region at guest 0x${
        r.guestPhysAddr.toString(16)
      }: no such region`;
      return false;
    }
    await this.#change(() => table.remove(r));
    this.log
      .info`Memory table: region removed at guest ${r.guestPhysAddr} (${table.regions.length} regions)`;
    return true;
  }

  // The handshake of the module comment around `edit`.
  async #change(edit: () => void): Promise<void> {
    await this.rings.stopAll();
    if (this.#table) await this.backend.setMemory(null);
    try {
      edit();
    } catch (e) {
      throw e instanceof ProtocolError ? e : protocolError(e); // the connection closes
    }
    const table = this.#table!;
    await this.backend.setMemory(table.mapped());
    if (this.#log && this.#log.size < logBytesFor(table.end)) {
      this.log.warn`Dirty log of ${this.#log.size} bytes does not cover guest memory up to 0x${
        table.end.toString(16)
      }: marks beyond it are dropped and counted`;
    }
    await this.rings.startAll();
  }

  /**
   * SET_LOG_BASE: maps the new log (checked against the guest's memory:
   * it must cover every page up to the highest region's end), hands it to
   * the dataplane if logging is on, then unmaps the old one.
   */
  async setLogBase(msg: Message): Promise<void> {
    if (msg.fds.length !== 1) {
      throw new ProtocolError(`Cannot accept SET_LOG_BASE: ${msg.fds.length} fds, expected 1`);
    }
    let area: LogArea;
    try {
      area = LogArea.map(msg.payload, msg.fds.pop()!);
    } catch (e) {
      throw protocolError(e);
    }
    const end = this.#table?.end ?? 0;
    const need = logBytesFor(end);
    if (area.size < need) {
      area.close();
      throw new ProtocolError(
        `Cannot use dirty log of ${area.size} bytes: guest memory up to 0x${
          end.toString(16)
        } needs ${need}`,
      );
    }
    const old = this.#log;
    this.#log = area;
    try {
      await this.#sync();
    } finally {
      if (old !== this.#active) old?.close();
    }
    this.log.info`Dirty log: ${area.size} bytes`;
  }

  /** SET_LOG_FD: kept (and closed with the device); we never need to signal it. */
  setLogFd(msg: Message): void {
    if (msg.fds.length !== 1 || msg.payload.length > 8) {
      throw new ProtocolError(
        `Cannot accept SET_LOG_FD: ${msg.fds.length} fds and ${msg.payload.length} bytes`,
      );
    }
    closeAll([this.#logFd]);
    this.#logFd = msg.fds.pop()!;
  }

  /** VHOST_F_LOG_ALL set or cleared by SET_FEATURES. */
  async setLogging(on: boolean): Promise<void> {
    if (on === this.#logging) return;
    this.#logging = on;
    await this.#sync();
    this.log.info`Dirty-page logging ${on ? "on" : "off"}${
      on && !this.#log ? " (no log yet)" : ""
    }`;
  }

  // Makes the dataplane's log what it should be; acknowledged before return.
  async #sync(): Promise<void> {
    const want = this.#logging ? this.#log : null;
    if (want === this.#active) return;
    await this.backend.setLog(want === null ? null : { address: want.address, size: want.size });
    this.#active = want;
  }

  /**
   * Back to nothing: the dataplane lets go of log and memory (rings must be
   * stopped already), then everything is unmapped and closed.
   */
  async close(): Promise<void> {
    if (this.#active) await this.backend.setLog(null).catch(() => {});
    this.#active = null;
    this.#logging = false;
    this.#log?.close();
    this.#log = null;
    closeAll([this.#logFd]);
    this.#logFd = -1;
    if (this.#table) {
      await this.backend.setMemory(null).catch(() => {});
      this.#table.close();
      this.#table = null;
    }
  }
}
