/**
 * Backpressure instead of loss (engine.ts HOLD_MS / LOSSY_MS): a unicast
 * frame for a guest with no RX buffer is held back — its sender's TX chain
 * stays untaken — and goes through once buffers come; a guest that takes
 * nothing for HOLD_MS gets its frames dropped and counted, and is not waited
 * for again for LOSSY_MS, so it cannot stall its senders (CHECKLIST 26, 27).
 * Time is the engine's `now` argument, so nothing here depends on how fast
 * the machine is.
 */
import { assertEquals } from "@std/assert";
import { ForwardRig } from "../../bench/harness.ts";
import { C, COUNTERS_PER_PORT } from "../../src/switch/counters.ts";

const B = COUNTERS_PER_PORT; // port 1's counter slot

Deno.test("a frame for a guest without RX buffers waits, then goes through", () => {
  const rig = new ForwardRig(64, undefined, 0);
  try {
    rig.round(10);
    assertEquals(rig.reapTx(), 0, "A's chains are not taken while B has no buffer");
    assertEquals(rig.counters[B + C.dropNoBuffer], 0, "nothing dropped");
    rig.round(11); // still within HOLD_MS
    assertEquals(rig.reapTx(), 0);
    rig.postRx(8);
    rig.round(11.5);
    assertEquals(rig.counters[B + C.txPackets], 8, "the held frame and 7 more delivered");
    assertEquals(rig.reapTx(), 8, "exactly the delivered chains returned");
    assertEquals(rig.counters[B + C.dropNoBuffer], 0);
  } finally {
    rig.close();
  }
});

Deno.test("a guest that takes nothing for HOLD_MS loses frames, and is not waited for again", () => {
  const rig = new ForwardRig(64, undefined, 0);
  try {
    rig.round(100);
    rig.round(101);
    assertEquals(rig.reapTx(), 0, "held within HOLD_MS");
    rig.round(106); // HOLD_MS (5) passed: the burst is dropped and A's chains returned
    const taken = rig.reapTx();
    assertEquals(taken, 32, "one burst taken (BURST)");
    assertEquals(rig.counters[B + C.dropNoBuffer], 32, "and counted");
    rig.round(107); // lossy: no waiting, every frame dropped at once
    assertEquals(rig.reapTx(), 32);
    assertEquals(rig.counters[B + C.dropNoBuffer], 64);
    rig.postRx(4);
    rig.round(108); // buffers again: delivered, and the next stall may wait again after LOSSY_MS
    assertEquals(rig.counters[B + C.txPackets], 4);
  } finally {
    rig.close();
  }
});

Deno.test("a hold in mid-burst: every frame is counted once, the held one and those after it", () => {
  // The engine parses, classifies and delivers a frame at a time and stops at the one
  // it holds: that one was counted, the ones after it were not yet (complete's `seen`).
  const rig = new ForwardRig(64, undefined, 0);
  try {
    rig.postRx(4);
    rig.round(10); // 4 delivered, the 5th held
    assertEquals(rig.reapTx(), 4);
    const first = rig.counters[C.rxPackets];
    rig.round(10.5); // held again: counted no more
    assertEquals(rig.reapTx(), 0);
    assertEquals(rig.counters[C.rxPackets], first, "a held frame is not counted again");
    rig.postRx(64);
    rig.round(11);
    rig.round(11.5);
    const taken = 4 + rig.reapTx();
    assertEquals(taken, 4 + 64, "two full bursts after the buffers came");
    assertEquals(rig.counters[B + C.txPackets], taken);
    assertEquals(rig.counters[C.rxPackets], taken, "A's rx: each frame taken counted once");
    assertEquals(rig.counters[B + C.dropNoBuffer], 0);
  } finally {
    rig.close();
  }
});
