/**
 * The capture ring and the pcapng writer: frames offered by the producer
 * (as the dataplane worker does) come out of the consumer intact, with
 * their direction and virtio-net header, wrap around the ring, are counted
 * as dropped (never waited for) when the ring is full, and the file the
 * capture manager writes reads back in tshark.
 */
import { assert, assertEquals } from "@std/assert";
import { SegList } from "../../src/virtio/chain.ts";
import {
  CaptureConsumer,
  CaptureProducer,
  createCaptureBuffers,
  Direction,
  RECORD_HEADER,
} from "../../src/switch/capture_ring.ts";
import { CaptureManager } from "../../src/switch/capture.ts";
import { hasCommand, requireOrSkip } from "../helpers/env.ts";
import { tsharkFields } from "../helpers/capture.ts";

/** An Ethernet + IPv4 + ICMP echo request from 10.0.0.1 to 10.0.0.2, correct checksums. */
export function icmpFrame(seq: number, payload = 56): Uint8Array {
  const f = new Uint8Array(14 + 20 + 8 + payload);
  f.set([0x52, 0x54, 0, 0, 0, 2, 0x52, 0x54, 0, 0, 0, 1, 0x08, 0x00], 0);
  const ip = f.subarray(14, 34);
  ip.set([0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
  const total = 20 + 8 + payload;
  ip[2] = total >> 8, ip[3] = total & 0xff;
  const sum = (b: Uint8Array) => {
    let s = 0;
    for (let i = 0; i < b.length; i += 2) s += (b[i] << 8) | (b[i + 1] ?? 0);
    while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
    return ~s & 0xffff;
  };
  const ipSum = sum(ip);
  ip[10] = ipSum >> 8, ip[11] = ipSum & 0xff;
  const icmp = f.subarray(34);
  icmp[0] = 8;
  icmp[6] = seq >> 8, icmp[7] = seq & 0xff;
  for (let i = 8; i < icmp.length; i++) icmp[i] = i & 0xff;
  const c = sum(icmp);
  icmp[2] = c >> 8, icmp[3] = c & 0xff;
  return f;
}

/** A SegList holding `frame` after a 12-byte header, split into segments of `seg` bytes. */
function listOf(frame: Uint8Array, seg: number, shift = 0): SegList {
  const buf = new Uint8Array(((12 + frame.length + shift + 3) & ~3) + 4);
  buf.set(frame, 12 + shift);
  const words = new Uint32Array(buf.buffer);
  const list = new SegList(64);
  for (let o = 0; o < 12 + shift + frame.length; o += seg) {
    list.push(buf, words, o, Math.min(seg, 12 + shift + frame.length - o), 0);
  }
  return list;
}

Deno.test("capture ring: frames come out intact, wrap around, and overflow is counted", () => {
  const bufs = createCaptureBuffers(4096);
  const prod = new CaptureProducer(bufs);
  const cons = new CaptureConsumer(bufs);
  const seen: { seq: number; dir: number; ok: boolean; gso: number }[] = [];
  let offered = 0;
  for (let round = 0; round < 40; round++) {
    // Odd segment sizes and shifted offsets exercise the byte path and the word path.
    for (const [seg, shift] of [[4096, 0], [7, 1], [64, 2], [13, 3]]) {
      const f = icmpFrame(offered, 40 + (offered % 90));
      const ok = prod.offer(
        3,
        Direction.TX,
        listOf(f, seg, shift),
        12 + shift,
        f.length,
        1,
        4,
        1448,
        34,
        16,
        12,
      );
      assert(ok, "room for 4 frames of < 200 bytes in 4 KiB");
      offered++;
    }
    cons.drain((r) => {
      const want = icmpFrame(r.data[41] | (r.data[40] << 8), r.data.length - 42);
      seen.push({
        seq: (r.data[40] << 8) | r.data[41],
        dir: r.direction,
        ok: r.data.every((b, i) => b === want[i]) && r.origLen === r.data.length,
        gso: r.gsoSize,
      });
      assertEquals([r.port, r.flags, r.gsoType, r.csumStart, r.csumOffset, r.hdrLen], [
        3,
        1,
        4,
        34,
        16,
        12,
      ]);
      assert(Math.abs(r.timestampUs / 1000 - Date.now()) < 5000);
    });
  }
  assertEquals(seen.length, offered);
  assert(seen.every((s, i) => s.seq === i && s.ok && s.dir === Direction.TX && s.gso === 1448));
  // Word-aligned frames of many lengths: their data crosses the ring's end at every offset.
  let wrapped = 0;
  for (let len = 20; len < 1500; len += 7) {
    const f = icmpFrame(len, len);
    assert(prod.offer(4, Direction.RX, listOf(f, 4096), 12, f.length, 0, 0, 0, 0, 0, 12));
    cons.drain((r) => {
      const ok = r.data.length === f.length && r.data.every((b, i) => b === f[i]);
      assert(ok, `frame of ${f.length} bytes intact`);
      wrapped++;
    });
  }
  assertEquals(wrapped, Math.ceil((1500 - 20) / 7));
  // Full ring: the producer counts drops and returns at once.
  const big = icmpFrame(0, 1400);
  let accepted = 0;
  for (let i = 0; i < 10; i++) {
    if (prod.offer(5, Direction.RX, listOf(big, 4096), 12, big.length, 0, 0, 0, 0, 0, 12)) {
      accepted++;
    }
  }
  assertEquals(accepted, Math.floor((4096 - 4) / (RECORD_HEADER + 1444)));
  assertEquals(cons.dropped(5), 10 - accepted);
  assertEquals(cons.offered(5), 10);
  assertEquals(cons.drain(() => {}), accepted);
});

Deno.test("capture manager writes pcapng that tshark reads: direction, ICMP, virtio-net comment", async () => {
  if (!requireOrSkip("pcapng read-back", hasCommand("tshark") ? undefined : "needs tshark")) return;
  const bufs = createCaptureBuffers();
  const prod = new CaptureProducer(bufs);
  const mgr = new CaptureManager(bufs);
  const dir = await Deno.makeTempDir({ prefix: "vswitch-cap-" });
  const file = `${dir}/vm1.pcapng`;
  await mgr.start({
    port: 2,
    portName: "vm1",
    portType: "vhost-server",
    file,
    direction: "both",
    count: 6,
  });
  const finished = mgr.finished(2)!;
  for (let i = 0; i < 8; i++) {
    const f = icmpFrame(i);
    const dirBit = i % 2 === 0 ? Direction.RX : Direction.TX;
    if (prod.flags[2] & dirBit) {
      prod.offer(
        2,
        dirBit,
        listOf(f, 50),
        12,
        f.length,
        i === 1 ? 1 : 0,
        i === 1 ? 1 : 0,
        i === 1 ? 1448 : 0,
        34,
        2,
        12,
      );
    }
  }
  const status = await finished;
  assertEquals(status.written, 6);
  assertEquals(status.state, "done");
  assertEquals(prod.flags[2], 0, "flag off after count frames");
  const rows = await tsharkFields(file, [
    "frame.packet_flags_direction",
    "icmp.seq",
    "frame.comment",
    "frame.interface_name",
  ]);
  assertEquals(rows.length, 6);
  for (const [i, r] of rows.entries()) {
    assertEquals(Number(r[0]), i % 2 === 0 ? 1 : 2, `direction of frame ${i}: ${r}`);
    assertEquals(Number(r[1]), i);
    assertEquals(r[3], "vm1");
  }
  assertEquals(
    rows[1][2],
    "virtio-net flags=0x01 gso_type=tcpv4 gso_size=1448 hdr_len=12 csum_start=34 csum_offset=2",
  );
  assertEquals(
    rows[0][2],
    "virtio-net flags=0x00 gso_type=none gso_size=0 hdr_len=12 csum_start=34 csum_offset=2",
  );
  await Deno.remove(dir, { recursive: true });
});
