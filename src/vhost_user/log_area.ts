/**
 * The dirty-log area a frontend shares with SET_LOG_BASE (vhost-user.rst
 * "Migration", "Log description"): u64 size and u64 offset in the payload,
 * one fd in the ancillary data; the log starts `offset` bytes into the
 * file. Mapped with the checks guest memory gets (CHECKLIST item 7: a
 * regular file that really holds offset + size bytes, so touching the log
 * cannot SIGBUS), and bounded: at most MAX_LOG_SIZE bytes.
 *
 * @module
 */

import { type FileStat, fstat, type Mapping, mmap, munmap } from "../../ffi/memory.ts";
import { closeAll } from "../../ffi/io.ts";
import { S_IFMT, S_IFREG } from "../../ffi/constants.ts";
import { getU64 } from "../../ffi/structs.ts";
import { LOG_BASE_SIZE, MAX_LOG_SIZE } from "./protocol.ts";

const PAGE = 4096;

/** A SET_LOG_BASE the device cannot use. */
export class LogAreaError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "LogAreaError";
  }
}

/** A mapped dirty log: `address` is guest page 0's byte. */
export class LogArea {
  readonly #mapping: Mapping;
  #closed = false;

  private constructor(mapping: Mapping, readonly address: number, readonly size: number) {
    this.#mapping = mapping;
  }

  /**
   * Parses a SET_LOG_BASE payload and maps the log from `fd`, which it
   * always closes (a mapping needs no fd). Throws LogAreaError.
   */
  static map(payload: Uint8Array, fd: number): LogArea {
    try {
      if (payload.length !== LOG_BASE_SIZE) {
        throw new LogAreaError(
          `Cannot use dirty log: payload of ${payload.length} bytes, expected ${LOG_BASE_SIZE}`,
        );
      }
      const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
      const size = getU64(view, 0);
      const offset = getU64(view, 8);
      if (size <= 0 || size > MAX_LOG_SIZE) {
        throw new LogAreaError(`Cannot use dirty log of ${size} bytes: 1..${MAX_LOG_SIZE}`);
      }
      if (offset < 0 || offset + size > Number.MAX_SAFE_INTEGER) {
        throw new LogAreaError(`Cannot use dirty log at offset ${offset}: beyond 2^53`);
      }
      let st: FileStat;
      try {
        st = fstat(fd);
      } catch (e) {
        throw new LogAreaError(`Cannot use dirty log: fstat failed`, { cause: e });
      }
      if ((st.mode & S_IFMT) !== S_IFREG) {
        throw new LogAreaError(
          `Cannot use dirty log: fd is not a regular file (mode 0o${st.mode.toString(8)})`,
        );
      }
      if (offset + size > st.size) {
        throw new LogAreaError(
          `Cannot use dirty log: offset ${offset} + size ${size} beyond the file's ${st.size} bytes`,
        );
      }
      const aligned = offset - (offset % PAGE);
      let m: Mapping;
      try {
        m = mmap(fd, size + offset - aligned, aligned);
      } catch (e) {
        throw new LogAreaError(`Cannot map dirty log of ${size} bytes`, { cause: e });
      }
      return new LogArea(m, m.address + offset - aligned, size);
    } finally {
      closeAll([fd]);
    }
  }

  /** Unmaps the log; idempotent. The dataplane must have let go of it. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    munmap(this.#mapping);
  }
}
