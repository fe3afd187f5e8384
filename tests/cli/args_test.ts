import { assertEquals, assertThrows } from "@std/assert";
import { parseCli } from "../../src/cli/args.ts";

Deno.test("CLI options parse, repeat and default", () => {
  const o = parseCli([
    "--vhost",
    "a=/tmp/a.sock",
    "--vhost",
    "b=/tmp/b.sock",
    "--vhost-client",
    "c=/tmp/c.sock",
    "--tap",
    "vs0",
    "--stats",
    "2",
    "--log-level",
    "debug",
  ]);
  assertEquals(o.vhost, [{ name: "a", target: "/tmp/a.sock" }, {
    name: "b",
    target: "/tmp/b.sock",
  }]);
  assertEquals(o.vhostClient, [{ name: "c", target: "/tmp/c.sock" }]);
  assertEquals(o.tap, ["vs0"]);
  assertEquals(o.stats, 2);
  assertEquals(o.fdbAging, 300);
  assertEquals(o.logLevel, "debug");
  assertEquals(o.logFormat, "text");
});

Deno.test("CLI rejects bad options with a readable message", () => {
  assertThrows(() => parseCli(["--vhost", "nopath"]), Error, "expected NAME=PATH");
  assertThrows(() => parseCli(["--bogus"]), Error, "unknown option");
  assertThrows(() => parseCli(["--log-level", "loud"]), Error, "--log-level loud");
  assertThrows(() => parseCli(["--fdb-aging=-1"]), Error, "--fdb-aging");
  assertThrows(() => parseCli(["--vhost", "a=/x", "--tap", "a"]), Error, "port name a twice");
});

Deno.test("the '--' that `deno task start -- …` passes through is not the end of options", () => {
  const o = parseCli(["--", "--vhost", "a=/tmp/a.sock", "--help"]);
  assertEquals(o.vhost, [{ name: "a", target: "/tmp/a.sock" }]);
  assertEquals(o.help, true);
});
