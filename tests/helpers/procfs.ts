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

/** Lines of /proc/<pid>/maps, optionally only those `keep` accepts. */
export function mapsLines(pid: Pid = "self", keep?: (line: string) => boolean): string[] {
  const lines = Deno.readTextFileSync(`/proc/${pid}/maps`).trim().split("\n");
  return keep ? lines.filter(keep) : lines;
}

/** The inode a maps line refers to (field 5; 0 for anonymous memory). */
export function mapsInode(line: string): number {
  return Number(line.split(/\s+/)[4]);
}

/** Resident set size in KiB. */
export function rssKiB(pid: Pid = "self"): number {
  const m = Deno.readTextFileSync(`/proc/${pid}/status`).match(/VmRSS:\s+(\d+) kB/);
  return Number(m![1]);
}
