/**
 * CHECKLIST item 33: an unhandled promise rejection or an exception thrown
 * from a callback would end the whole Deno process, and every port with
 * it. With the CLI's guards installed the process logs each once and
 * stays up.
 */
import { assert, assertEquals, assertMatch } from "@std/assert";

Deno.test("a stray rejection and a thrown timer callback do not end the process", async () => {
  const child = new URL("./guards_child.ts", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", child],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  assert(out.success, `exit ${out.code}: ${stderr}`);
  const last = JSON.parse(stdout.trim().split("\n").pop()!);
  assertEquals(last, { alive: true, rejections: 1, exceptions: 1 });
  const logs = stdout + stderr;
  assertMatch(logs, /Unhandled rejection \(the process stays up\): Error: stray rejection/);
  assertMatch(logs, /Uncaught exception \(the process stays up\): Error: thrown in a timer/);
});
