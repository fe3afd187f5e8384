/**
 * CHECKLIST items 38–40: offloaded frames from the attacker that the
 * switch accepts must arrive in a form their receiver can trust: segments
 * that fit the receiver's MTU, whose checksums verify, whose payload is the
 * sender's, written only into the RX buffers the switch returned
 * (receivers r1 / r2 with guarded, poisoned buffers), with virtio-net and
 * L2–L4 headers rebuilt from validated values — also while the attacker
 * rewrites them (double fetch). `Stage.runCase` adds that a and b kept
 * exchanging frames, the switch stayed up and nothing leaked.
 */
import { assert, assertEquals } from "@std/assert";
import {
  checkFrame,
  DATA_VALID,
  features,
  GSO_ECN,
  GSO_TCPV4,
  GSO_TCPV6,
  GSO_UDP_L4,
  NEEDS_CSUM,
  NF,
  type Received,
  RSC_INFO,
  vnet,
} from "../helpers/offload_rx.ts";
import { type Built, type PacketSpec, randomBytes } from "../net/packets.ts";
import { type Case, hostileTest, sleep } from "./harness.ts";
import {
  attacker,
  checkSegments,
  counters,
  DROPS,
  gso,
  GUEST_ALL,
  HOST_ALL,
  pkt,
  place,
  R1,
  R2,
  reaches,
  receiver,
  refused,
  tcp4,
  word,
} from "./offload_steps.ts";

const item38: Case[] = [
  {
    item: 38,
    name: "software segmentation: MTU, checksums, payload, nothing written outside RX buffers",
    run: async (s) => {
      const g = await attacker(s, HOST_ALL);
      // r1 takes no offload and has MTU 1500; r2 takes checksum offload only (MTU 9000).
      const r1 = await receiver(s, "r1", R1, [], 1500);
      const r2 = await receiver(s, "r2", R2, [NF.GUEST_CSUM]);
      const c1 = await counters(s, "r1"), c2 = await counters(s, "r2");
      const frames: [PacketSpec, number, number][] = [
        // ECN: CWR only on the first segment, FIN and PSH only on the last.
        [{ payload: randomBytes(60000, 7), tcpFlags: 0xd9 }, GSO_TCPV4 | GSO_ECN, 1448],
        [{ ip: 6, tcpOptions: 12, payload: randomBytes(20000, 8) }, GSO_TCPV6, 1428],
        [{ l4: "udp", payload: randomBytes(14000, 9) }, GSO_UDP_L4, 1472],
        [{ ip: 6, l4: "udp", payload: randomBytes(9999, 10) }, GSO_UDP_L4, 1452],
      ];
      let segs = 0;
      for (const [spec, type, mss] of frames) {
        for (
          const [dst, rx, partial, maxFrame] of [[R1, r1, false, 1518], [
            R2,
            r2,
            true,
            9018,
          ]] as const
        ) {
          const b = pkt(spec, dst);
          g.tx.takeUsed();
          g.send(b.frame, { header: vnet(gso(b, type, mss)) });
          const n = Math.ceil(b.payload.length / mss);
          checkSegments(await rx.collect(n), b, mss, maxFrame, partial);
          if (dst === R1) segs += n;
        }
      }
      // Segments that would not fit r1's MTU: dropped for r1 (nothing written), made for r2.
      for (const [dst, rx] of [[R1, r1], [R2, r2]] as const) {
        const b = pkt({ payloadLen: 5000 }, dst);
        g.tx.takeUsed();
        g.send(b.frame, { header: vnet(gso(b, GSO_TCPV4, 2000)) });
        if (dst === R2) checkSegments(await rx.collect(3), b, 2000, 9018, true);
      }
      assertEquals(await reaches(s, "r1", "dropTooBig", c1.dropTooBig + 1), c1.dropTooBig + 1);
      await sleep(20);
      assertEquals(r1.take().length, 0, "r1 got nothing of the frame it cannot take");
      const e1 = await counters(s, "r1"), e2 = await counters(s, "r2");
      assertEquals(e1.swSegmented - c1.swSegmented, 4, "r1: frames segmented");
      assertEquals(e1.swSegments - c1.swSegments, segs, "r1: segments");
      assertEquals(e2.swSegmented - c2.swSegmented, 5, "r2: frames segmented");
      assertEquals(r1.violations, [], "r1: nothing written outside its buffers");
      assertEquals(r2.violations, [], "r2: nothing written outside its buffers");
    },
  },
];

const item39: Case[] = [
  {
    item: 39,
    name: "what an egress gets carries a header rebuilt from validated values",
    run: async (s) => {
      const g = await attacker(s, HOST_ALL);
      const r1 = await receiver(s, "r1", R1, GUEST_ALL); // takes GSO as it is
      const r2 = await receiver(s, "r2", R2, [NF.GUEST_CSUM]);
      // GSO with hdr_len pointing at the frame's end (legal: a hint): r1 gets the real one.
      const b = pkt({ payloadLen: 10000 }, R1);
      g.tx.takeUsed();
      g.send(b.frame, {
        header: vnet({ ...gso(b, GSO_TCPV4 | GSO_ECN, 1448), hdrLen: b.frame.length }),
      });
      const [r] = await r1.collect(1);
      assertEquals(r.frame, b.frame, "the frame as sent");
      assertEquals(r.hdr, {
        flags: NEEDS_CSUM,
        gsoType: GSO_TCPV4 | GSO_ECN,
        hdrLen: 54,
        gsoSize: 1448,
        csumStart: 34,
        csumOffset: 16,
        numBuffers: Math.ceil((12 + b.frame.length) / 2048),
      });
      // Checksum only, with junk in the fields that do not apply: they come out 0.
      for (const [dst, rx] of [[R1, r1], [R2, r2]] as const) {
        const c = pkt({ payloadLen: 300 }, dst);
        g.tx.takeUsed();
        g.send(c.frame, {
          header: vnet({
            flags: NEEDS_CSUM,
            hdrLen: 9999,
            gsoSize: 777,
            csumStart: 34,
            csumOffset: 16,
          }),
        });
        const [x] = await rx.collect(1);
        assertEquals(x.hdr, {
          flags: NEEDS_CSUM,
          gsoType: 0,
          hdrLen: 0,
          gsoSize: 0,
          csumStart: 34,
          csumOffset: 16,
          numBuffers: 1,
        });
        assertEquals(checkFrame(x).problems, []);
      }
      // Device-to-driver flags and unknown bits from a driver: refused, never passed on.
      const p = tcp4(200);
      const cs = { csumStart: p.l4, csumOffset: 16 };
      await refused(s, g, "DATA_VALID", p.frame, { flags: DATA_VALID }, "dropBadHeader");
      await refused(s, g, "NEEDS_CSUM|DATA_VALID", p.frame, {
        flags: NEEDS_CSUM | DATA_VALID,
        ...cs,
      }, "dropBadHeader");
      await refused(s, g, "RSC_INFO", p.frame, { flags: RSC_INFO }, "dropBadHeader");
      await refused(
        s,
        g,
        "flag 0x80",
        p.frame,
        { flags: 0x80 | NEEDS_CSUM, ...cs },
        "dropBadHeader",
      );
      assertEquals(r1.violations, []);
      assertEquals(r2.violations, []);
    },
  },
];

const item40: Case[] = [
  {
    item: 40,
    name: "double fetch: header and packet headers rewritten while the switch segments",
    run: async (s) => {
      const g = await attacker(s, [NF.CSUM, NF.HOST_TSO4]);
      const r1 = await receiver(s, "r1", R1, GUEST_ALL); // gets GSO frames whole
      const r2 = await receiver(s, "r2", R2, []); // gets software segments
      const payload = randomBytes(6000, 40);
      const D = 250;
      const at: number[] = [];
      const sent: Built[] = [];
      for (const [i, dst] of [R1, R2].entries()) {
        const b = pkt({ payload }, dst);
        sent.push(b);
        at.push(place(g, b.frame, vnet(gso(b, GSO_TCPV4, 1000))));
        g.tx.writeDesc(g.tx.desc, D + i, at[i], 12 + b.frame.length, 0, 0);
      }
      const words = at.flatMap((gpa) => {
        const ip = word(g, gpa + 12 + 16), tcpw = word(g, gpa + 12 + 44);
        const tl = (ip & 0xff) << 8 | (ip >> 8) & 0xff;
        return [
          // flags | gso_type | hdr_len: fine, unknown type, GSO without NEEDS_CSUM
          { offset: gpa, values: [0x360101, 0x367f01, 0x360100] },
          // gso_size | csum_start: 1000, 1 (6000 segments), 500, csum_start 14
          { offset: gpa + 4, values: [0x2203e8, 0x220001, 0x2201f4, 0x0e03e8, 0x2203e8] },
          // IPv4 total length: fine, one more
          {
            offset: gpa + 12 + 16,
            values: [ip, (ip & ~0xffff) | ((tl + 1) >> 8) | (((tl + 1) & 0xff) << 8)],
          },
          // TCP data offset and flags: 5 and PSH|ACK, 15, 4, FIN|SYN|RST
          {
            offset: gpa + 12 + 44,
            values: [
              tcpw,
              (tcpw & ~0xff0000) | 0xf00000,
              (tcpw & ~0xff0000) | 0x400000,
              tcpw ^ 0x07000000,
            ],
          },
        ];
      });
      const worker = new Worker(new URL("./flipper_worker.ts", import.meta.url).href, {
        type: "module",
      });
      const flips = new Promise<number>((r) => (worker.onmessage = (e) => r(e.data)));
      const b0 = await counters(s, "bad");
      const c1 = await counters(s, "r1"), c2 = await counters(s, "r2");
      const MS = 1200;
      worker.postMessage({ address: g.mem.map.address, length: g.mem.size, ms: MS, words });
      const start = g.tx.usedIdx();
      const got1: Received[] = [], got2: Received[] = [];
      const PER = 5, end = Date.now() + MS - 100;
      let posted = 0;
      while (Date.now() < end && posted < 2000) {
        for (let i = 0; i < PER; i++) {
          g.tx.pushRaw(D);
          g.tx.pushRaw(D + 1);
        }
        g.tx.notify();
        posted += 2 * PER;
        for (let i = 0; i < 300 && ((g.tx.usedIdx() - start) & 0xffff) < posted; i++) {
          await sleep(1);
        }
        got1.push(...r1.take());
        got2.push(...r2.take());
      }
      console.log(`  flipper rewrote the words ${await flips} times`);
      worker.terminate();
      await sleep(50);
      got1.push(...r1.take());
      got2.push(...r2.take());
      assertEquals((g.tx.usedIdx() - start) & 0xffff, posted, "every chain returned once");
      const now = await counters(s, "bad");
      let sum = now.rxPackets - b0.rxPackets;
      for (const c of DROPS) sum += now[c] - b0[c];
      assertEquals(sum, posted, "each frame counted exactly once");
      const e1 = await counters(s, "r1"), e2 = await counters(s, "r2");
      assertEquals(got1.length, e1.txPackets - c1.txPackets, "r1: what was counted arrived");
      assertEquals(got2.length, e2.swSegments - c2.swSegments, "r2: what was counted arrived");
      console.log(
        `  ${posted} posted, ${
          now.rxPackets - b0.rxPackets
        } taken, r1 ${got1.length} frames, r2 ${got2.length} segments`,
      );
      for (const r of got1) {
        assertEquals(r.hdr.flags, NEEDS_CSUM);
        assertEquals(r.hdr.gsoType, GSO_TCPV4);
        assertEquals(r.hdr.hdrLen, 54, "hdr_len: the headers the switch validated");
        assertEquals(r.hdr.csumStart, 34);
        // Any gso_size the switch accepted, including one torn between two of the guest's
        // writes (its bytes are read once, not atomically): bounded like any other.
        assert(r.hdr.gsoSize >= 5, `gso_size ${r.hdr.gsoSize}: at most 1366 segments`);
        const c = checkFrame(r);
        assertEquals(c.problems, [], "r1's frame is consistent");
        assertEquals(c.payloadOff, 54, "its TCP header is the validated one");
        assertEquals(c.payload, payload);
      }
      for (const r of got2) {
        const c = checkFrame(r);
        assertEquals(c.problems, [], "r2's segment is consistent");
        assertEquals(r.hdr.flags, 0);
        const off = (c.seq - checkFrame({ hdr: r.hdr, frame: sent[1].frame }).seq) >>> 0;
        assertEquals(c.payload, payload.subarray(off, off + c.payload.length), "payload");
        assert(c.payload.length > 0, "a segment with payload");
      }
      assert(got1.length > 0 && got2.length > 0, "some frames got through the race");
      assertEquals(r1.violations, []);
      assertEquals(r2.violations, []);
    },
  },
];

hostileTest(
  "offloaded frames delivered (CHECKLIST 38-40): only what the receiver can trust",
  [...item38, ...item39, ...item40],
  // r1 and r2 are the per-case receivers; a takes every receive offload, b none.
  { a: { features: features(...GUEST_ALL) }, ports: ["r1", "r2"] },
);
