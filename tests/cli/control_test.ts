/**
 * The control API and the `vswitch` CLI against a switch in its own
 * process, with two TypeScript vhost-user guests forwarding frames the
 * whole time: ports listed, added and removed at runtime, the FDB shown
 * and flushed, events followed, and bad input of every kind answered with
 * one clear line while forwarding goes on.
 */
import { assert, assertEquals, assertMatch } from "@std/assert";
import { SwitchProcess } from "../helpers/switch_process.ts";
import { vswitch, vswitchOk } from "../helpers/vswitch_cli.ts";
import { ethFrame, VirtioNetDriver } from "../helpers/frontend.ts";
import { vswitchCommand } from "../helpers/vswitch_cli.ts";

const A = "02:00:00:00:00:0a";
const B = "02:00:00:00:00:0b";
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Two driver guests on ports a and b, and a way to prove frames still flow a → b. */
async function guests(dir: string) {
  const a = await VirtioNetDriver.start(`${dir}/a.sock`);
  const b = await VirtioNetDriver.start(`${dir}/b.sock`);
  a.fillRx(128);
  b.fillRx(128);
  // Teach the FDB both MACs.
  a.send(ethFrame(B, A, 60));
  b.send(ethFrame(A, B, 60));
  await a.receiveAtLeast(1);
  await b.receiveAtLeast(1);
  let seq = 0;
  return {
    a,
    b,
    /** Sends `n` frames a → b and resolves to how many arrived. */
    async flow(n = 20): Promise<number> {
      b.receive(); // whatever earlier floods left
      a.tx.takeUsed(); // a's TX buffers back
      for (let i = 0; i < n; i++) a.send(ethFrame(B, A, 100, seq++ & 0xff));
      return (await b.receiveAtLeast(n, 5000)).length;
    },
    close() {
      a.close();
      b.close();
    },
  };
}

function oneLine(r: { code: number; stderr: string; stdout: string }, re: RegExp): void {
  const lines = r.stderr.trim().split("\n");
  assertEquals(r.code, 2, `exit code of a user error:\n${r.stdout}${r.stderr}`);
  assertEquals(lines.length, 1, `one line, no stack trace:\n${r.stderr}`);
  assertMatch(lines[0], re);
}

async function rawRequest(path: string, request: string): Promise<string> {
  const c = await Deno.connect({ transport: "unix", path });
  await c.write(new TextEncoder().encode(request));
  const buf = new Uint8Array(65536);
  let text = "";
  const deadline = Date.now() + 3000;
  while (Date.now() < deadline) {
    const n = await c.read(buf);
    if (n === null) break;
    text += new TextDecoder().decode(buf.subarray(0, n));
    if (/\r\n\r\n/.test(text) && /\}\s*$/.test(text)) break;
  }
  c.close();
  return text;
}

Deno.test({
  name: "control API + CLI: ports, add/del at runtime, FDB, events, bad input; forwarding goes on",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "vswitch-ctl-" });
    const ctl = `${dir}/control.sock`;
    await using sw = await SwitchProcess.cli([
      "--vhost",
      `a=${dir}/a.sock`,
      "--vhost",
      `b=${dir}/b.sock`,
      "--control",
      ctl,
    ]);
    const g = await guests(dir);
    try {
      assertEquals(Deno.statSync(ctl).mode! & 0o777, 0o600, "control socket is 0600");
      assertEquals(await g.flow(), 20);

      // ports: both connected, with negotiated features and queue sizes.
      const ports = JSON.parse(await vswitchOk("ports", "--json", "--control", ctl));
      assertEquals(ports.map((p: { name: string }) => p.name), ["a", "b"]);
      assertEquals(ports[0].state, "connected");
      assert(ports[0].features.includes("VERSION_1"), ports[0].features.join(","));
      assertEquals(ports[0].queues.map((q: { size: number }) => q.size), [256, 256]);
      assert(ports[0].counters.rxPackets >= 21);
      const table = await vswitchOk("ports", "--control", ctl);
      assertMatch(table, /^a\s+vhost-server\s+connected/m);

      // Events are followed while ports come and go.
      const [cmd, ...pre] = vswitchCommand();
      const follower = new Deno.Command(cmd, {
        args: [...pre, "events", "--json", "--control", ctl],
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const lines: Record<string, string>[] = [];
      const reading = (async () => {
        let pending = "";
        for await (const chunk of follower.stdout.pipeThrough(new TextDecoderStream())) {
          pending += chunk;
          let nl;
          while ((nl = pending.indexOf("\n")) >= 0) {
            lines.push(JSON.parse(pending.slice(0, nl)));
            pending = pending.slice(nl + 1);
          }
        }
      })();
      // Generous: a cold start of the CLI (modules not yet cached) under load takes seconds.
      for (let i = 0; i < 600 && !lines.some((l) => l.type === "hello"); i++) await sleep(50);
      assert(lines.some((l) => l.type === "hello"), "the event stream is live");

      // A port added at runtime works at once: a third guest joins and gets flooded frames.
      const added = await vswitchOk("port", "add", "vhost", "c", `${dir}/c.sock`, "--control", ctl);
      assertMatch(added, /Added port c \(vhost-server .*c\.sock\): listening/);
      const c = await VirtioNetDriver.start(`${dir}/c.sock`);
      c.fillRx(64);
      g.a.send(ethFrame("ff:ff:ff:ff:ff:ff", A, 80));
      assertEquals((await c.receiveAtLeast(1)).length, 1, "guest c got a broadcast from a");
      c.close();
      for (let i = 0; i < 200 && !lines.some((l) => l.type === "disconnected"); i++) {
        await sleep(50);
      }
      await vswitchOk("port", "del", "c", "--control", ctl);
      let gone = false;
      try {
        Deno.lstatSync(`${dir}/c.sock`);
      } catch {
        gone = true;
      }
      assert(gone, "a removed port's socket file is gone");
      for (let i = 0; i < 200 && !lines.some((l) => l.type === "removed"); i++) await sleep(50);
      const seen = lines.filter((l) => l.port === "c").map((l) => l.type);
      assertEquals(seen, ["added", "connected", "disconnected", "removed"], JSON.stringify(lines));
      assertMatch(lines.find((l) => l.type === "disconnected")!.reason, /disconnected/i);
      // A guest that breaks its ring: the event says why, the port shows broken, the rest forward.
      await vswitchOk("port", "add", "vhost", "h", `${dir}/h.sock`, "--control", ctl);
      const h = await VirtioNetDriver.start(`${dir}/h.sock`);
      h.tx.setAvailIdx(1000);
      h.tx.notify();
      for (let i = 0; i < 200 && !lines.some((l) => l.type === "broken"); i++) await sleep(50);
      const broken = lines.find((l) => l.type === "broken" && l.port === "h");
      assert(broken, `a broken event: ${JSON.stringify(lines)}`);
      assertMatch(broken!.reason, /avail index/);
      const hp = JSON.parse(await vswitchOk("port", "show", "h", "--control", ctl));
      assertEquals([hp.state, hp.counters.queueBroken], ["broken", 1]);
      assertEquals(await g.flow(), 20, "the others forward while h is broken");
      h.close();
      await vswitchOk("port", "del", "h", "--control", ctl);
      follower.kill("SIGINT");
      await follower.status;
      await reading;
      await follower.stderr.cancel();

      // FDB show and flush, per port and whole.
      const fdb = JSON.parse(await vswitchOk("fdb", "--json", "--control", ctl));
      assertEquals(
        fdb.map((e: { mac: string; port: string }) => `${e.mac}@${e.port}`).sort(),
        [`${A}@a`, `${B}@b`],
      );
      assertMatch(
        await vswitchOk("fdb", "--flush", "--port", "a", "--control", ctl),
        /Flushed 1 entry of port a/,
      );
      const after = JSON.parse(await vswitchOk("fdb", "--json", "--control", ctl));
      assertEquals(after.map((e: { port: string }) => e.port), ["b"]);
      assertMatch(await vswitchOk("fdb", "--flush", "--control", ctl), /Flushed 1 entry/);
      assertEquals(await g.flow(), 20, "frames flow after a flush (flooded, then relearned)");

      // stats: rates per port.
      await sleep(1100);
      const st = await vswitchOk("stats", "--control", ctl);
      assertMatch(st, /^port\s+type\s+state\s+rx pps/);
      assertMatch(st, /^b\s+vhost-server\s+connected/m);

      // User mistakes: one line each, exit 2, nothing disturbed.
      oneLine(
        await vswitch("port", "add", "vhost", "a", `${dir}/x.sock`, "--control", ctl),
        /^vswitch: Port name a is already in use: pick another name/,
      );
      oneLine(
        await vswitch("port", "add", "vhost", "d", `${dir}/a.sock`, "--control", ctl),
        /Socket path .*a\.sock is already used by port a/,
      );
      oneLine(
        await vswitch("port", "add", "vhost", "d", "/nonexistent/dir/d.sock", "--control", ctl),
        /directory \/nonexistent\/dir does not exist/,
      );
      oneLine(
        await vswitch("port", "del", "nosuch", "--control", ctl),
        /^vswitch: No port named nosuch: the ports are a, b/,
      );
      oneLine(await vswitch("fdb", "--port", "nosuch", "--control", ctl), /No port named nosuch/);
      oneLine(
        await vswitch("capture", "nosuch", `${dir}/x.pcapng`, "--control", ctl),
        /No port named nosuch/,
      );
      oneLine(
        await vswitch(
          "port",
          "add",
          "vhost",
          "e",
          `${dir}/e.sock`,
          "--offloads",
          "tso9",
          "--control",
          ctl,
        ),
        /Unknown offload "tso9"/,
      );
      oneLine(
        await vswitch("port", "add", "wire", "e", "--control", ctl),
        /Port type wire: use vhost/,
      );
      oneLine(await vswitch("reload", "--control", ctl), /started without --config/);
      oneLine(
        await vswitch("ports", "--control", `${dir}/nothing.sock`),
        /No switch is listening on .*nothing\.sock: start one/,
      );
      oneLine(await vswitch("frobnicate"), /Unknown command frobnicate/);
      oneLine(
        await vswitch("run", "--vhost", "x=/nonexistent/dir/x.sock", "--control", "none"),
        /^vswitch: Cannot use socket path \/nonexistent\/dir\/x\.sock for port x: directory/,
      );
      await Deno.writeTextFile(
        `${dir}/bad.toml`,
        `[[port]]\nname = "q"\ntype = "tap"\nspeed = 10\n`,
      );
      oneLine(
        await vswitch("run", "--config", `${dir}/bad.toml`, "--control", "none"),
        /^vswitch: Cannot load config .*bad\.toml: port 1 \(q\): unknown key "speed"/,
      );
      oneLine(
        await vswitch("ports", "--bogus", "--control", ctl),
        /unknown option of vswitch ports/,
      );
      for (const cmd of ["run", "ports", "port", "fdb", "stats", "capture", "events", "reload"]) {
        const h = await vswitch(cmd, "--help");
        assertEquals(h.code, 0, `${cmd} --help`);
        assertMatch(h.stdout, /Usage: vswitch/);
      }

      // Malformed API requests: clear JSON errors with the right status.
      const client = Deno.createHttpClient({ proxy: { transport: "unix", path: ctl } });
      const req = async (method: string, path: string, body?: string) => {
        const r = await fetch(`http://x${path}`, { method, body, client });
        return { status: r.status, body: await r.json() };
      };
      const bad = [
        await req("POST", "/v1/ports", "{not json"),
        await req("POST", "/v1/ports", "[1,2]"),
        await req("POST", "/v1/ports", JSON.stringify({ name: "z", type: "vhost-server" })),
        await req("POST", "/v1/ports", JSON.stringify({ name: "z z", type: "tap" })),
        await req("POST", "/v1/ports", JSON.stringify({ name: "z", type: "tap", colour: "red" })),
        await req("POST", "/v1/ports", "x".repeat(70000)),
        await req("GET", "/v1/ports/nosuch"),
        await req("PUT", "/v1/ports"),
        await req("GET", "/v2/whatever"),
        await req("POST", "/v1/ports/a/capture", JSON.stringify({ file: "relative.pcapng" })),
        await req(
          "POST",
          "/v1/ports/a/capture",
          JSON.stringify({ file: "/tmp/x", direction: "up" }),
        ),
      ];
      assertEquals(bad.map((r) => r.status), [
        400,
        400,
        400,
        400,
        400,
        413,
        404,
        405,
        404,
        400,
        400,
      ]);
      for (const r of bad) assert(typeof r.body.error === "string" && r.body.error.length > 10);
      assertMatch(bad[0].body.error, /Cannot parse the request body as JSON/);
      assertMatch(bad[2].body.error, /needs a socket path/);
      assertMatch(bad[4].body.error, /Unknown port field "colour"/);
      // GET /v1 says what the dataplane's copies go through (two guests' memfds and the
      // worker's own buffers: mappings that can be duplicated, so no reason to give).
      const info = await req("GET", "/v1");
      assertEquals(info.status, 200);
      assert(
        ["single", "packed", "chunked"].includes(info.body.copyWindow?.mode),
        JSON.stringify(info.body),
      );
      assertEquals(info.body.copyWindow.reason, "", JSON.stringify(info.body.copyWindow));
      client.close();
      assertMatch(await rawRequest(ctl, "GARBAGE\r\n\r\n"), /^HTTP\/1\.1 400/);

      // A client that connects and says nothing, and one that floods: forwarding goes on.
      const idle = await Promise.all(
        Array.from({ length: 20 }, () => Deno.connect({ transport: "unix", path: ctl })),
      );
      const flood = Deno.createHttpClient({ proxy: { transport: "unix", path: ctl } });
      // A fixed flood (8 clients × 40 requests), with frames flowing until it is over: counts,
      // not a duration, so a slow machine floods for longer instead of failing.
      let requests = 0;
      let flooded = false;
      const floodErrors: string[] = [];
      const flooding = Promise.all(Array.from({ length: 8 }, async () => {
        for (let i = 0; i < 40; i++) {
          try {
            const r = await fetch("http://x/v1/ports", { client: flood });
            await r.body?.cancel();
            requests++;
          } catch (e) {
            floodErrors.push(`${(e as Error).message}: ${(e as Error).cause}`);
            if (!sw.alive) break;
          }
        }
      })).then(() => (flooded = true));
      let delivered = 0, sent = 0;
      while (!flooded || sent < 200) {
        delivered += await g.flow(20);
        sent += 20;
      }
      await flooding;
      flood.close();
      assertEquals(delivered, sent, "every frame forwarded during the flood");
      assertEquals(requests, 320, "every flood request answered");
      assertEquals(floodErrors, [], `every flood request answered:\n${sw.dumpLogs()}`);
      const still = await vswitchOk("ports", "--json", "--control", ctl);
      assertEquals(JSON.parse(still).length, 2, "the API still answers with idle clients open");
      for (const c of idle) c.close();
      assert(sw.alive);
    } finally {
      g.close();
    }
    await Deno.remove(dir, { recursive: true });
  },
});
