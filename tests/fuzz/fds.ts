/**
 * The fds the fuzzer hands to the switch (FD_KINDS, FdPool: real memfds,
 * an eventfd, /dev/zero) and the accounting that proves none leak: open
 * fds and mappings of this process (targets a and a2).
 *
 * @module
 */

import { cString, libc } from "../../ffi/libc.ts";
import { closeAll } from "../../ffi/io.ts";
import { addSeals, fcntl, ftruncate, memfdCreate } from "../../ffi/memory.ts";
import { eventfdCreate } from "../../ffi/eventfd.ts";
import { F_SEAL_SHRINK, O_CLOEXEC, O_RDWR } from "../../ffi/constants.ts";
import { GiB, KiB, MiB } from "./common.ts";
import { fdTargets, mapsLines } from "../helpers/procfs.ts";

// ---------------------------------------------------------------------------
// Process accounting (shared by a and a2)
// ---------------------------------------------------------------------------

const F_GETFD = 1;
const F_DUPFD_CLOEXEC = 1030;

/** True if `fd` is an open descriptor of this process. */
export function isOpen(fd: number): boolean {
  return libc.fcntl(fd, F_GETFD, 0) >= 0;
}

export { fdCount } from "../helpers/procfs.ts";

/**
 * The fds that can be the fuzzer's or the switch's: memfds named vsfuzz-*,
 * /dev/zero, eventfds, and the sockets named in `sockets` (this run's pair).
 * Deno's runtime opens fds of its own at times of its choosing (its update
 * check reads CA certificates and opens a socketpair and DNS sockets a few
 * hundred ms after start), so the exact invariant is on these; the raw
 * /proc/self/fd count is reported with any failure.
 */
export function ourFds(sockets: readonly string[] = []): Map<string, string> {
  const out = new Map<string, string>();
  for (const [fd, target] of fdTargets("self")) {
    if (
      target.includes("vsfuzz") || target.startsWith("/dev/zero") ||
      target === "anon_inode:[eventfd]" || sockets.includes(target)
    ) out.set(fd, target);
  }
  return out;
}

export function sameFds(a: Map<string, string>, b: Map<string, string>): boolean {
  if (a.size !== b.size) return false;
  for (const [k, v] of a) if (b.get(k) !== v) return false;
  return true;
}

export function fdDiff(before: Map<string, string>, after: Map<string, string>): string {
  const out: string[] = [];
  for (const [k, v] of after) if (before.get(k) !== v) out.push(`+${k}=${v}`);
  for (const [k, v] of before) if (after.get(k) !== v) out.push(`-${k}=${v}`);
  return out.join(" ");
}

/**
 * Mappings of the files the fuzzer hands out (our memfds and /dev/zero).
 * The whole /proc/self/maps line count also moves with V8's heap, so the
 * exact invariant is on these lines; the total is reported alongside.
 */
export function ourMappings(): { ours: number; total: number } {
  const lines = mapsLines("self");
  let ours = 0;
  for (const l of lines) if (l.includes("vsfuzz") || l.includes("/dev/zero")) ours++;
  return { ours, total: lines.length };
}

/**
 * Kinds of fd a message may carry, each a real kernel object: memfds of
 * several sizes (some sealed against shrinking, CHECKLIST item 7), one of
 * 6 GiB (regions above 4 GiB, offsets ≥ 2^32), an eventfd (kick/call/err,
 * or a memory "region" that cannot be mapped) and /dev/zero (mappable,
 * not a regular file: no size to check).
 */
export const FD_KINDS = [
  "mem0",
  "mem4k",
  "mem64k",
  "mem1m",
  "mem1m-sealed",
  "mem2m-sealed",
  "mem6g-sealed",
  "eventfd",
  "devzero",
] as const;
export type FdKind = typeof FD_KINDS[number];

export const FILE_SIZE: Record<FdKind, number> = {
  "mem0": 0,
  "mem4k": 4 * KiB,
  "mem64k": 64 * KiB,
  "mem1m": MiB,
  "mem1m-sealed": MiB,
  "mem2m-sealed": 2 * MiB,
  "mem6g-sealed": 6 * GiB,
  "eventfd": 0,
  "devzero": MiB, // nominal: /dev/zero maps any size
};

/** One template fd per kind; messages get fresh dups (the device may close what it gets). */
export class FdPool {
  readonly #fds = new Map<FdKind, number>();

  constructor() {
    for (const kind of FD_KINDS) {
      let fd: number;
      if (kind === "eventfd") fd = eventfdCreate();
      else if (kind === "devzero") {
        fd = libc.open(cString("/dev/zero"), O_RDWR | O_CLOEXEC, 0);
        if (fd < 0) throw new Error("Cannot open /dev/zero");
      } else {
        fd = memfdCreate(`vsfuzz-${kind}`);
        ftruncate(fd, FILE_SIZE[kind]); // sparse: a 6 GiB memfd costs nothing until touched
        if (kind.endsWith("sealed")) addSeals(fd, F_SEAL_SHRINK);
      }
      this.#fds.set(kind, fd);
    }
  }

  /** A new fd for the same kernel object (dup; libc `dup` is not bound, fcntl is). */
  dup(kind: FdKind): number {
    return fcntl(this.#fds.get(kind)!, F_DUPFD_CLOEXEC, 0);
  }

  /** Whether every template is still open (a device closing a foreign fd would show here). */
  allOpen(): boolean {
    for (const fd of this.#fds.values()) if (!isOpen(fd)) return false;
    return true;
  }

  close(): void {
    closeAll(this.#fds.values());
  }
}
