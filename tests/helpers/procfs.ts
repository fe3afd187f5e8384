/**
 * What /proc shows of a process: its open fds (and what each refers to),
 * its mappings and its RSS. Leak and fault tests read these for the test
 * process itself ("self") and for a switch running as a child.
 *
 * @module
 */

/** A pid, or "self" for this process. */
export type Pid = number | "self";

/** fd → readlink target ("socket:[N]", "/memfd:name (deleted)", "pipe:[N]", …). */
export function fdTargets(pid: Pid = "self"): Map<string, string> {
  const out = new Map<string, string>();
  for (const e of Deno.readDirSync(`/proc/${pid}/fd`)) {
    try {
      out.set(e.name, Deno.readLinkSync(`/proc/${pid}/fd/${e.name}`));
    } catch { /* closed while we looked (or the directory's own fd) */ }
  }
  return out;
}

/** Number of open fds (the directory's own fd included for "self"). */
export function fdCount(pid: Pid = "self"): number {
  let n = 0;
  for (const _ of Deno.readDirSync(`/proc/${pid}/fd`)) n++;
  return n;
}

/**
 * Lines of /proc/<pid>/maps, optionally only those `keep` accepts, without
 * the switch's copy windows: second mappings of guest memory
 * (src/virtio/address_window.ts) that come and go with window rebuilds,
 * told apart by MADV_DONTDUMP (VmFlags "dd" in smaps), which nothing else
 * sets on a shared file mapping. `windowMappings` counts those.
 */
export function mapsLines(pid: Pid = "self", keep?: (line: string) => boolean): string[] {
  const lines = smapsEntries(pid).filter((e) => !e.window).map((e) => e.line);
  return keep ? lines.filter(keep) : lines;
}

/** Copy-window mappings of shared files (see mapsLines), as maps lines. */
export function windowMappings(pid: Pid = "self"): string[] {
  return smapsEntries(pid).filter((e) => e.window).map((e) => e.line);
}

const VMA_HEADER = /^[0-9a-f]+-[0-9a-f]+ /;

// Each VMA of /proc/<pid>/smaps: its header (the maps line) and whether it is
// a copy window (shared, file-backed, not dumped).
function smapsEntries(pid: Pid): { line: string; window: boolean }[] {
  const out: { line: string; window: boolean }[] = [];
  for (const l of Deno.readTextFileSync(`/proc/${pid}/smaps`).split("\n")) {
    if (VMA_HEADER.test(l)) {
      out.push({ line: l, window: false });
    } else if (l.startsWith("VmFlags:") && out.length > 0) {
      const e = out[out.length - 1];
      const f = e.line.split(/\s+/);
      e.window = f[1][3] === "s" && Number(f[4]) !== 0 && / dd( |$)/.test(l);
    }
  }
  return out;
}

/** The inode a maps line refers to (field 5; 0 for anonymous memory). */
export function mapsInode(line: string): number {
  return Number(line.split(/\s+/)[4]);
}

/**
 * Resident memory in KiB by kind (/proc/<pid>/status): `anon` is what the
 * process allocated itself (V8 heaps of every isolate, malloc, FFI
 * buffers); `shmem` is pages of shared memory it touched, e.g. guest RAM
 * it mapped, which grows as a guest hands it buffers at new addresses.
 */
export function rssParts(
  pid: Pid = "self",
): { total: number; anon: number; file: number; shmem: number } {
  const s = Deno.readTextFileSync(`/proc/${pid}/status`);
  const kib = (field: string) => Number(s.match(new RegExp(`${field}:\\s+(\\d+) kB`))![1]);
  return {
    total: kib("VmRSS"),
    anon: kib("RssAnon"),
    file: kib("RssFile"),
    shmem: kib("RssShmem"),
  };
}

/** Resident set size in KiB. */
export function rssKiB(pid: Pid = "self"): number {
  const m = Deno.readTextFileSync(`/proc/${pid}/status`).match(/VmRSS:\s+(\d+) kB/);
  return Number(m![1]);
}

/**
 * The kinds of fd a vhost-user connection can make the switch hold, plus
 * the rest. Read from the /proc link target: "anon_inode:[eventfd]",
 * "socket:[N]", "/memfd:NAME (deleted)", "anon_inode:[eventpoll]",
 * "pipe:[N]"; anything else (a file, /dev/null, the runtime's caches) is
 * "other".
 */
export type FdKind = "eventfd" | "socket" | "memfd" | "epoll" | "pipe" | "other";

/** The kind of one fd from its link target. */
export function fdKind(target: string): FdKind {
  if (target === "anon_inode:[eventfd]") return "eventfd";
  if (target.startsWith("socket:[")) return "socket";
  if (target.startsWith("/memfd:")) return "memfd";
  if (target === "anon_inode:[eventpoll]") return "epoll";
  if (target.startsWith("pipe:[")) return "pipe";
  return "other";
}

/** Open fds of `pid` counted by kind. */
export function fdKinds(pid: Pid = "self"): Record<FdKind, number> {
  const out = { eventfd: 0, socket: 0, memfd: 0, epoll: 0, pipe: 0, other: 0 };
  for (const target of fdTargets(pid).values()) out[fdKind(target)]++;
  return out;
}

/**
 * The runtime's own shared mappings: Deno's SQLite caches map their
 * write-ahead-log index ("…_cache_v2-shm") shared, and SQLite may remap it.
 * No connection can cause those.
 */
const RUNTIME_SHM = /\/deno\/[a-z0-9_]+_cache_v\d+(-shm)?$/;

/**
 * Shared mappings of files (memfds, hugepage files, any other file a
 * frontend passed in), by inode → their maps lines: what a connection's
 * memory table leaves behind if it is not unmapped. Private and anonymous
 * memory (the V8 heap, code space, malloc arenas, thread stacks) is not
 * here: it comes and goes with the runtime, not with connections.
 */
export function sharedFileMappings(pid: Pid = "self"): Map<number, string[]> {
  const out = new Map<number, string[]>();
  for (const line of mapsLines(pid)) {
    const f = line.split(/\s+/);
    const inode = Number(f[4]);
    if (f[1][3] !== "s" || inode === 0 || RUNTIME_SHM.test(f.slice(5).join(" "))) continue;
    const lines = out.get(inode);
    if (lines) lines.push(line);
    else out.set(inode, [line]);
  }
  return out;
}
