import { assertEquals } from "@std/assert";
import { DATAPLANE_V8_FLAGS, v8FlagsArg, withV8Flags } from "../../src/switch/v8_flags.ts";

const MODULE = new URL("../../src/switch/v8_flags.ts", import.meta.url).href;

// What missingV8Flags() says in a fresh deno process started with `flags` and `env`.
async function missingIn(flags: string[], env: Record<string, string> = {}): Promise<string[]> {
  const dir = await Deno.makeTempDir({ prefix: "vswitch-v8flags-" });
  try {
    const script = `${dir}/probe.ts`;
    await Deno.writeTextFile(
      script,
      `import { missingV8Flags } from "${MODULE}";\nconsole.log(JSON.stringify(missingV8Flags()));\n`,
    );
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", ...flags, script, v8FlagsArg()],
      env: { DENO_NO_UPDATE_CHECK: "1", ...env },
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
    return JSON.parse(new TextDecoder().decode(out.stdout));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("V8 flags: one merged --v8-flags, and a process knows whether it has them", async () => {
  assertEquals(withV8Flags(["--cpu-prof", "--v8-flags=--expose-gc,--trace-deopt", "x.ts"]), [
    v8FlagsArg("--expose-gc", "--trace-deopt"),
    "--cpu-prof",
    "x.ts",
  ]);
  assertEquals(withV8Flags([]), [`--v8-flags=${DATAPLANE_V8_FLAGS.join(",")}`]);

  assertEquals(await missingIn([]), [...DATAPLANE_V8_FLAGS], "no flags");
  assertEquals(await missingIn([v8FlagsArg()]), [], "on the command line");
  assertEquals(await missingIn([v8FlagsArg("--expose-gc")]), [], "with others");
  // An option's value before the flag is not taken for the script.
  const config = new URL("../../deno.json", import.meta.url).pathname;
  assertEquals(await missingIn(["--config", config, v8FlagsArg()]), [], "after --config FILE");
  assertEquals(
    await missingIn([], { DENO_V8_FLAGS: DATAPLANE_V8_FLAGS.join(",") }),
    [],
    "from DENO_V8_FLAGS",
  );
  // The script's own arguments are not deno's options: the probe is passed the flags.
  assertEquals(await missingIn(["--v8-flags=--expose-gc"]), [...DATAPLANE_V8_FLAGS]);
});

Deno.test("V8 flags: every deno.json task that runs the switch passes them", async () => {
  const config = JSON.parse(
    await Deno.readTextFile(new URL("../../deno.json", import.meta.url)),
  ) as { tasks: Record<string, string> };
  for (const task of ["start", "vswitch", "demo", "compile"]) {
    const words = config.tasks[task].split(/\s+/);
    assertEquals(words.includes(v8FlagsArg()), true, `task ${task}: ${config.tasks[task]}`);
  }
});
