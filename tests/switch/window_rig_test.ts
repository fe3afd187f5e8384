/**
 * The engine's frames sit on copy windows with four 4 GiB guests (QEMU's
 * layout, buffers above 4 GiB guest-physical): every list the pipeline
 * fills (TX chains walked from a guest ring, RX chains it delivers into)
 * names its range, so copies take pair windows, not the word loop (which
 * would be correct and allocation-free too, so only this sees it).
 */
import { assert, assertEquals } from "@std/assert";
import { ForwardRig } from "../../bench/harness.ts";
import { bufferOffset } from "../../bench/rig_args.ts";
import { windowInfo } from "../../src/virtio/address_window.ts";
import { segmentChunk } from "../../src/virtio/chain.ts";

Deno.test("4 × 4 GiB guests: walked and delivered chains are on pair windows", () => {
  for (const frameLen of [64, 1500]) {
    const memSize = 4 * 2 ** 30;
    const rig = new ForwardRig({
      frameLen,
      guests: 4,
      memSize,
      bufAt: bufferOffset("top", memSize),
    });
    try {
      assertEquals(windowInfo().mode, "chunked");
      assert(windowInfo().pairs > 0);
      for (let i = 0; i < 4; i++) rig.step();
      assert(rig.delivered >= 64, `frames delivered: ${rig.delivered}`);
      for (const g of [0, 2]) {
        const tx = rig.engine.byId[g]!.driver!.burst[0].segs;
        assert(segmentChunk(tx, 0).chunk >= 0, `g${g}'s TX chain on a window (${frameLen} B)`);
        const rx = rig.engine.byId[g + 1]!.vq!.dst;
        assert(segmentChunk(rx, 0).chunk >= 0, `g${g + 1}'s RX chain on a window (${frameLen} B)`);
      }
    } finally {
      rig.close();
    }
  }
});
