/**
 * DPDK interop: testpmd's virtio-user driver (a production virtio
 * implementation) through the switch, and a malformed message on a third
 * port that must not disturb that traffic.
 */
import { assert, assertEquals } from "@std/assert";
import { Switch } from "../../mod.ts";
import { connectUnix, MessageIo } from "../../ffi/socket.ts";
import { closeFd } from "../../ffi/io.ts";
import { ftruncate, memfdCreate } from "../../ffi/memory.ts";
import { requireOrSkip, uniqueSuffix } from "../helpers/env.ts";
import { Testpmd, testpmdUnavailable } from "../helpers/dpdk.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Polls `done` until it holds; throws after `ms`. The bound is on how long
 * to wait for something that must happen, not on how fast the machine is.
 */
async function waitUntil(what: string, done: () => Promise<boolean> | boolean, ms = 60_000) {
  const deadline = Date.now() + ms;
  while (!(await done())) {
    if (Date.now() > deadline) throw new Error(`Timed out after ${ms} ms waiting for ${what}`);
    await sleep(200);
  }
}

async function waitConnected(sw: Switch, names: string[]): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (names.every((n) => sw.port(n)?.connected)) break;
    await sleep(100);
  }
  await sleep(1000); // queues start after SET_VRING_ENABLE
}

Deno.test({
  name: "testpmd virtio-user loop through the switch: both ports forward, counters agree",
  ...opts,
  async fn() {
    if (!requireOrSkip("DPDK interop test", testpmdUnavailable())) return;
    const dir = await Deno.makeTempDir({ prefix: "vswitch-dpdk-" });
    await using sw = await Switch.create();
    await sw.addVhostServer("a", `${dir}/a.sock`);
    await sw.addVhostServer("b", `${dir}/b.sock`);
    await using gen = Testpmd.generator(`vsgen${uniqueSuffix()}`, `${dir}/a.sock`, `${dir}/b.sock`);
    await gen.ready();
    await waitConnected(sw, ["a", "b"]);
    await gen.command("start tx_first 8");
    // A count, not a rate: however slow the machine, 10,000 frames each way must arrive.
    await waitUntil("10,000 frames on each testpmd port", async () => {
      const p = await gen.portStats();
      return p[0].rxPackets > 10_000 && p[1].rxPackets > 10_000;
    });
    await gen.command("stop");
    // The switch drains what testpmd had queued when it stopped (waited for, not timed).
    const counters = () => Object.fromEntries(sw.stats().map((s) => [s.name, s.counters]));
    let pmd = await gen.portStats();
    await waitUntil("the switch to take every frame testpmd sent", async () => {
      pmd = await gen.portStats();
      const o = counters();
      return o.a.rxPackets === pmd[0].txPackets && o.b.rxPackets === pmd[1].txPackets;
    }, 30_000).catch(() => {}); // the assertions below say what differs
    const ours = counters();
    console.log(
      `testpmd port0 tx ${pmd[0].txPackets} rx ${pmd[0].rxPackets}; port1 tx ${
        pmd[1].txPackets
      } rx ${
        pmd[1].rxPackets
      }; switch a rx ${ours.a.rxPackets} tx ${ours.a.txPackets}, b rx ${ours.b.rxPackets} tx ${ours.b.txPackets}`,
    );
    assert(pmd[0].rxPackets > 10_000 && pmd[1].rxPackets > 10_000, "frames arrived on both ports");
    // testpmd's memory is hugetlbfs, which mremap cannot duplicate: where the ranges do not
    // fit one window, pair windows map the regions' files again, and every copy has one.
    const w = sw.copyWindow;
    console.log(`copy windows: ${JSON.stringify(w)}`);
    assertEquals(w.reason, "", JSON.stringify(w));
    if (w.mode === "chunked" || w.mode === "packed") assert(w.fromFile > 0, JSON.stringify(w));
    else assertEquals(w.mode, "single", JSON.stringify(w));
    // What testpmd sent on a port, the switch received from it (nothing stays in the TX ring).
    assertEquals(ours.a.rxPackets, pmd[0].txPackets);
    assertEquals(ours.b.rxPackets, pmd[1].txPackets);
    // What the switch sent to a port, testpmd received, except frames it had not read yet
    // when it stopped polling: at most one RX ring (256).
    for (
      const [mine, theirs] of [[ours.a.txPackets, pmd[0].rxPackets], [
        ours.b.txPackets,
        pmd[1].rxPackets,
      ]]
    ) {
      assert(mine >= theirs && mine - theirs <= 256, `in flight: ${mine} - ${theirs}`);
    }
    // Every frame from a went to b or was counted as dropped there.
    assertEquals(ours.a.rxPackets, ours.b.txPackets + ours.b.dropNoBuffer);
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test({
  name: "a malformed SET_MEM_TABLE closes only its own connection; the loop keeps flowing",
  ...opts,
  async fn() {
    if (!requireOrSkip("bad-input interop test", testpmdUnavailable())) return;
    const dir = await Deno.makeTempDir({ prefix: "vswitch-bad-" });
    await using sw = await Switch.create();
    await sw.addVhostServer("a", `${dir}/a.sock`);
    await sw.addVhostServer("b", `${dir}/b.sock`);
    await sw.addVhostServer("bad", `${dir}/bad.sock`);
    await using gen = Testpmd.generator(`vsgen${uniqueSuffix()}`, `${dir}/a.sock`, `${dir}/b.sock`);
    await gen.ready();
    await waitConnected(sw, ["a", "b"]);
    await gen.command("start tx_first 8");
    await sleep(1000);

    // SET_MEM_TABLE claiming 2 regions with the payload of 1, and one memfd attached.
    // Non-blocking: the switch's control plane runs on this same thread.
    const fd = connectUnix(`${dir}/bad.sock`);
    const memfd = memfdCreate("bad-guest");
    ftruncate(memfd, 1 << 20);
    const msg = new Uint8Array(12 + 8 + 32);
    const v = new DataView(msg.buffer);
    v.setUint32(0, 5, true); // SET_MEM_TABLE
    v.setUint32(4, 1, true); // version 1
    v.setUint32(8, 8 + 32, true);
    v.setUint32(12, 2, true); // nregions = 2, but one region follows
    v.setBigUint64(20 + 8, 1n << 20n, true);
    const before = sw.stats().find((s) => s.name === "a")!.counters.rxPackets;
    const io = new MessageIo(1);
    io.send(fd, msg, msg.length, [memfd]);
    closeFd(memfd);
    let got = io.recv(fd, new Uint8Array(64));
    for (let i = 0; i < 200 && got === null; i++) { // up to 20 s
      await sleep(100);
      got = io.recv(fd, new Uint8Array(64));
    }
    assertEquals(got?.bytes, 0, "the switch closed the bad connection");
    closeFd(fd);
    assertEquals(sw.port("bad")!.connected, false);

    // The loop keeps flowing: 10,000 more frames (a count; the wait bound is not a rate).
    const rxA = () => sw.stats().find((s) => s.name === "a")!.counters.rxPackets;
    await waitUntil("10,000 more frames from a", () => rxA() - before > 10_000);
    const stats = await gen.portStats();
    assert(sw.port("a")!.connected && sw.port("b")!.connected);
    assert(stats[0].rxPackets > 0);
    await gen.command("stop");
    await Deno.remove(dir, { recursive: true });
  },
});
