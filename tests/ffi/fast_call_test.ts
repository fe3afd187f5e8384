import { assert, assertEquals } from "@std/assert";

// The data path's FFI calls must stay on V8's fast call in a Worker: a
// number passed for a size_t (usize) parameter makes the optimized caller
// deoptimize ("not a BigInt") each time it is optimized again, and the
// recompiling cost the TCG guests of bench:iperf 0.4 of a core (ffi/libc.ts).
Deno.test("data-path FFI calls in a Worker never deoptimize for want of a BigInt", async () => {
  const worker = new URL("../helpers/fast_call_worker.ts", import.meta.url).href;
  const main = `new Worker(${JSON.stringify(worker)}, { type: "module" });`;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--v8-flags=--trace-deopt", "-"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    env: { DENO_NO_UPDATE_CHECK: "1" },
  }).spawn();
  const w = out.stdin.getWriter();
  await w.write(new TextEncoder().encode(main));
  await w.close();
  const r = await out.output();
  const text = new TextDecoder().decode(r.stdout);
  assertEquals(r.code, 0, new TextDecoder().decode(r.stderr));
  assert(/calls done: \d+/.test(text), "the worker ran its loop");
  const deopts = text.split("\n").filter((l) => l.includes("not a BigInt"));
  assertEquals(deopts.length, 0, `deoptimized:\n${deopts.slice(0, 3).join("\n")}`);
});
