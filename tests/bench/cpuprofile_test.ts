import { assertEquals } from "@std/assert";
import { type CpuProfile, stageShares, summarize } from "../../bench/cpuprofile.ts";

// (root) → run → copyPiece, and (root) → wait (the worker asleep in epoll_wait).
const frame = (functionName: string, url = "", lineNumber = 0) => ({
  functionName,
  url,
  lineNumber,
  columnNumber: 0,
  scriptId: "1",
});
const PROFILE: CpuProfile = {
  nodes: [
    { id: 1, callFrame: frame("(root)"), children: [2, 4] },
    { id: 2, callFrame: frame("run", "file:///x/src/switch/worker.ts", 9), children: [3] },
    { id: 3, callFrame: frame("copyPiece", "file:///x/src/virtio/chain.ts", 96) },
    { id: 4, callFrame: frame("wait", "file:///x/ffi/epoll.ts", 64) },
  ],
  // Sample i lasts until sample i + 1 (timeDeltas[i + 1] µs); the last one counts 0.
  samples: [3, 3, 2, 4, 4],
  timeDeltas: [0, 100, 100, 100, 100],
  startTime: 0,
  endTime: 500,
};

Deno.test("cpuprofile: self, total and busy shares; waiting is not busy", () => {
  const s = summarize(PROFILE);
  assertEquals(s.sampledMs, 0.4);
  assertEquals(s.idleMs, 0.1);
  const by = Object.fromEntries(s.functions.map((f) => [f.fn, f]));
  assertEquals(by["copyPiece chain.ts:97"].selfPct, 50);
  assertEquals(by["copyPiece chain.ts:97"].busyPct, 66.7);
  assertEquals(by["run worker.ts:10"].selfPct, 25);
  assertEquals(by["run worker.ts:10"].totalPct, 75); // its own and copyPiece's
  assertEquals(by["wait epoll.ts:65"].busyPct, null);
  assertEquals(s.files.map((f) => f.file), ["chain.ts", "worker.ts", "epoll.ts"]);
});

Deno.test("cpuprofile: stage shares add the busy shares of their functions", () => {
  const st = stageShares(summarize(PROFILE, 100));
  assertEquals(st.copy, 66.7);
  assertEquals(st["worker loop: clock, Atomics, command check"], 33.3);
  assertEquals(st.other, 0);
});
