/**
 * Operating the switch while real QEMU guests run, through the `vswitch`
 * CLI (the compiled binary if `deno task compile` made one, else the
 * script): a port added while two guests ping takes a third guest that
 * pings both; removing it releases that guest's fds and mappings in the
 * switch's /proc; a reload that changes one port leaves the other guests'
 * pings unbroken. The guests boot once and serve every step.
 */
import { assert, assertEquals, assertMatch } from "@std/assert";
import { guestsUnavailable } from "../../src/guest/qemu.ts";
import { guestImage, testGuest } from "../helpers/guests.ts";
import { requireOrSkip } from "../helpers/env.ts";
import { SwitchProcess } from "../helpers/switch_process.ts";
import { vswitchCommand, vswitchOk } from "../helpers/vswitch_cli.ts";
import { tsharkFields } from "../helpers/capture.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

/** The inode of a QEMU process's guest RAM (its largest memfd). */
function guestRamInode(pid: number): number {
  let best = { ino: 0, size: -1 };
  for (const e of Deno.readDirSync(`/proc/${pid}/fd`)) {
    try {
      const link = Deno.readLinkSync(`/proc/${pid}/fd/${e.name}`);
      if (!link.startsWith("/memfd:")) continue;
      const st = Deno.statSync(`/proc/${pid}/fd/${e.name}`);
      if (st.size > best.size) best = { ino: st.ino!, size: st.size };
    } catch { /* closed meanwhile */ }
  }
  if (best.size < 0) throw new Error(`QEMU ${pid} has no memfd`);
  return best.ino;
}

/** fds of process `pid` that refer to inode `ino`. */
function fdsOf(pid: number, ino: number): number {
  let n = 0;
  for (const e of Deno.readDirSync(`/proc/${pid}/fd`)) {
    try {
      if (Deno.statSync(`/proc/${pid}/fd/${e.name}`).ino === ino) n++;
    } catch { /* closed meanwhile */ }
  }
  return n;
}

function received(out: string): [number, number] {
  const m = out.match(/(\d+) packets transmitted, (\d+) (?:packets )?received/);
  if (!m) throw new Error(`No ping summary in:\n${out}`);
  return [Number(m[1]), Number(m[2])];
}

/** Starts `vswitch capture ARGS` and resolves once the switch reports it running. */
async function startCapture(ctl: string, port: string, file: string, extra: string[]) {
  const [cmd, ...pre] = vswitchCommand();
  const child = new Deno.Command(cmd, {
    args: [...pre, "capture", port, file, ...extra, "--control", ctl],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const client = Deno.createHttpClient({ proxy: { transport: "unix", path: ctl } });
  try {
    for (let i = 0; i < 100; i++) {
      const r = await fetch(`http://x/v1/ports/${port}/capture`, { client });
      const s = await r.json();
      if (r.ok && s.state === "running" && s.file === file) break;
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    client.close();
  }
  return child;
}

function config(dir: string, spareOffloads: string): string {
  const port = (n: string, extra = "") =>
    `[[port]]\nname = "${n}"\ntype = "vhost-server"\npath = "${dir}/${n}.sock"\n${extra}\n`;
  return port("vm1") + port("vm2") + port("spare", `offloads = "${spareOffloads}"`);
}

Deno.test({
  name: "operate: add a port under two pinging guests, a third boots on it; remove it; reload",
  ...opts,
  async fn() {
    if (!requireOrSkip("QEMU operate test", guestsUnavailable())) return;
    const img = await guestImage();
    const dir = await Deno.makeTempDir({ prefix: "vswitch-op-" });
    const ctl = `${dir}/control.sock`;
    const file = `${dir}/vswitch.toml`;
    await Deno.writeTextFile(file, config(dir, "all"));
    await using sw = await SwitchProcess.cli(["--config", file, "--control", ctl]);
    await using g1 = testGuest("vm1", dir, 1, img);
    await using g2 = testGuest("vm2", dir, 2, img);
    await Promise.all([g1.boot(), g2.boot()]);
    assertEquals((await g1.run("ping -c 2 -W 3 10.0.0.2")).code, 0, "vm1 -> vm2 before");

    // 0. Captures, read back with tshark: ICMP on vm1 with its direction, then an iperf3 run on vm2.
    const pings = `${dir}/vm1.pcapng`;
    const cap1 = await startCapture(ctl, "vm1", pings, ["--seconds", "4"]);
    assertEquals((await g1.run("ping -c 3 -i 0.3 10.0.0.2")).code, 0);
    const done1 = await cap1.output();
    assertEquals(done1.code, 0, new TextDecoder().decode(done1.stderr));
    assertMatch(
      new TextDecoder().decode(done1.stdout),
      /\d+ frames captured to .*vm1\.pcapng, 0 dropped/,
    );
    const icmp = await tsharkFields(pings, [
      "frame.packet_flags_direction",
      "icmp.type",
      "ip.src",
      "frame.comment",
    ], { filter: "icmp" });
    const requests = icmp.filter((r) => r[1] === "8");
    const replies = icmp.filter((r) => r[1] === "0");
    assertEquals(requests.length, 3, `echo requests in ${JSON.stringify(icmp)}`);
    assertEquals(replies.length, 3, `echo replies in ${JSON.stringify(icmp)}`);
    for (const r of requests) {
      assertEquals([Number(r[0]), r[2]], [1, "10.0.0.1"], "requests: inbound from vm1");
    }
    for (const r of replies) {
      assertEquals([Number(r[0]), r[2]], [2, "10.0.0.2"], "replies: outbound to vm1");
    }
    for (const r of icmp) {
      assertMatch(r[3], /^virtio-net flags=0x[0-9a-f]{2} gso_type=\w+ gso_size=\d+/);
    }

    assertEquals((await g2.run("iperf3 -s -D")).code, 0);
    await new Promise((r) => setTimeout(r, 500));
    const bulk = `${dir}/vm2.pcapng`;
    const cap2 = await startCapture(ctl, "vm2", bulk, ["--count", "400"]);
    const perf = await g1.run("iperf3 -c 10.0.0.2 -t 2 -f m", 60_000);
    assertEquals(perf.code, 0, `iperf3:\n${perf.output}`);
    const done2 = await cap2.output();
    assertMatch(new TextDecoder().decode(done2.stdout), /400 frames captured/);
    const tcp = await tsharkFields(bulk, [
      "frame.packet_flags_direction",
      "tcp.dstport",
      "frame.len",
      "frame.comment",
    ], { filter: "tcp.port == 5201" });
    assert(tcp.length >= 100, `iperf3 segments captured: ${tcp.length}`);
    for (const r of tcp) {
      assertEquals(
        Number(r[0]),
        r[1] === "5201" ? 2 : 1,
        `to the server: outbound to vm2; from it: inbound (${r})`,
      );
    }
    const big = tcp.filter((r) => Number(r[2]) > 1514);
    console.log(
      `iperf3 capture on vm2: ${tcp.length} TCP frames, ${big.length} larger than 1514 B (GSO), e.g. ${
        big[0]?.[3] ?? tcp[0][3]
      }`,
    );

    // 1. While vm1 pings vm2, add vm3 and boot a third guest on it.
    const pinging = g1.run("ping -c 60 -i 0.25 10.0.0.2", 90_000);
    assertMatch(
      await vswitchOk("port", "add", "vhost", "vm3", `${dir}/vm3.sock`, "--control", ctl),
      /Added port vm3/,
    );
    const g3 = testGuest("vm3", dir, 3, img);
    try {
      await g3.boot();
      const p31 = await g3.run("ping -c 3 -W 3 10.0.0.1");
      assertEquals(p31.code, 0, `vm3 -> vm1:\n${p31.output}`);
      const p32 = await g3.run("ping -c 3 -W 3 10.0.0.2");
      assertEquals(p32.code, 0, `vm3 -> vm2:\n${p32.output}`);
      const ports = JSON.parse(await vswitchOk("ports", "--json", "--control", ctl));
      const vm3 = ports.find((p: { name: string }) => p.name === "vm3");
      assertEquals(vm3.state, "connected");
      assert(vm3.counters.rxPackets >= 6, `vm3 counters: ${JSON.stringify(vm3.counters)}`);

      // 2. Removing vm3 releases its guest's memory and fds in the switch process.
      const ino = guestRamInode(g3.pid);
      assert(sw.mapsOf(ino).length > 0, "the switch maps vm3's RAM while the port exists");
      assert(fdsOf(sw.pid, ino) >= 1, "the switch holds an fd of vm3's RAM while the port exists");
      await vswitchOk("port", "del", "vm3", "--control", ctl);
      assertEquals(sw.mapsOf(ino), [], "vm3's RAM is unmapped after port del");
      assertEquals(fdsOf(sw.pid, ino), 0, "no fd of the switch refers to vm3's RAM");
      let socketGone = false;
      try {
        Deno.lstatSync(`${dir}/vm3.sock`);
      } catch {
        socketGone = true;
      }
      assert(socketGone, "vm3's socket file is gone");
    } finally {
      await g3.stop();
    }
    const [sent, got] = received((await pinging).output);
    assertEquals(got, sent, `vm1 -> vm2 lost pings while vm3 came and went (${got}/${sent})`);

    // 3. A reload that changes one port: vm1 <-> vm2 pings go on unbroken.
    const during = g1.run("ping -c 24 -i 0.25 10.0.0.2", 60_000);
    await new Promise((r) => setTimeout(r, 1000));
    await Deno.writeTextFile(file, config(dir, "none"));
    const r = JSON.parse(await vswitchOk("reload", "--json", "--control", ctl));
    assertEquals(r.changed, ["spare"]);
    assertEquals(r.unchanged, ["vm1", "vm2"]);
    const [s2, g2got] = received((await during).output);
    assertEquals(g2got, s2, `vm1 -> vm2 pings across the reload (${g2got}/${s2})`);
    const after = JSON.parse(await vswitchOk("ports", "--json", "--control", ctl));
    for (const p of after.filter((p: { name: string }) => p.name !== "spare")) {
      assertEquals(p.connections, 1, `${p.name} kept its one connection`);
    }
    assert(sw.alive);
    await Deno.remove(dir, { recursive: true });
  },
});
