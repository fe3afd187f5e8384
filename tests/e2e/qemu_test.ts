/**
 * Real guests: QEMU (TCG) running Linux's own virtio_net driver, attached
 * to the switch over vhost-user, and the host side through a TAP moved
 * into a network namespace the test owns.
 */
import { assert, assertEquals, assertMatch } from "@std/assert";
import { Switch } from "../../mod.ts";
import { guestsUnavailable } from "../../src/guest/qemu.ts";
import { guestImage as image, testGuest as guest } from "../helpers/guests.ts";
import { requireOrSkip, sh, uniqueSuffix } from "../helpers/env.ts";
import { NetNs } from "../helpers/netns.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

/** The switch's TAP, moved into a fresh namespace and addressed there. */
function tapName(id: string): string {
  return `vst${id}`.slice(0, 15);
}

async function hostSide(sw: Switch, id: string, ip: string): Promise<NetNs> {
  const ifname = tapName(id);
  await sw.addTap("host", ifname);
  const ns = await NetNs.create(`vsns${id}`);
  await sh("ip", "link", "set", ifname, "netns", ns.name);
  await ns.exec("ip", "addr", "add", ip, "dev", ifname);
  await ns.exec("ip", "link", "set", ifname, "up");
  return ns;
}

Deno.test({
  name: "two QEMU guests and the host: pings both ways, iperf3, FDB",
  ...opts,
  async fn() {
    if (!requireOrSkip("QEMU end-to-end test", guestsUnavailable())) return;
    const img = await image();
    const id = uniqueSuffix();
    const dir = await Deno.makeTempDir({ prefix: "vswitch-e2e-" });
    await using sw = await Switch.create();
    await sw.addVhostServer("vm1", `${dir}/vm1.sock`);
    await sw.addVhostServer("vm2", `${dir}/vm2.sock`);
    await using ns = await hostSide(sw, id, "10.0.0.254/24");
    await using g1 = guest("vm1", dir, 1, img);
    await using g2 = guest("vm2", dir, 2, img);
    await Promise.all([g1.boot(), g2.boot()]);

    const p12 = await g1.run("ping -c 3 -W 3 10.0.0.2");
    assertEquals(p12.code, 0, `guest1 -> guest2 ping:\n${p12.output}`);
    assertMatch(p12.output, /3 packets received/);
    const p1h = await g1.run("ping -c 3 -W 3 10.0.0.254");
    assertEquals(p1h.code, 0, `guest1 -> host ping:\n${p1h.output}`);
    const ph2 = await ns.exec("ping", "-c", "3", "-W", "3", "10.0.0.2");
    assertMatch(ph2, /3 received/, "host -> guest2 ping");

    assertEquals((await g2.run("iperf3 -s -D")).code, 0);
    await new Promise((r) => setTimeout(r, 500));
    const perf = await g1.run("iperf3 -c 10.0.0.2 -t 3 -f m", 60_000);
    assertEquals(perf.code, 0, `iperf3:\n${perf.output}`);
    const mbits = Number(perf.output.match(/([\d.]+) Mbits\/sec\s+\d*\s*sender/)?.[1] ?? 0);
    // Data moved at all (a TCG guest's rate depends on the machine; speed is in bench/).
    assert(mbits > 0, `iperf3 guest1 -> guest2 moved data: ${mbits} Mbit/s\n${perf.output}`);
    console.log(`iperf3 guest -> guest through the switch: ${mbits} Mbit/s`);

    const fdb = await sw.fdb();
    const where = (mac: string) => fdb.find((e) => e.mac === mac)?.portName;
    assertEquals(where("52:54:00:00:00:01"), "vm1");
    assertEquals(where("52:54:00:00:00:02"), "vm2");
    const hostMac = (await ns.exec("cat", `/sys/class/net/${tapName(id)}/address`)).trim();
    assertEquals(where(hostMac), "host");
    const stats = Object.fromEntries(sw.stats().map((s) => [s.name, s.counters]));
    assert(stats.vm1.rxPackets > 0 && stats.vm2.txPackets > 0 && stats.host.rxPackets > 0);
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test({
  name: "client mode: QEMU is the server; kill and restart it; traffic resumes",
  ...opts,
  async fn() {
    if (!requireOrSkip("QEMU client-mode test", guestsUnavailable())) return;
    const img = await image();
    const id = uniqueSuffix();
    const dir = await Deno.makeTempDir({ prefix: "vswitch-e2e-" });
    await using sw = await Switch.create();
    await using ns = await hostSide(sw, id, "10.0.0.254/24");
    const sock = `${dir}/vm1.sock`;
    const first = guest("vm1", dir, 1, img, { server: true });
    // QEMU must create its socket before the switch can connect; the port retries meanwhile.
    const booting = first.boot();
    await sw.addVhostClient("vm1", sock);
    await booting;
    assertEquals((await first.run("ping -c 2 -W 3 10.0.0.254")).code, 0, "ping before the kill");

    first.kill("SIGKILL");
    await first.exited();
    await first.stop();
    const port = sw.port("vm1")!;
    // Generous waits (30 s): how long a loaded machine takes, not what is asserted.
    for (let i = 0; i < 300 && port.connected; i++) await new Promise((r) => setTimeout(r, 100));
    assertEquals(port.connected, false, "the switch noticed QEMU died");

    await Deno.remove(sock).catch(() => {});
    await using second = guest("vm1", dir, 1, img, { server: true });
    await second.boot();
    for (let i = 0; i < 300 && !port.connected; i++) await new Promise((r) => setTimeout(r, 100));
    assert(port.connected, "the switch reconnected to the new QEMU");
    const again = await second.run("ping -c 3 -W 3 10.0.0.254");
    assertEquals(again.code, 0, `ping after QEMU restart:\n${again.output}`);
    assertMatch(await ns.exec("ping", "-c", "2", "-W", "3", "10.0.0.1"), /2 received/);
    await Deno.remove(dir, { recursive: true });
  },
});
