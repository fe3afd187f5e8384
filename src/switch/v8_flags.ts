/**
 * The V8 flags the dataplane is tuned for, and whether this process has
 * them.
 *
 * A frame's path is many small functions: ring accessors, the chain walk,
 * parse, classify, the deliver steps and the copy. TurboFan inlines
 * callees into the function it optimizes only up to a cumulative bytecode
 * budget, 920 bytes by default. Our hot path exhausts that budget early
 * (`--trace-turbo-inlining` shows the budget used up at `#whole` and
 * `acquire`), so the rest of the path stays real calls.
 * `--max-inlined-bytecode-size-cumulative=4000` lets the path be inlined.
 *
 * It was chosen with `bench/heap.ts 3000000 64`, the in-process engine at
 * 64 B. Three interleaved A/Bs of 6–8 runs each, on 2026-12-02, gave these
 * medians of worker CPU per frame:
 *
 * | run | default | 4000 |
 * | --- | --- | --- |
 * | 1 | 402 ns | 285 ns |
 * | 2 | 396 ns | 269 ns |
 * | 3 | 382 ns | 350 ns |
 *
 * 2000 and 8000 did no better than the default in the same hour. In the
 * real testpmd loop, 4 interleaved runs: 64 B 2.04 → 2.12 Mpps, 1500 B
 * 1.26 → 1.42 Mpps (medians, inside that rig's spread). The per-function
 * limit (`--max-inlined-bytecode-size`) changed nothing measurable.
 *
 * V8 fixes its flags when the process starts (a later
 * `node:v8.setFlagsFromString` did not change the figures), so they must
 * be on the command line of the process that runs the switch: every task
 * in deno.json, and every test and benchmark that starts one, passes
 * `v8FlagsArg()`.
 *
 * @module
 */

/** How a `deno run` option that carries V8 flags begins. */
const V8_FLAGS_OPTION = "--v8-flags=";

/** The flags, as V8 spells them. */
export const DATAPLANE_V8_FLAGS: readonly string[] = [
  "--max-inlined-bytecode-size-cumulative=4000",
];

/**
 * One `--v8-flags=` argument for `deno run`: the dataplane's flags, then
 * `extra` (e.g. a test's `--expose-gc`), comma-separated.
 */
export function v8FlagsArg(...extra: string[]): string {
  return V8_FLAGS_OPTION + [...DATAPLANE_V8_FLAGS, ...extra].join(",");
}

/**
 * `deno run` options `args` with the dataplane's flags added: any
 * `--v8-flags=` among them is merged into one (so it is not a question
 * which of two Deno keeps), others are left as they are.
 */
export function withV8Flags(args: readonly string[]): string[] {
  const isFlags = (a: string) => a.startsWith(V8_FLAGS_OPTION);
  const extra = args.filter(isFlags).flatMap((a) => a.slice(V8_FLAGS_OPTION.length).split(","));
  return [v8FlagsArg(...extra), ...args.filter((a) => !isFlags(a))];
}

/**
 * The dataplane flags this process lacks, read from its command line
 * (`--v8-flags=`) and DENO_V8_FLAGS. Empty when all are there, or when
 * that cannot be known: no permission to read them, or a `deno compile`
 * binary, whose flags were set when it was built.
 */
export function missingV8Flags(): string[] {
  let given: string;
  try {
    if (!/(^|\/)deno$/.test(Deno.execPath())) return [];
    const argv = Deno.readTextFileSync("/proc/self/cmdline").split("\0");
    // Only deno's own options count: those before the script's path (found by
    // what it names, since an option's value, `--config FILE`, looks the same).
    const cwd = `file://${Deno.cwd()}/`;
    const script = argv.findIndex((a, i) => {
      if (i < 2 || a.startsWith("-")) return false;
      try {
        return new URL(a, cwd).href === Deno.mainModule;
      } catch {
        return false;
      }
    });
    const own = script < 0 ? argv : argv.slice(0, script);
    given = [
      Deno.env.get("DENO_V8_FLAGS") ?? "",
      ...own.filter((a) => a.startsWith(V8_FLAGS_OPTION)).map((a) =>
        a.slice(V8_FLAGS_OPTION.length)
      ),
    ].join(",");
  } catch {
    return [];
  }
  const set = new Set(given.split(",").map((f) => f.trim()));
  return DATAPLANE_V8_FLAGS.filter((f) => !set.has(f));
}
