/**
 * CHECKLIST item 33 in the dataplane: an exception while serving one port
 * (here a ring that throws, standing in for a bug) stops only that port,
 * is reported once with the port's name, and the others keep forwarding —
 * whether the fault is on the port's ingress or on delivery to it.
 */
import { assert, assertEquals, assertMatch } from "@std/assert";
import { ForwardRig } from "../../bench/harness.ts";
import { DpPort, PortKind } from "../../src/switch/engine.ts";
import type { SplitRing } from "../../src/virtio/split_ring.ts";
import { C, COUNTERS_PER_PORT } from "../../src/switch/counters.ts";

/** A ring whose every use throws, as a bug in ring code would. */
const throwingRing = new Proxy({}, {
  get(_t, prop) {
    if (prop === "pendingUsed") return 0;
    return () => {
      throw new TypeError(`ring bug in ${String(prop)}`);
    };
  },
}) as unknown as SplitRing;

function rigWithFaultyPort(where: "tx" | "rx") {
  const reports: string[] = [];
  const rig = new ForwardRig(64, (p, why) => reports.push(`${p.name}: ${why}`));
  const faulty = new DpPort(2, PortKind.VHOST, "faulty", 9018);
  rig.engine.add(faulty);
  faulty.vq![where] = throwingRing;
  return { rig, faulty, reports };
}

Deno.test("an exception on one port's ingress stops only that port", () => {
  const { rig, faulty, reports } = rigWithFaultyPort("tx");
  try {
    for (let i = 0; i < 100; i++) rig.step();
    assert(faulty.broken);
    assertEquals(reports.length, 1, "reported once");
    assertMatch(reports[0], /^faulty: exception: TypeError: ring bug in available/);
    assertEquals(rig.counters[2 * COUNTERS_PER_PORT + C.queueBroken], 1);
    const before = rig.delivered;
    for (let i = 0; i < 100; i++) rig.step();
    assert(rig.delivered - before >= 100 * 32, "a → b kept forwarding at full bursts");
  } finally {
    rig.close();
  }
});

Deno.test("an exception while delivering to one port stops that port, not the sender", () => {
  const { rig, faulty, reports } = rigWithFaultyPort("rx");
  try {
    rig.engine.fdb.removePort(1); // b unknown: every frame floods to b and faulty
    for (let i = 0; i < 100; i++) rig.step();
    assert(faulty.broken, "the destination that threw is stopped");
    assertEquals(reports.length, 1);
    assertMatch(reports[0], /^faulty: exception: TypeError: ring bug/);
    assert(!rig.engine.byId[0]!.broken && !rig.engine.byId[1]!.broken, "a and b untouched");
    assert(rig.delivered >= 99 * 32, `b got every flooded frame (${rig.delivered})`);
  } finally {
    rig.close();
  }
});
