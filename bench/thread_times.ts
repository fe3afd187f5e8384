/**
 * CPU time and context switches of every thread of a process, from
 * /proc/PID/task: what bench/profile_loop.ts and bench/iperf.ts read
 * around a measurement to say which of the switch's threads (the worker,
 * the main thread, V8's compiler and GC helpers, Deno's runtime) took the
 * CPU that the guests or the generator then lacked.
 *
 * @module
 */

/** Ticks per second of the utime/stime fields (USER_HZ; 100 on Linux/x86). */
export const CLK_TCK = 100;

/** One thread's totals since it started. */
export interface ThreadTimes {
  name: string;
  cpuTicks: number;
  nonvoluntary: number;
  voluntary: number;
}

/** Every live thread of `pid`, by tid (a thread that ends while read is left out). */
export function threadTimes(pid: number): Map<number, ThreadTimes> {
  const out = new Map<number, ThreadTimes>();
  for (const e of Deno.readDirSync(`/proc/${pid}/task`)) {
    try {
      const stat = Deno.readTextFileSync(`/proc/${pid}/task/${e.name}/stat`);
      const name = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const status = Deno.readTextFileSync(`/proc/${pid}/task/${e.name}/status`);
      const num = (k: string) => Number(status.match(new RegExp(`${k}:\\s+(\\d+)`))?.[1] ?? 0);
      out.set(Number(e.name), {
        name,
        cpuTicks: Number(f[11]) + Number(f[12]), // utime + stime (fields 14, 15)
        voluntary: num("voluntary_ctxt_switches"),
        nonvoluntary: num("nonvoluntary_ctxt_switches"),
      });
    } catch { /* the thread ended */ }
  }
  return out;
}

/**
 * Cores used per thread name between two readings `seconds` apart (threads
 * of one name summed; a thread born in between counts from zero), largest
 * first.
 */
export function coresByName(
  a: Map<number, ThreadTimes>,
  b: Map<number, ThreadTimes>,
  seconds: number,
): Record<string, number> {
  const by = new Map<string, number>();
  for (const [tid, t] of b) {
    const ticks = t.cpuTicks - (a.get(tid)?.cpuTicks ?? 0);
    by.set(t.name, (by.get(t.name) ?? 0) + ticks);
  }
  return Object.fromEntries(
    [...by].filter(([, v]) => v > 0).sort((x, y) => y[1] - x[1])
      .map(([k, v]) => [k, Number((v / CLK_TCK / seconds).toFixed(3))]),
  );
}

/** The whole machine's CPU ticks since boot, from the first line of /proc/stat. */
export interface MachineTimes {
  /** Every state but idle, iowait and steal. */
  busy: number;
  /** Time the hypervisor ran something else while this VM wanted the CPU. */
  steal: number;
}

/**
 * Reads the "cpu" line of /proc/stat (user nice system idle iowait irq
 * softirq steal …; `stat` is its text, by default read now).
 */
export function machineTimes(stat = Deno.readTextFileSync("/proc/stat")): MachineTimes {
  const f = stat.split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, , , irq, softirq, steal] = f;
  return { busy: user + nice + system + irq + softirq, steal: steal ?? 0 };
}

/** Busy and stolen cores between two readings `seconds` apart. */
export function machineCores(
  a: MachineTimes,
  b: MachineTimes,
  seconds: number,
): { busy: number; steal: number } {
  const cores = (t: number) => Number((t / CLK_TCK / seconds).toFixed(3));
  return { busy: cores(b.busy - a.busy), steal: cores(b.steal - a.steal) };
}
