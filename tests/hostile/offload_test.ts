/**
 * CHECKLIST items 34–37: an attacker that negotiated checksum and
 * segmentation offloads (or none) sends real TCPv4 / TCPv6 / UDP packets
 * with crafted virtio-net headers. Each refused frame must move exactly
 * its ingress drop counter on the attacker's port and reach nobody: the
 * frames are broadcast, so one let through would reach a, which takes
 * every offload, and b, which takes none. A valid variant of each packet
 * is accepted first, so each refusal is for what was changed.
 * `Stage.runCase` adds that a and b kept exchanging frames, the switch
 * stayed up and nothing leaked. Items 38–40: offload_delivery_test.ts.
 */
import { assertEquals } from "@std/assert";
import { ethFrame } from "../helpers/frontend.ts";
import {
  features,
  GSO_ECN,
  GSO_TCPV4,
  GSO_TCPV6,
  GSO_UDP,
  GSO_UDP_L4,
  NEEDS_CSUM,
  NF,
  vnet,
} from "../helpers/offload_rx.ts";
import { BAD, BCAST, type Case, hostileTest } from "./harness.ts";
import {
  accepted,
  attacker,
  counters,
  edit,
  gso,
  GUEST_ALL,
  HOST_ALL,
  isAttack,
  pkt,
  refused,
  stillForwards,
  tcp4,
  tcp6,
  udp4,
} from "./offload_steps.ts";

const item34: Case[] = [
  {
    item: 34,
    name: "unknown gso_type, legacy UFO, ECN / TSO6 / USO not negotiated",
    run: async (s) => {
      const g = await attacker(s, [NF.CSUM, NF.HOST_TSO4]);
      const p = tcp4();
      await accepted(s, g, p, gso(p, GSO_TCPV4, 1000), 3);
      for (const t of [2, 6, 0x7f, GSO_UDP]) {
        await refused(s, g, `gso_type ${t}`, p.frame, gso(p, t, 1000), "dropOffloadType");
      }
      await refused(
        s,
        g,
        "TCPV4|ECN without HOST_ECN",
        p.frame,
        gso(p, 0x81, 1000),
        "dropOffloadType",
      );
      await refused(s, g, "ECN on GSO_NONE", p.frame, { ...gso(p, GSO_ECN, 0) }, "dropOffloadType");
      const p6 = tcp6();
      await refused(
        s,
        g,
        "TCPV6 without HOST_TSO6",
        p6.frame,
        gso(p6, GSO_TCPV6, 1000),
        "dropOffloadType",
      );
      const u = udp4();
      await refused(
        s,
        g,
        "UDP_L4 without HOST_USO",
        u.frame,
        gso(u, GSO_UDP_L4, 1000),
        "dropOffloadType",
      );
      await stillForwards(s, g, 0x34);
    },
  },
  {
    item: 34,
    name: "any offload from a port that negotiated none",
    run: async (s) => {
      const g = await attacker(s, []);
      const p = tcp4();
      const csum = { flags: NEEDS_CSUM, csumStart: p.l4, csumOffset: 16 };
      await refused(s, g, "NEEDS_CSUM", p.frame, csum, "dropBadHeader");
      await refused(s, g, "TCPV4", p.frame, gso(p, GSO_TCPV4, 1000), "dropBadHeader");
      await refused(s, g, "gso_type 0x7f", p.frame, { gsoType: 0x7f }, "dropBadHeader");
      await stillForwards(s, g, 0x35);
    },
  },
];

const item35: Case[] = [
  {
    item: 35,
    name: "gso_size 0 or thousands of segments; hdr_len beyond the frame or short",
    run: async (s) => {
      const g = await attacker(s, [NF.CSUM, NF.HOST_TSO4, NF.HOST_TSO6]);
      const big = tcp4(61440);
      await refused(s, g, "gso_size 0", big.frame, gso(big, GSO_TCPV4, 0), "dropOffloadSize");
      const b0 = await counters(s, "b");
      await refused(
        s,
        g,
        "gso_size 1: 61440 segments",
        big.frame,
        gso(big, GSO_TCPV4, 1),
        "dropOffloadSize",
      );
      await refused(
        s,
        g,
        "gso_size 44: 1397 segments",
        big.frame,
        gso(big, GSO_TCPV4, 44),
        "dropOffloadSize",
      );
      assertEquals((await counters(s, "b")).swSegments, b0.swSegments, "no segment was made");
      const p = tcp4();
      const len = p.frame.length;
      await refused(s, g, "hdr_len beyond the frame", p.frame, {
        ...gso(p, GSO_TCPV4, 1000),
        hdrLen: len + 1,
      }, "dropOffloadHdrLen");
      await refused(
        s,
        g,
        "hdr_len 53 < 54",
        p.frame,
        { ...gso(p, GSO_TCPV4, 1000), hdrLen: 53 },
        "dropOffloadHdrLen",
      );
      await refused(
        s,
        g,
        "hdr_len 0",
        p.frame,
        { ...gso(p, GSO_TCPV4, 1000), hdrLen: 0 },
        "dropOffloadHdrLen",
      );
      const p6 = tcp6(3000, { tcpOptions: 12 });
      await refused(s, g, "hdr_len short of TCP options", p6.frame, {
        ...gso(p6, GSO_TCPV6, 1000),
        hdrLen: p6.payloadOff - 12,
      }, "dropOffloadHdrLen");
      // hdr_len is a hint (§5.1.6.2.2): anything from the real headers to the frame's end passes.
      await accepted(s, g, p, { ...gso(p, GSO_TCPV4, 1000), hdrLen: len }, 3);
      await stillForwards(s, g, 0x36);
    },
  },
  {
    item: 35,
    name: "GSO frames above 64 KiB: the IP length fields disagree, or the chain is too long",
    run: async (s) => {
      const g = await attacker(s, [NF.CSUM, NF.HOST_TSO4, NF.HOST_TSO6]);
      // The most an IPv4 header can declare is 65535 bytes: 100 bytes more in the frame
      // are not covered by it (the parser's length check, before any size check).
      const over = tcp4(65535 - 40 + 100);
      new DataView(over.frame.buffer).setUint16(over.l3 + 2, 65535);
      await refused(
        s,
        g,
        "65635-byte IPv4 packet, total length 65535",
        over.frame,
        gso(over, GSO_TCPV4, 1448),
        "dropOffloadPacket",
      );
      // The same with the length cut to 16 bits, as a careless sender would write it.
      new DataView(over.frame.buffer).setUint16(over.l3 + 2, (over.frame.length - 14) & 0xffff);
      await refused(
        s,
        g,
        "total length wrapped to 16 bits",
        over.frame,
        gso(over, GSO_TCPV4, 1448),
        "dropOffloadPacket",
      );
      const over6 = tcp6(65535 - 20 + 60);
      new DataView(over6.frame.buffer).setUint16(over6.l3 + 4, 65535);
      await refused(
        s,
        g,
        "IPv6 payload beyond 65535",
        over6.frame,
        gso(over6, GSO_TCPV6, 1428),
        "dropOffloadPacket",
      );
      // Beyond what any GSO frame can be (65535 + 128 bytes): the chain itself is refused.
      const huge = tcp4(70000);
      await refused(
        s,
        g,
        "a 70 KB chain",
        huge.frame,
        gso(huge, GSO_TCPV4, 1448),
        "dropBadDescriptor",
      );
      // The largest legal ones pass: 65535-byte IPv4 packet, IPv6 payload length 65535.
      const max4 = tcp4(65535 - 40);
      const max6 = tcp6(65535 - 20);
      for (const m of [max4, max6]) {
        g.tx.takeUsed();
        g.send(m.frame, { header: vnet(gso(m, m === max4 ? GSO_TCPV4 : GSO_TCPV6, 65000)) });
        const got = await s.pump.extraAtA((f) => f.length === m.frame.length && isAttack(f));
        assertEquals(got, m.frame, "the largest GSO frame reaches a whole");
      }
      await stillForwards(s, g, 0x37);
    },
  },
];

const item36: Case[] = [
  {
    item: 36,
    name: "NEEDS_CSUM with csum_start in the Ethernet header or beyond, field past the frame",
    run: async (s) => {
      const g = await attacker(s, [NF.CSUM, NF.HOST_TSO4]);
      const p = tcp4(200);
      const len = p.frame.length;
      const cs = (csumStart: number, csumOffset: number) => ({
        flags: NEEDS_CSUM,
        csumStart,
        csumOffset,
      });
      await accepted(s, g, p, cs(p.l4, 16), 1); // b gets it completed in software
      for (
        const [start, off, what] of [
          [0, 16, "csum_start 0"],
          [13, 16, "csum_start 13, inside the Ethernet header"],
          [len, 0, "csum_start at the frame's end"],
          [65535, 0, "csum_start 65535"],
          [len - 1, 0, "csum_start + 2 past the frame"],
          [p.l4, len - p.l4 - 1, "csum_start + csum_offset + 2 past the frame"],
          [p.l4, 65535, "csum_offset 65535"],
        ] as const
      ) {
        await refused(s, g, what, p.frame, cs(start, off), "dropOffloadCsum");
      }
      // For GSO, the checksum is the L4 one.
      await refused(s, g, "GSO csum_start at the IP header", p.frame, {
        ...gso(p, GSO_TCPV4, 100),
        csumStart: p.l3,
      }, "dropOffloadCsum");
      await refused(s, g, "GSO csum_offset 6 on TCP", p.frame, {
        ...gso(p, GSO_TCPV4, 100),
        csumOffset: 6,
      }, "dropOffloadCsum");
      await stillForwards(s, g, 0x38);
    },
  },
];

const item37: Case[] = [
  {
    item: 37,
    name: "a GSO type that disagrees with the packet, or a packet that cannot be segmented",
    run: async (s) => {
      const g = await attacker(s, HOST_ALL);
      const P = "dropOffloadPacket";
      const p = tcp4(), p6 = tcp6(), u = udp4(), u6 = pkt({ ip: 6, l4: "udp", payloadLen: 3000 });
      const v6 = pkt({ ip: 6, vlans: [0x8100], payloadLen: 3000 });
      const v4 = pkt({ vlans: [0x8100], payloadLen: 3000 });
      await accepted(s, g, p6, gso(p6, GSO_TCPV6, 1000), 3);
      await accepted(s, g, u6, gso(u6, GSO_UDP_L4, 1000), 3);
      await accepted(s, g, v4, gso(v4, GSO_TCPV4, 1000), 3);
      const h4 = gso(p, GSO_TCPV4, 1000);
      await refused(s, g, "TCPV4 on IPv6", p6.frame, gso(p6, GSO_TCPV4, 1000), P);
      await refused(s, g, "TCPV4 on VLAN-tagged IPv6", v6.frame, gso(v6, GSO_TCPV4, 1000), P);
      const arp = ethFrame(BCAST, BAD, 46);
      arp.set([0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1], 12);
      await refused(s, g, "TCPV4 on ARP", arp, { ...h4, hdrLen: 54 }, P);
      await refused(s, g, "TCPV6 on IPv4", p.frame, gso(p, GSO_TCPV6, 1000), P);
      await refused(
        s,
        g,
        "UDP_L4 on TCP",
        p.frame,
        { ...gso(p, GSO_UDP_L4, 1000), csumOffset: 16 },
        P,
      );
      await refused(
        s,
        g,
        "TCPV4 on UDP",
        u.frame,
        { ...gso(u, GSO_TCPV4, 1000), csumOffset: 6 },
        P,
      );
      const l3 = p.l3, l4 = p.l4;
      await refused(s, g, "IPv4 IHL 4", edit(p, [[l3, 0x44]]), h4, P);
      const short = tcp4(0); // 54 bytes: options of IHL 15 run past it
      await refused(
        s,
        g,
        "IPv4 options past the frame",
        edit(short, [[l3, 0x4f]]),
        gso(short, GSO_TCPV4, 100),
        P,
      );
      await refused(s, g, "MF set", edit(p, [[l3 + 6, 0x20]]), h4, P);
      await refused(
        s,
        g,
        "fragment offset 1 (8 bytes)",
        edit(p, [[l3 + 6, 0], [l3 + 7, 1]]),
        h4,
        P,
      );
      const tl = (p.frame.length - l3) & 0xffff;
      await refused(
        s,
        g,
        "IPv4 total length + 1",
        edit(p, [[l3 + 2, (tl + 1) >> 8], [l3 + 3, (tl + 1) & 0xff]]),
        h4,
        P,
      );
      await refused(
        s,
        g,
        "IPv4 total length − 1",
        edit(p, [[l3 + 2, (tl - 1) >> 8], [l3 + 3, (tl - 1) & 0xff]]),
        h4,
        P,
      );
      const pl = p6.frame.length - p6.l3 - 40;
      const h6 = gso(p6, GSO_TCPV6, 1000);
      await refused(
        s,
        g,
        "IPv6 payload length + 1",
        edit(p6, [[p6.l3 + 4, (pl + 1) >> 8], [p6.l3 + 5, (pl + 1) & 0xff]]),
        h6,
        P,
      );
      await refused(
        s,
        g,
        "IPv6 payload length − 1",
        edit(p6, [[p6.l3 + 4, (pl - 1) >> 8], [p6.l3 + 5, (pl - 1) & 0xff]]),
        h6,
        P,
      );
      await refused(s, g, "TCP data offset 4", edit(p, [[l4 + 12, 0x40]]), h4, P);
      const tiny = tcp4(10); // 30 TCP bytes: a 60-byte TCP header runs past them
      await refused(
        s,
        g,
        "TCP data offset past the frame",
        edit(tiny, [[l4 + 12, 0xf0]]),
        gso(tiny, GSO_TCPV4, 100),
        P,
      );
      await refused(s, g, "IPv6 hop-by-hop header", edit(p6, [[p6.l3 + 6, 0]]), h6, P);
      await refused(s, g, "IPv6 fragment header", edit(p6, [[p6.l3 + 6, 44]]), h6, P);
      await refused(
        s,
        g,
        "UDP_L4 with ECN",
        u.frame,
        gso(u, GSO_UDP_L4 | GSO_ECN, 1000),
        "dropOffloadType",
      );
      await stillForwards(s, g, 0x39);
    },
  },
];

hostileTest(
  "hostile offload headers (CHECKLIST 34-37): the attacker's port only",
  [...item34, ...item35, ...item36, ...item37],
  // a takes every receive offload, b none (everything offloaded reaches b through the
  // software fallback).
  { a: { features: features(...GUEST_ALL) } },
);
