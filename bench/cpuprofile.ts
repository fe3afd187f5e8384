/**
 * Summarizes a V8 `.cpuprofile` (what `deno run --cpu-prof` writes, one
 * file per isolate: the dataplane worker's is `*.worker-N.cpuprofile`):
 * self time and total time (self plus callees, recursion counted once)
 * per function, and self time per source file.
 *
 * `deno run -A bench/cpuprofile.ts FILE.cpuprofile [TOP]` prints the table.
 * V8 attributes inlined callees to their caller, so a small function that
 * TurboFan inlined (a ring accessor, a copy loop) shows inside its caller;
 * bench/profile_loop.ts's "cpuprof-noinline" mode profiles without
 * inlining to attribute them (slower, so only the shares mean anything).
 *
 * @module
 */

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
/** The parts of a .cpuprofile this reads. */
export interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

/** One function's line in the summary. */
export interface FunctionTime {
  fn: string;
  selfMs: number;
  selfPct: number;
  totalMs: number;
  totalPct: number;
  /** Self time as a share of the busy time (sampled minus waiting); null for a waiting entry. */
  busyPct: number | null;
}

/**
 * Entries that are waiting, not working: V8's idle, the worker's start-up
 * wait, and the worker blocked in epoll_wait (through FFI, sampled like any
 * frame): the profile spans the switch's whole life, set-up included.
 */
const WAITING = [/^\(idle\)$/, /^op_worker_maybe_wait_for_debugger$/, /^wait epoll\.ts:/];

/** The summary of one profile. */
export interface ProfileSummary {
  /** Sampled milliseconds in all. */
  sampledMs: number;
  /** Milliseconds waiting (see WAITING): idle, or asleep in epoll_wait. */
  idleMs: number;
  functions: FunctionTime[];
  /** Self time per source file ("(vm)" for V8's own entries). */
  files: { file: string; selfMs: number; selfPct: number; busyPct: number }[];
}

function nameOf(f: CallFrame): string {
  const fn = f.functionName || "(anonymous)";
  if (!f.url) return fn;
  const file = f.url.replace(/^.*\//, "");
  return `${fn} ${file}:${f.lineNumber + 1}`;
}

/** Self and total time per function, and self time per file. */
export function summarize(p: CpuProfile, top = 40): ProfileSummary {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  // timeDeltas[i] is the time before sample i: sample i lasted until sample i+1.
  for (let i = 0; i < p.samples.length; i++) {
    const dt = p.timeDeltas[i + 1] ?? 0;
    self.set(p.samples[i], (self.get(p.samples[i]) ?? 0) + dt);
  }
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const sampled = [...self.values()].reduce((a, b) => a + b, 0);
  const fnSelf = new Map<string, number>();
  const fnTotal = new Map<string, number>();
  const fileSelf = new Map<string, number>();
  let idle = 0;
  for (const [id, us] of self) {
    const node = byId.get(id)!;
    const name = nameOf(node.callFrame);
    if (WAITING.some((re) => re.test(name))) idle += us;
    fnSelf.set(name, (fnSelf.get(name) ?? 0) + us);
    const file = node.callFrame.url ? node.callFrame.url.replace(/^.*\//, "") : "(vm)";
    fileSelf.set(file, (fileSelf.get(file) ?? 0) + us);
    // Every function on the stack gets this sample's time once.
    const seen = new Set<string>();
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const n = nameOf(byId.get(at)!.callFrame);
      if (seen.has(n)) continue;
      seen.add(n);
      fnTotal.set(n, (fnTotal.get(n) ?? 0) + us);
    }
  }
  const pct = (us: number) => Number((100 * us / (sampled || 1)).toFixed(1));
  const busy = sampled - idle || 1;
  const ms = (us: number) => Number((us / 1000).toFixed(1));
  const functions = [...fnSelf.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([fn, us]) => ({
      fn,
      selfMs: ms(us),
      selfPct: pct(us),
      totalMs: ms(fnTotal.get(fn) ?? us),
      totalPct: pct(fnTotal.get(fn) ?? us),
      busyPct: WAITING.some((re) => re.test(fn)) ? null : Number((100 * us / busy).toFixed(1)),
    }));
  const files = [...fileSelf.entries()]
    .sort((a, b) => b[1] - a[1])
    .map(([file, us]) => ({
      file,
      selfMs: ms(us),
      selfPct: pct(us),
      busyPct: Number((100 * us / busy).toFixed(1)),
    }));
  return { sampledMs: ms(sampled), idleMs: ms(idle), functions, files };
}

/** The summary as a text table. */
export function formatSummary(s: ProfileSummary, title: string): string {
  const lines = [
    `${title}: ${s.sampledMs} ms sampled, ${s.idleMs} ms waiting (idle, epoll_wait)`,
    `${"busy %".padStart(7)} ${"self %".padStart(7)} ${"total %".padStart(8)}  function`,
    ...s.functions.map((f) =>
      `${(f.busyPct?.toFixed(1) ?? "-").padStart(7)} ${f.selfPct.toFixed(1).padStart(7)} ${
        f.totalPct.toFixed(1).padStart(8)
      }  ${f.fn}`
    ),
    "",
    `${"busy %".padStart(7)} ${"self %".padStart(7)}  file`,
    ...s.files.slice(0, 15).map((f) =>
      `${f.busyPct.toFixed(1).padStart(7)} ${f.selfPct.toFixed(1).padStart(7)}  ${f.file}`
    ),
  ];
  return lines.join("\n") + "\n";
}

if (import.meta.main) {
  const [file, top] = Deno.args;
  if (!file) {
    console.error("Usage: deno run -A bench/cpuprofile.ts FILE.cpuprofile [TOP]");
    Deno.exit(2);
  }
  const p = JSON.parse(Deno.readTextFileSync(file)) as CpuProfile;
  console.log(formatSummary(summarize(p, Number(top ?? 40)), file));
}

/**
 * The pipeline stages, by the functions whose self time they are (the
 * engine's code as of issue 11; a function not listed falls in "other").
 */
export const STAGES: { stage: string; fns: RegExp }[] = [
  {
    stage: "pop: avail read, chain walk, address translation",
    fns: /^(available|nextHead|unget|walk|#take|translate|push|reset|receive) /,
  },
  { stage: "parse: header, MACs", fns: /^(parseFrame|readMacs|read|clear) / },
  { stage: "classify: FDB learn + lookup", fns: /^(#classify|learn|lookup|#slot) / },
  { stage: "copy", fns: /^(copyPiece|copySegments|wordCopy|chunkAt|wordIndex) / },
  {
    stage: "RX: acquire, header, commit; TX used; publish",
    fns: /^(acquire|#acquire|writeHeader|commit|complete|pushUsed|publish|flush|hasChains) /,
  },
  {
    stage: "deliver/engine glue",
    fns: /^(#whole|deliver|#deliver|#unicast|#forward|#poll|round) /,
  },
  { stage: "worker loop: clock, Atomics, command check", fns: /^(run |now |op_now$)/ },
  { stage: "GC", fns: /^\(garbage collector\)$/ },
];

/** Busy share (%) per stage, from a summary made with a large `top`. */
export function stageShares(s: ProfileSummary): Record<string, number> {
  const out: Record<string, number> = {};
  for (const { stage } of STAGES) out[stage] = 0;
  out.other = 0;
  for (const f of s.functions) {
    if (f.busyPct === null) continue;
    const st = STAGES.find((x) => x.fns.test(f.fn));
    out[st ? st.stage : "other"] += f.busyPct;
  }
  for (const k of Object.keys(out)) out[k] = Number(out[k].toFixed(1));
  return out;
}
