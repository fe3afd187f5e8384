/**
 * The metrics endpoint: `promtool check metrics` accepts our exposition,
 * the names and labels are the documented ones, and the Debian
 * `prometheus` binary scrapes the switch and answers a query with a
 * counter that moved while TypeScript guests sent frames.
 */
import { assert, assertEquals, assertMatch } from "@std/assert";
import { SwitchProcess } from "../helpers/switch_process.ts";
import { hasCommand, requireOrSkip } from "../helpers/env.ts";
import { ethFrame, VirtioNetDriver } from "../helpers/frontend.ts";

const A = "02:00:00:00:00:0a";
const B = "02:00:00:00:00:0b";
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

async function query(web: string, q: string): Promise<number | undefined> {
  try {
    const r = await fetch(`http://${web}/api/v1/query?query=${encodeURIComponent(q)}`);
    const j = await r.json();
    const v = j?.data?.result?.[0]?.value?.[1];
    return v === undefined ? undefined : Number(v);
  } catch {
    return undefined;
  }
}

Deno.test({
  name: "metrics: promtool accepts them, prometheus scrapes a counter that moved",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const missing = ["prometheus", "promtool"].filter((c) => !hasCommand(c));
    if (
      !requireOrSkip("metrics test", missing.length ? `needs ${missing.join(", ")}` : undefined)
    ) {
      return;
    }
    const dir = await Deno.makeTempDir({ prefix: "vswitch-metrics-" });
    const mport = freePort();
    await using sw = await SwitchProcess.cli([
      "--vhost",
      `a=${dir}/a.sock`,
      "--vhost",
      `b=${dir}/b.sock`,
      "--control",
      `${dir}/control.sock`,
      "--metrics",
      `127.0.0.1:${mport}`,
    ]);
    const a = await VirtioNetDriver.start(`${dir}/a.sock`);
    const b = await VirtioNetDriver.start(`${dir}/b.sock`);
    b.fillRx(128);
    a.fillRx(16);
    let prom: Deno.ChildProcess | undefined;
    try {
      for (let i = 0; i < 10; i++) a.send(ethFrame(B, A, 100));
      await b.receiveAtLeast(10);
      const text = await (await fetch(`http://127.0.0.1:${mport}/metrics`)).text();
      assertMatch(text, /^vswitch_port_rx_packets_total\{port="a",type="vhost"\} 10$/m);
      assertMatch(text, /^vswitch_port_tx_packets_total\{port="b",type="vhost"\} 10$/m);
      assertMatch(
        text,
        /^vswitch_port_drops_total\{port="a",type="vhost",reason="no_buffer"\} 0$/m,
      );
      assertMatch(text, /^vswitch_port_interrupts_total\{port="b",type="vhost"\} \d+$/m);
      assertMatch(text, /^vswitch_port_wakeups_total\{port="a",type="vhost"\} \d+$/m);
      assertMatch(text, /^vswitch_port_up\{port="a",type="vhost"\} 1$/m);
      assertMatch(text, /^vswitch_ports_up 2$/m);
      assertMatch(text, /^vswitch_fdb_entries 1$/m);
      assertMatch(text, /^vswitch_build_info\{version="[^"]+",deno="2\.[^"]+".*\} 1$/m);
      assertMatch(text, /^# TYPE vswitch_port_rx_packets_total counter$/m);

      // promtool reads the exposition from stdin.
      const check = new Deno.Command("promtool", {
        args: ["check", "metrics"],
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const w = check.stdin.getWriter();
      await w.write(new TextEncoder().encode(text));
      await w.close();
      const res = await check.output();
      const msg = new TextDecoder().decode(res.stdout) + new TextDecoder().decode(res.stderr);
      assertEquals(res.code, 0, `promtool check metrics:\n${msg}`);
      assertEquals(msg.trim(), "", `promtool has no complaints:\n${msg}`);

      // A real scraper.
      const web = `127.0.0.1:${freePort()}`;
      await Deno.writeTextFile(
        `${dir}/prometheus.yml`,
        `global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: vswitch\n    static_configs:\n      - targets: ["127.0.0.1:${mport}"]\n`,
      );
      prom = new Deno.Command("prometheus", {
        args: [
          `--config.file=${dir}/prometheus.yml`,
          `--storage.tsdb.path=${dir}/data`,
          `--web.listen-address=${web}`,
        ],
        stdout: "null",
        stderr: "null",
      }).spawn();
      const q = 'vswitch_port_rx_packets_total{port="a",type="vhost"}';
      let before: number | undefined;
      for (let i = 0; i < 300 && before === undefined; i++) {
        await sleep(100);
        before = await query(web, q);
      }
      assertEquals(before, 10, "prometheus scraped the counter");
      for (let i = 0; i < 25; i++) a.send(ethFrame(B, A, 100));
      await b.receiveAtLeast(25);
      let after = before;
      for (let i = 0; i < 100 && after === before; i++) {
        await sleep(100);
        after = (await query(web, q)) ?? before;
      }
      assertEquals(after, 35, "the counter moved by the 25 frames sent");
      assertEquals(await query(web, "vswitch_build_info"), 1);
      assert(sw.alive);
    } finally {
      if (prom) {
        prom.kill("SIGTERM");
        await prom.status;
      }
      a.close();
      b.close();
    }
    await Deno.remove(dir, { recursive: true });
  },
});
