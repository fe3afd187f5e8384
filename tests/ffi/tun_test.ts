import { assert, assertEquals } from "@std/assert";
import { openTap, setVnetHdrSize } from "../../ffi/tun.ts";
import { closeFd } from "../../ffi/io.ts";
import { errno, libc } from "../../ffi/libc.ts";
import { Epoll } from "../../ffi/epoll.ts";
import { EPOLLIN } from "../../ffi/constants.ts";
import { NetNs } from "../helpers/netns.ts";
import { needRoot, requireOrSkip, sh, uniqueSuffix } from "../helpers/env.ts";

const VNET_HDR = 12; // struct virtio_net_hdr_mrg_rxbuf (VIRTIO 1.2 §5.1.6)

Deno.test("TAP in a namespace: our frame reaches the kernel, the kernel's ARP reaches us", async () => {
  if (!requireOrSkip("TAP test", needRoot())) return;
  const id = uniqueSuffix();
  await using ns = await NetNs.create(`vst${id}`);
  const tap = openTap(`vst${id}`);
  try {
    setVnetHdrSize(tap.fd, VNET_HDR);
    await sh("ip", "link", "set", tap.name, "netns", ns.name);
    await ns.exec("ip", "addr", "add", "10.77.0.1/24", "dev", tap.name);
    await ns.exec("ip", "link", "set", tap.name, "up");

    // Host -> kernel: a broadcast frame written through our fd is counted as rx.
    const before = await ns.counter(tap.name, "rx_packets");
    const frame = new Uint8Array(VNET_HDR + 60);
    frame.fill(0xff, VNET_HDR, VNET_HDR + 6); // dst broadcast
    frame.set([0x02, 0, 0, 0, 0, 0x42], VNET_HDR + 6); // src
    frame.set([0x88, 0xb5], VNET_HDR + 12); // local experimental ethertype
    for (let i = 0; i < 3; i++) assertEquals(libc.write(tap.fd, frame, frame.length), frame.length);
    assertEquals(await ns.counter(tap.name, "rx_packets"), before + 3);

    // Kernel -> host: ping a neighbour that does not exist; the ARP request leaves by our TAP.
    const ping = ns.spawn("ping", "-c", "3", "-i", "0.2", "10.77.0.2");
    const ep = new Epoll(4);
    ep.add(tap.fd, EPOLLIN, 1);
    const buf = new Uint8Array(2048);
    let arp = -1;
    const deadline = Date.now() + 5000;
    while (arp < 0 && Date.now() < deadline) {
      if ((await ep.waitAsync(200)) === 0) continue;
      for (;;) {
        const n = libc.read(tap.fd, buf, buf.length);
        if (n < 0) {
          assertEquals(errno(), 11, "EAGAIN once drained");
          break;
        }
        if (n >= VNET_HDR + 14 && buf[VNET_HDR + 12] === 0x08 && buf[VNET_HDR + 13] === 0x06) {
          arp = n;
        }
      }
    }
    ep.close();
    assert(arp > 0, "an ARP frame came out of the TAP");
    assertEquals(buf[0] & 0xfe, 0, "virtio-net header flags: no NEEDS_CSUM on ARP");
    assertEquals(buf[1], 0, "virtio-net header gso_type NONE");
    assertEquals([...buf.subarray(VNET_HDR, VNET_HDR + 6)], [255, 255, 255, 255, 255, 255]);
    // ARP target protocol address is the last 4 bytes of the ARP body.
    assertEquals([...buf.subarray(VNET_HDR + 14 + 24, VNET_HDR + 14 + 28)], [10, 77, 0, 2]);
    ping.kill("SIGKILL");
  } finally {
    closeFd(tap.fd);
  }
});
