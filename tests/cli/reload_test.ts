/**
 * `vswitch reload` and SIGHUP against a switch started with --config,
 * with TypeScript guests on the ports that stay: added, removed and
 * changed ports are reconciled, unchanged ports are not touched (their
 * guests forward through the reload), and an invalid file is refused
 * whole with the running state unchanged.
 */
import { assert, assertEquals, assertMatch } from "@std/assert";
import { SwitchProcess } from "../helpers/switch_process.ts";
import { vswitch, vswitchOk } from "../helpers/vswitch_cli.ts";
import { ethFrame, VirtioNetDriver } from "../helpers/frontend.ts";

const A = "02:00:00:00:00:0a";
const D = "02:00:00:00:00:0d";
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function config(dir: string, ports: [string, string][]): string {
  return `control = "${dir}/control.sock"\n[fdb]\naging = 120\n` +
    ports.map(([n, extra]) =>
      `[[port]]\nname = "${n}"\ntype = "vhost-server"\npath = "${dir}/${n}.sock"\n${extra}\n`
    ).join("");
}

function names(json: string): string[] {
  return JSON.parse(json).map((p: { name: string }) => p.name).sort();
}

Deno.test({
  name: "reload: added, removed, changed ports reconciled; unchanged guests keep forwarding",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "vswitch-reload-" });
    const file = `${dir}/vswitch.toml`;
    const ctl = `${dir}/control.sock`;
    await Deno.writeTextFile(file, config(dir, [["a", ""], ["b", ""], ["d", ""]]));
    await using sw = await SwitchProcess.cli(["--config", file]);
    const a = await VirtioNetDriver.start(`${dir}/a.sock`);
    const d = await VirtioNetDriver.start(`${dir}/d.sock`);
    a.fillRx(128);
    d.fillRx(128);
    let stop = false;
    let sending: Promise<void> | undefined;
    try {
      assertEquals(names(await vswitchOk("ports", "--json", "--control", ctl)), ["a", "b", "d"]);
      // A socket file's inode and mtime: tmpfs may hand a new file the old inode, never the old mtime.
      const inode = (n: string) => {
        const st = Deno.lstatSync(`${dir}/${n}.sock`);
        return `${st.ino}@${st.mtime?.getTime()}`;
      };
      const before = { a: inode("a"), b: inode("b") };
      // Traffic a → d runs through the whole reload.
      let sent = 0;
      let got = 0;
      const fromA = (f: Uint8Array) => f[6] === 2 && f[11] === 0x0a;
      sending = (async () => {
        while (!stop) {
          a.tx.takeUsed(); // TX buffers back
          a.send(ethFrame(D, A, 100));
          sent++;
          got += d.receive().filter(fromA).length; // RX buffers reposted
          await sleep(2);
        }
      })();
      d.send(ethFrame(A, D, 60)); // d's MAC is learned

      await Deno.writeTextFile(
        file,
        config(dir, [["a", ""], ["b", 'offloads = "none"'], ["c", ""], ["d", ""]]),
      );
      const r = JSON.parse(await vswitchOk("reload", "--json", "--control", ctl));
      assertEquals(r.added, ["c"]);
      assertEquals(r.changed, ["b"]);
      assertEquals(r.removed, []);
      assertEquals(r.unchanged, ["a", "d"]);
      assertEquals(inode("a"), before.a, "unchanged port a kept its socket");
      assert(inode("b") !== before.b, "changed port b was re-created");
      const ports = JSON.parse(await vswitchOk("ports", "--json", "--control", ctl));
      const byName = Object.fromEntries(ports.map((p: { name: string }) => [p.name, p]));
      assertEquals(byName.b.offloads, []);
      assertEquals(byName.a.connections, 1, "a's guest was never disconnected");
      assertEquals(byName.a.state, "connected");

      // An invalid file: refused whole, one line, nothing changes.
      await Deno.writeTextFile(
        file,
        "bogus = 1\n" + config(dir, [["a", ""], ["zz", 'offloads = ["warp"]']]),
      );
      const bad = await vswitch("reload", "--control", ctl);
      assertEquals(bad.code, 2);
      assertEquals(bad.stderr.trim().split("\n").length, 1, bad.stderr);
      assertMatch(
        bad.stderr,
        /Cannot load config .*unknown key "bogus".*Unknown offload "warp".*nothing was changed/,
      );
      assertEquals(names(await vswitchOk("ports", "--json", "--control", ctl)), [
        "a",
        "b",
        "c",
        "d",
      ]);

      // SIGHUP: c and b removed.
      await Deno.writeTextFile(file, config(dir, [["a", ""], ["d", ""]]));
      const from = sw.logs.length;
      sw.child.kill("SIGHUP");
      await sw.waitLog(
        /SIGHUP reload: added -, removed c,b|SIGHUP reload: added -, removed b,c/,
        from,
      );
      assertEquals(names(await vswitchOk("ports", "--json", "--control", ctl)), ["a", "d"]);
      assertEquals(inode("a"), before.a);

      while (sent < 100) await sleep(10); // a count, not a duration
      stop = true;
      await sending;
      await sleep(200);
      got += d.receive().filter(fromA).length;
      const lost = sent - got;
      assertEquals(lost, 0, `a → d lost ${lost} of ${sent} frames across three reloads`);
      assert(sw.alive);
    } finally {
      stop = true; // the sender touches the guests' memory: stop it before unmapping
      await sending;
      a.close();
      d.close();
    }
    await Deno.remove(dir, { recursive: true });
  },
});
