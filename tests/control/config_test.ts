/**
 * The config file: TOML parsed and checked whole; every mistake is listed
 * in one message, and nothing is half-accepted.
 */
import { assertEquals, assertMatch, assertThrows } from "@std/assert";
import { parseConfig, parseListen } from "../../src/control/config.ts";
import { UserError } from "../../src/control/errors.ts";

Deno.test("config: ports, offloads, FDB aging, metrics, control socket", () => {
  const cfg = parseConfig(
    `
control = "/tmp/vs.sock"
metrics = "127.0.0.1:9469"
[fdb]
aging = 60
[[port]]
name = "vm1"
type = "vhost-server"
path = "/tmp/vm1.sock"
offloads = ["csum", "tso4"]
[[port]]
name = "vm2"
type = "vhost-client"
path = "/tmp/vm2.sock"
offloads = "none"
[[port]]
name = "host"
type = "tap"
ifname = "vs-tap0"
`,
    "test.toml",
  );
  assertEquals(cfg.control, "/tmp/vs.sock");
  assertEquals(cfg.metrics, "127.0.0.1:9469");
  assertEquals(cfg.fdbAging, 60);
  assertEquals(cfg.ports, [
    { name: "vm1", type: "vhost-server", path: "/tmp/vm1.sock", offloads: ["csum", "tso4"] },
    { name: "vm2", type: "vhost-client", path: "/tmp/vm2.sock", offloads: [] },
    { name: "host", type: "tap", ifname: "vs-tap0" },
  ]);
  assertEquals(parseConfig("", "empty.toml").ports, []);
});

Deno.test("config: every mistake is listed, the file refused whole", () => {
  const e = assertThrows(
    () =>
      parseConfig(
        `
colour = "red"
metrics = "nope"
[fdb]
aging = -1
[[port]]
name = "a"
type = "vhost-server"
path = "/nonexistent/dir/a.sock"
[[port]]
name = "b"
type = "vhost-server"
path = "/tmp/b.sock"
[[port]]
name = "b"
type = "tap"
[[port]]
name = "c"
type = "vhost-server"
path = "/tmp/b.sock"
[[port]]
name = "d"
type = "wire"
[[port]]
name = "e"
type = "tap"
offloads = ["tso9"]
[[port]]
name = "f"
type = "tap"
mtu = 9000
`,
        "bad.toml",
      ),
    UserError,
  );
  const m = e.message;
  assertMatch(m, /^Cannot load config bad\.toml: /);
  assertMatch(m, /unknown key "colour"/);
  assertMatch(m, /Cannot use metrics nope: expected HOST:PORT/);
  assertMatch(m, /fdb\.aging must be a number of seconds/);
  assertMatch(m, /port 1 \(a\): .*directory \/nonexistent\/dir does not exist/);
  assertMatch(m, /port 3 \(b\): Port name b is already in use/);
  assertMatch(m, /port 4 \(c\): Socket path \/tmp\/b\.sock is already used by port b/);
  assertMatch(m, /port 5 \(d\): .*type "wire" is not one of/);
  assertMatch(m, /port 6 \(e\): Unknown offload "tso9"/);
  assertMatch(m, /port 7 \(f\): unknown key "mtu"/);
  assertMatch(m, /\(nothing was changed\)$/);
  assertEquals(m.includes("\n"), false, "one line");
  assertThrows(
    () => parseConfig("[[port]\nname=", "syntax.toml"),
    UserError,
    "fix the TOML syntax",
  );
});

Deno.test("metrics listen addresses: loopback by default", () => {
  assertEquals(parseListen("127.0.0.1:9469"), ["127.0.0.1", 9469]);
  assertEquals(parseListen(":9469"), ["127.0.0.1", 9469]);
  assertEquals(parseListen("9469"), ["127.0.0.1", 9469]);
  assertEquals(parseListen("0.0.0.0:80"), ["0.0.0.0", 80]);
  assertEquals(parseListen("[::1]:9469"), ["::1", 9469]);
  assertThrows(() => parseListen("host"), UserError, "expected HOST:PORT");
  assertThrows(() => parseListen("h:70000"), UserError, "expected HOST:PORT");
});
