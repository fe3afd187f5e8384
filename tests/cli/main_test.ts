/**
 * The CLI as a user runs it: sockets exist before "Ready", SIGTERM stops it
 * cleanly (sockets removed, the TAP it created gone).
 */
import { assert, assertEquals } from "@std/assert";
import { needRoot, requireOrSkip, uniqueSuffix } from "../helpers/env.ts";
import { v8FlagsArg } from "../../src/switch/v8_flags.ts";

function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

Deno.test({
  name: "deno task start: ready with sockets and TAP, clean stop on SIGTERM",
  sanitizeResources: false,
  async fn() {
    if (!requireOrSkip("CLI start/stop test", needRoot())) return;
    const id = uniqueSuffix();
    const dir = await Deno.makeTempDir({ prefix: "vswitch-cli-" });
    const tap = `vsc${id}`.slice(0, 15);
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        v8FlagsArg(),
        new URL("../../src/cli/main.ts", import.meta.url).pathname,
        "--vhost",
        `a=${dir}/a.sock`,
        "--vhost-client",
        `b=${dir}/b.sock`,
        "--tap",
        tap,
      ],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    try {
      const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
      let out = "";
      const deadline = Date.now() + 15000;
      while (!out.includes("Ready") && Date.now() < deadline) {
        const { value, done } = await reader.read();
        if (done) break;
        out += value;
      }
      assert(out.includes("Ready"), `switch did not become ready:\n${out}`);
      assert(exists(`${dir}/a.sock`), "server socket exists when Ready is logged");
      assert(exists(`/sys/class/net/${tap}`), "TAP exists");
      child.kill("SIGTERM");
      const status = await child.status;
      assertEquals(status.code, 0);
      assert(!exists(`${dir}/a.sock`), "socket removed on stop");
      assert(!exists(`/sys/class/net/${tap}`), "TAP we created is gone");
      reader.releaseLock();
      await child.stdout.cancel().catch(() => {});
    } finally {
      try {
        child.kill("SIGKILL");
      } catch { /* already exited */ }
      await child.stderr.cancel().catch(() => {});
      await Deno.remove(dir, { recursive: true });
    }
  },
});
