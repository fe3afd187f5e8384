import { assert, assertEquals, assertMatch } from "@std/assert";
import { chartSvg } from "../../bench/chart.ts";

Deno.test("chart: every loop case and iperf path, each system's bar, n/a where none ran", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vswitch-chart-" });
  try {
    await Deno.writeTextFile(
      `${dir}/loop-latest.json`,
      JSON.stringify({
        date: "2026-12-01T20:31:00Z",
        cases: [
          { case: "64B-2port", mpps: { vswitch: 1.89, dpdk: 5.63, "ovs-dpdk": 4.49 } },
          { case: "1500B-2port", mpps: { vswitch: 1.25, dpdk: 2.25 } },
        ],
      }),
    );
    await Deno.writeTextFile(
      `${dir}/iperf-latest.json`,
      JSON.stringify({
        date: "2026-12-01T22:10:33Z",
        rows: [
          {
            path: "guest-guest",
            title: "",
            system: "vswitch",
            forward: [1.1, 1.3],
            reverse: [1.2],
          },
          { path: "guest-guest", title: "", system: "bridge", forward: [1], reverse: [1] },
        ],
      }),
    );
    const svg = chartSvg(dir);
    assertMatch(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
    for (const label of ["64B-2port", "1500B-2port", "guest-guest", "OVS-DPDK NORMAL"]) {
      assert(svg.includes(`>${label}</text>`), `no ${label}`);
    }
    for (const v of ["1.89", "5.63", "4.49", "1.25", "2.25", "1.20", "1.00"]) {
      assert(svg.includes(`>${v}</text>`), `no bar labelled ${v}`);
    }
    // OVS at 1500 B and DPDK in the TCP panel did not run: marked, not drawn as zero.
    assertEquals(svg.match(/>n\/a<\/text>/g)?.length, 2);
    assertMatch(svg, /2026-12-01 20:31 UTC/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
