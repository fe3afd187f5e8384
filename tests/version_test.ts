/** The version the CLI, the API and `vswitch_build_info` report is deno.json's. */
import { assertEquals } from "@std/assert";
import { VERSION } from "../src/version.ts";

Deno.test("src/version.ts matches deno.json", async () => {
  const cfg = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url)));
  assertEquals(VERSION, cfg.version);
});
