/**
 * What a switch process holds that a connection could leave behind (its
 * socket, eventfds, region memfds and their shared mappings), its RSS and
 * its control plane's heap after a full GC; and the least-squares growth
 * per cycle of a series of such figures. Used by the leak test
 * (tests/hostile/lifecycle_test.ts, CHECKLIST item 32) and the soak
 * (bench/soak.ts).
 *
 * @module
 */

import { type FdKind, fdKinds, rssParts, sharedFileMappings, windowMappings } from "./procfs.ts";
import type { SwitchProcess } from "./switch_process.ts";

/** The kinds of fd a connection brings: its socket, kick/call/err eventfds, region memfds. */
export const CONNECTION_FDS: readonly FdKind[] = ["socket", "eventfd", "memfd", "epoll"];

/** One reading of a switch process. */
export interface Holdings {
  fds: Record<FdKind, number>;
  /** Shared file mappings (memfds, hugepage files): inode → maps lines. */
  shared: Map<number, string[]>;
  /** Copy-window mappings (second mappings of guest memory, src/virtio/address_window.ts). */
  windows: number;
  /** VmRSS: everything resident, guest RAM pages the switch touched included. */
  rssKiB: number;
  /** RssAnon: memory the switch allocated itself (every isolate's heap, malloc, buffers). */
  anonKiB: number;
  /** RssShmem: shared pages touched (guest RAM; grows with the addresses guests use). */
  shmemKiB: number;
  /** The control plane's heap after a full GC. */
  heapKiB: number;
}

/** Reads what `sp` holds now (the heap after a full GC in the child). */
export async function holdings(sp: SwitchProcess): Promise<Holdings> {
  const heapKiB = (await sp.memory()).heapUsed / 1024;
  const rss = rssParts(sp.pid);
  return {
    fds: fdKinds(sp.pid),
    shared: sharedFileMappings(sp.pid),
    windows: windowMappings(sp.pid).length,
    rssKiB: rss.total,
    anonKiB: rss.anon,
    shmemKiB: rss.shmem,
    heapKiB,
  };
}

/** Whether two readings hold the same connection fds. */
export function sameFds(a: Holdings, b: Holdings): boolean {
  return CONNECTION_FDS.every((k) => a.fds[k] === b.fds[k]);
}

/** Number of shared file mapping lines. */
export function sharedLines(h: Holdings): number {
  let n = 0;
  for (const lines of h.shared.values()) n += lines.length;
  return n;
}

/** "socket 11, eventfd 12, memfd 2, epoll 6, shared mappings 2 (2 files), window mappings 0". */
export function describeHoldings(h: Holdings): string {
  return CONNECTION_FDS.map((k) => `${k} ${h.fds[k]}`).join(", ") +
    `, shared mappings ${sharedLines(h)} (${h.shared.size} files), window mappings ${h.windows}`;
}

/**
 * Least-squares slope of `ys` over `xs` (growth per unit of x): one noisy
 * reading (a GC that ran at another moment, V8 growing a space by a page)
 * moves it far less than an end-minus-start difference.
 */
export function slope(xs: readonly number[], ys: readonly number[]): number {
  const n = xs.length;
  if (n < 2) return 0;
  const mx = xs.reduce((s, x) => s + x, 0) / n;
  const my = ys.reduce((s, y) => s + y, 0) / n;
  let num = 0, den = 0;
  for (let i = 0; i < n; i++) {
    num += (xs[i] - mx) * (ys[i] - my);
    den += (xs[i] - mx) ** 2;
  }
  return den === 0 ? 0 : num / den;
}
