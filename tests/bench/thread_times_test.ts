import { assert, assertEquals } from "@std/assert";
import {
  coresByName,
  machineCores,
  machineTimes,
  type ThreadTimes,
  threadTimes,
} from "../../bench/thread_times.ts";

Deno.test("threadTimes reads this process's threads; the main thread is one of them", () => {
  const t = threadTimes(Deno.pid);
  const main = t.get(Deno.pid);
  if (main === undefined) throw new Error(`no thread ${Deno.pid} in ${[...t.keys()]}`);
  assert(main.cpuTicks >= 0 && main.voluntary >= 0 && main.nonvoluntary >= 0);
  assert(t.size >= 2, "Deno runs helper threads beside the main one");
});

Deno.test("coresByName: per name, summed over threads, a new thread from zero, largest first", () => {
  const th = (name: string, cpuTicks: number): ThreadTimes => ({
    name,
    cpuTicks,
    voluntary: 0,
    nonvoluntary: 0,
  });
  const a = new Map([[1, th("worker-1", 100)], [2, th("V8 DefaultWorke", 10)], [
    3,
    th("V8 DefaultWorke", 20),
  ], [5, th("gone", 7)]]);
  const b = new Map([
    [1, th("worker-1", 150)],
    [2, th("V8 DefaultWorke", 30)],
    [
      3,
      th("V8 DefaultWorke", 60),
    ],
    [4, th("new", 5)],
    [6, th("idle", 0)],
  ]);
  // 100 ticks a second (CLK_TCK): over 2 s, 50 ticks are a quarter of a core.
  assertEquals(coresByName(a, b, 2), { "V8 DefaultWorke": 0.3, "worker-1": 0.25, new: 0.025 });
  assertEquals(Object.keys(coresByName(a, b, 2)), ["V8 DefaultWorke", "worker-1", "new"]);
});

Deno.test("machineTimes and machineCores: busy is every state but idle, iowait and steal", () => {
  const a = machineTimes("cpu  100 10 50 1000 5 3 7 20 0 0\ncpu0 1 2 3\n");
  assertEquals(a, { busy: 170, steal: 20 });
  const b = machineTimes("cpu  300 10 150 1100 9 3 7 60 0 0\n");
  // 100 ticks a second: over 2 s, 300 busy ticks are 1.5 cores, 40 stolen 0.2.
  assertEquals(machineCores(a, b, 2), { busy: 1.5, steal: 0.2 });
  const now = machineTimes();
  assert(now.busy > 0 && now.steal >= 0, "this machine's /proc/stat reads");
});
