/**
 * Offloads end to end with real parts (issue 10): QEMU guests running
 * Linux's virtio_net with every offload QEMU offers (CSUM, GUEST_CSUM,
 * HOST/GUEST_TSO4/6, ECN), a guest with all of them off, and a guest
 * without MRG_RXBUF, exchanging TCP (iperf3) both ways with each other and
 * with the host stack behind the switch's TAP in a network namespace.
 *
 * What it proves:
 * - every pair moves data both ways (a segment with a wrong checksum is
 *   dropped by the receiving kernel, a frame too big for the receiver's
 *   buffers never arrives; either stalls TCP, so bytes moved is the proof
 *   that what the switch delivered was acceptable to a real stack);
 * - on the host side, tshark finds no TCP segment with a wrong checksum
 *   (segments carrying CHECKSUM_PARTIAL are told apart, tests/helpers/capture.ts
 *   says why and how);
 * - no port counted a bad descriptor, bad header or broken queue.
 *
 * Before the switch negotiates offloads, the guests simply checksum and
 * segment in software and the test passes the same way; once it does,
 * the mixed pairs exercise its software fallback, whose counters are
 * asserted when {@link ASSERT_SOFTWARE_FALLBACK} is switched on.
 *
 * The guests boot once and serve every step (about a minute in all).
 */
import { assert, assertEquals } from "@std/assert";
import { Switch } from "../../mod.ts";
import {
  guestsUnavailable,
  NO_MRG_RXBUF,
  NO_OFFLOADS,
  type QemuGuest,
} from "../../src/guest/qemu.ts";
import { guestImage, testGuest } from "../helpers/guests.ts";
import { hasCommand, requireOrSkip, uniqueSuffix } from "../helpers/env.ts";
import { NetNs } from "../helpers/netns.ts";
import { Capture, verifyChecksums } from "../helpers/capture.ts";
import { iperfFromGuest, iperfServerInGuest, pingUntilUp } from "../helpers/iperf.ts";

/**
 * Switch on once the switch counts its software fallback: the mixed steps
 * then assert that frames from offloading senders to the guest without
 * offloads were segmented and checksummed by the switch. The counters are
 * read by name, summed over all ports (see {@link FALLBACK_COUNTERS}).
 */
const ASSERT_SOFTWARE_FALLBACK = true;

/** Names of the fallback counters in `PortStats.counters` (adjust to the final names). */
const FALLBACK_COUNTERS = { segmented: "swSegmented", checksummed: "swChecksummed" };

const SECONDS = 2;
const HOST_IP = "10.0.0.254";
const opts = { sanitizeOps: false, sanitizeResources: false };

/** Sum of the counter `name` over all ports, or undefined if no port has it. */
function counterSum(sw: Switch, name: string): number | undefined {
  let sum: number | undefined;
  for (const p of sw.stats()) {
    const v = (p.counters as Record<string, number>)[name];
    if (typeof v === "number") sum = (sum ?? 0) + v;
  }
  return sum;
}

/** Every counter of every port that is not zero, for the log. */
function nonZero(sw: Switch): string {
  return sw.stats().map((p) =>
    `${p.name}: ${
      Object.entries(p.counters).filter(([, v]) => v !== 0).map(([k, v]) => `${k}=${v}`).join(" ")
    }`
  ).join("\n");
}

/** Runs iperf3 from `client` to `server` both ways; asserts bytes moved; returns them. */
async function bothWays(client: QemuGuest, server: string, label: string): Promise<number[]> {
  const moved: number[] = [];
  for (const reverse of [false, true]) {
    const r = await iperfFromGuest(client, { server, seconds: SECONDS, reverse });
    const what = reverse ? `${label}, reverse (-R)` : label;
    assert(r.bytes > 0, `${what}: no bytes moved:\n${r.output}`);
    console.log(`  ${what}: ${(r.bytes / 2 ** 20).toFixed(1)} MiB`);
    moved.push(r.bytes);
  }
  return moved;
}

Deno.test({
  name: "offloads: TSO guests, a guest without offloads, one without MRG_RXBUF, and the host",
  ...opts,
  async fn(t) {
    if (!requireOrSkip("offload end-to-end test", guestsUnavailable())) return;
    if (!requireOrSkip("offload end-to-end test", hasCommand("tshark") ? undefined : "no tshark")) {
      return;
    }
    const img = await guestImage();
    const id = uniqueSuffix();
    const dir = await Deno.makeTempDir({ prefix: "vswitch-offload-" });
    await using sw = await Switch.create();
    for (const n of [1, 2, 3, 4]) await sw.addVhostServer(`vm${n}`, `${dir}/vm${n}.sock`);
    const tap = `vso${id}`.slice(0, 15);
    await sw.addTap("host", tap);
    await using ns = await NetNs.create(`vsoff${id}`);
    await ns.adopt(tap, `${HOST_IP}/24`);
    ns.spawn("iperf3", "-s");

    await using tso1 = testGuest("vm1", dir, 1, img);
    await using tso2 = testGuest("vm2", dir, 2, img);
    await using plain = testGuest("vm3", dir, 3, img, { deviceProps: NO_OFFLOADS });
    await using bigRx = testGuest("vm4", dir, 4, img, { deviceProps: NO_MRG_RXBUF });
    const guests = [tso1, tso2, plain, bigRx];
    await Promise.all(guests.map((g) => g.boot()));
    await Promise.all([iperfServerInGuest(tso1), iperfServerInGuest(tso2)]);

    /** Runs both directions to the host with a capture on the host side; checks checksums. */
    const withHost = async (g: QemuGuest) => {
      const file = `${dir}/${g.options.name}-host.pcap`;
      const cap = await Capture.start(ns, tap, file);
      try {
        await bothWays(g, HOST_IP, `${g.options.name} -> host`);
      } finally {
        await cap.stop();
      }
      const v = await verifyChecksums(file);
      console.log(
        `  host-side capture: ${v.segments} TCP segments, ${v.good} verified, ${v.partial} ` +
          `CHECKSUM_PARTIAL, ${v.large} larger than 1514 B, ${v.bad.length} bad`,
      );
      assert(v.segments > 100, `the capture on ${tap} saw TCP: ${v.segments} segments`);
      assertEquals(v.bad, [], `bad checksums on the host side (${file})`);
      await Deno.remove(file);
    };

    /** Fallback counters before and after `fn`, when asserted. */
    const fallback = async (label: string, fn: () => Promise<void>) => {
      const names = Object.values(FALLBACK_COUNTERS);
      const before = names.map((n) => counterSum(sw, n) ?? 0);
      await fn();
      const after = names.map((n) => counterSum(sw, n));
      console.log(`  ${label}: ${names.map((n, i) => `${n} +${(after[i] ?? 0) - before[i]}`)}`);
      if (!ASSERT_SOFTWARE_FALLBACK) return;
      for (const [i, n] of names.entries()) {
        const have = Object.keys(sw.stats()[0].counters).join(", ");
        assert(after[i] !== undefined, `no counter ${n} in the port stats (have: ${have})`);
        assert(after[i]! > before[i], `${label}: the switch's ${n} did not grow`);
      }
    };

    await t.step("every guest reaches the host and the TSO guests", async () => {
      for (const g of guests) {
        await pingUntilUp(g, HOST_IP);
        if (g !== tso1) await pingUntilUp(g, "10.0.0.1");
      }
      await pingUntilUp(tso1, "10.0.0.2");
    });

    await t.step("TSO guest <-> TSO guest, both ways", async () => {
      await bothWays(tso1, "10.0.0.2", "vm1 -> vm2");
    });

    await t.step("TSO guest <-> host, both ways; no bad checksum on the host side", async () => {
      await withHost(tso1);
    });

    await t.step("guest without offloads <-> TSO guest and <-> host", async () => {
      await fallback(
        "vm3 (no offloads) <-> vm1 (TSO)",
        () => bothWays(plain, "10.0.0.1", "vm3 -> vm1").then(() => {}),
      );
      await fallback("vm3 (no offloads) <-> host", () => withHost(plain));
    });

    await t.step("guest without MRG_RXBUF <-> TSO guest and <-> host", async () => {
      await bothWays(bigRx, "10.0.0.1", "vm4 -> vm1");
      await withHost(bigRx);
    });

    await t.step("no port counted a bad descriptor, bad header or broken queue", () => {
      console.log(nonZero(sw));
      for (const p of sw.stats()) {
        const c = p.counters;
        assertEquals(
          [c.dropBadDescriptor, c.dropBadHeader, c.dropRunt, c.queueBroken],
          [0, 0, 0, 0],
          `${p.name}: ${JSON.stringify(c)}`,
        );
        assert(c.rxPackets > 0 && c.txPackets > 0, `${p.name} forwarded both ways`);
      }
    });

    for (const g of guests) await g.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  },
});
