/**
 * A TypeScript virtio-net driver playing QEMU's part of vhost-user over a
 * real UNIX socket, with guest memory in a real memfd and real eventfds.
 * Written from the specs (vhost-user.rst; VIRTIO 1.2 §2.7 split rings,
 * §5.1 network device), independently of src/: it tests our backend, so it
 * shares none of its code. The raw layers stay public so hostile tests can
 * send any bytes, fds and ring contents.
 *
 * @module
 */

import { connectUnix, MessageIo } from "../../ffi/socket.ts";
import { closeAll } from "../../ffi/io.ts";
import { ftruncate, type Mapping, memfdCreate, mmap, munmap } from "../../ffi/memory.ts";
import { eventfdCreate, eventfdRead, eventfdWrite } from "../../ffi/eventfd.ts";

/** vhost-user request codes used here. */
export const Req = {
  GET_FEATURES: 1,
  SET_FEATURES: 2,
  SET_OWNER: 3,
  RESET_OWNER: 4,
  SET_MEM_TABLE: 5,
  SET_VRING_NUM: 8,
  SET_VRING_ADDR: 9,
  SET_VRING_BASE: 10,
  GET_VRING_BASE: 11,
  SET_VRING_KICK: 12,
  SET_VRING_CALL: 13,
  SET_VRING_ERR: 14,
  GET_PROTOCOL_FEATURES: 15,
  SET_PROTOCOL_FEATURES: 16,
  GET_QUEUE_NUM: 17,
  SET_VRING_ENABLE: 18,
  SEND_RARP: 19,
  NET_SET_MTU: 20,
  SET_LOG_BASE: 6,
  SET_LOG_FD: 7,
  RESET_DEVICE: 34,
  GET_MAX_MEM_SLOTS: 36,
  ADD_MEM_REG: 37,
  REM_MEM_REG: 38,
  SET_STATUS: 39,
  GET_STATUS: 40,
} as const;

/** Feature bits. */
export const F = {
  MTU: 3,
  MRG_RXBUF: 15,
  INDIRECT_DESC: 28,
  EVENT_IDX: 29,
  GUEST_ANNOUNCE: 21,
  LOG_ALL: 26,
  PROTOCOL_FEATURES: 30,
  VERSION_1: 32,
} as const;
/** Protocol feature bits. */
export const PF = {
  MQ: 0,
  LOG_SHMFD: 1,
  RARP: 2,
  REPLY_ACK: 3,
  NET_MTU: 4,
  INFLIGHT_SHMFD: 12,
  RESET_DEVICE: 13,
  CONFIGURE_MEM_SLOTS: 15,
  STATUS: 16,
} as const;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Where the fake "QEMU virtual address" of guest-physical 0 is. */
export const UVA_BASE = 0x7f00_0000_0000;

/** A raw vhost-user connection (the frontend side). */
export class RawFrontend {
  readonly io = new MessageIo(16);
  constructor(readonly fd: number) {}

  /** Connects to a switch's socket (non-blocking: the switch may share this thread). */
  static connect(path: string): RawFrontend {
    return new RawFrontend(connectUnix(path));
  }

  /** Sends bytes as they are, with fds. */
  sendRaw(bytes: Uint8Array, fds: number[] = []): void {
    this.io.send(this.fd, bytes, bytes.length, fds);
  }

  /** Sends a message with a correct header. */
  send(
    request: number,
    payload: Uint8Array = new Uint8Array(0),
    fds: number[] = [],
    flags = 1,
  ): void {
    const buf = new Uint8Array(12 + payload.length);
    const v = new DataView(buf.buffer);
    v.setUint32(0, request, true);
    v.setUint32(4, flags, true);
    v.setUint32(8, payload.length, true);
    buf.set(payload, 12);
    this.sendRaw(buf, fds);
  }

  /** Reads one reply (polling, so an in-process switch keeps running). */
  async reply(
    timeoutMs = 20_000,
  ): Promise<{ request: number; flags: number; payload: Uint8Array }> {
    const hdr = await this.#read(12, timeoutMs);
    const v = new DataView(hdr.buffer);
    const payload = await this.#read(v.getUint32(8, true), timeoutMs);
    return { request: v.getUint32(0, true), flags: v.getUint32(4, true), payload };
  }

  async #read(n: number, timeoutMs: number): Promise<Uint8Array> {
    const out = new Uint8Array(n);
    let have = 0;
    const deadline = Date.now() + timeoutMs;
    let polls = 0;
    while (have < n) {
      const r = this.io.recv(this.fd, out.subarray(have), n - have);
      if (r === null) {
        if (Date.now() > deadline) throw new Error(`No reply within ${timeoutMs} ms`);
        // A backend in another process answers within microseconds: poll eagerly first.
        await sleep(++polls < 50 ? 0 : 2);
        continue;
      }
      closeAll(r.fds);
      if (r.bytes === 0) throw new Error("Backend closed the connection");
      have += r.bytes;
    }
    return out;
  }

  /** True once the backend has closed the connection (within the timeout). */
  async closedByPeer(timeoutMs = 20_000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    const buf = new Uint8Array(64);
    while (Date.now() < deadline) {
      try {
        const r = this.io.recv(this.fd, buf);
        if (r !== null) {
          closeAll(r.fds);
          if (r.bytes === 0) return true;
        }
      } catch {
        return true; // ECONNRESET
      }
      await sleep(5);
    }
    return false;
  }

  /** Closes the socket. */
  close(): void {
    closeAll([this.fd]);
  }
}

/** u64 payload. */
export function u64(n: bigint | number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n), true);
  return b;
}

/** vhost_vring_state payload. */
export function vringState(index: number, num: number): Uint8Array {
  const b = new Uint8Array(8);
  const v = new DataView(b.buffer);
  v.setUint32(0, index, true);
  v.setUint32(4, num, true);
  return b;
}

/** Guest memory: one memfd, presented as one or two regions. */
export class DriverMemory {
  readonly fd: number;
  readonly map: Mapping;
  readonly bytes: Uint8Array;
  readonly view: DataView;
  #next = 0x1000;

  constructor(readonly size: number) {
    this.fd = memfdCreate("driver-guest");
    ftruncate(this.fd, size);
    this.map = mmap(this.fd, size);
    this.bytes = new Uint8Array(this.map.buffer);
    this.view = new DataView(this.map.buffer);
  }

  /** Moves the bump allocator to `gpa` (e.g. to put rings above 4 GiB). */
  skipTo(gpa: number): void {
    if (gpa < this.#next || gpa >= this.size) throw new Error(`Cannot skip to ${gpa}`);
    this.#next = gpa;
  }

  /** Bump allocation of guest-physical memory. */
  alloc(size: number, align = 16): number {
    const at = Math.ceil(this.#next / align) * align;
    if (at + size > this.size) throw new Error("Driver memory exhausted");
    this.#next = at + size;
    return at;
  }

  /** SET_MEM_TABLE payload (gpa = file offset; uva = UVA_BASE + gpa), 1 or 2 regions. */
  table(regions: 1 | 2): { payload: Uint8Array; fds: number[] } {
    const parts = regions === 1
      ? [[0, this.size]]
      : [[0, this.size / 2], [this.size / 2, this.size / 2]];
    const payload = new Uint8Array(8 + 32 * parts.length);
    const v = new DataView(payload.buffer);
    v.setUint32(0, parts.length, true);
    parts.forEach(([start, len], i) => {
      const o = 8 + 32 * i;
      v.setBigUint64(o, BigInt(start), true);
      v.setBigUint64(o + 8, BigInt(len), true);
      v.setBigUint64(o + 16, BigInt(UVA_BASE + start), true);
      v.setBigUint64(o + 24, BigInt(start), true);
    });
    return { payload, fds: parts.map(() => this.fd) };
  }

  /** Unmaps and closes. */
  close(): void {
    munmap(this.map);
    closeAll([this.fd]);
  }
}

/** A buffer segment of a chain. */
export interface Segment {
  gpa: number;
  len: number;
  writable: boolean;
}

/** The driver side of a split virtqueue (§2.7). */
export class DriverQueue {
  readonly desc: number;
  readonly avail: number;
  readonly used: number;
  readonly kick = eventfdCreate();
  readonly call = eventfdCreate();
  #free: number[];
  #availIdx = 0;
  #lastUsed = 0;
  /** Head → descriptors it holds, for freeing. */
  readonly #chains = new Map<number, number[]>();

  constructor(readonly mem: DriverMemory, readonly size: number) {
    this.desc = mem.alloc(16 * size, 16);
    this.avail = mem.alloc(6 + 2 * size, 2);
    this.used = mem.alloc(6 + 8 * size, 4);
    this.#free = Array.from({ length: size }, (_, i) => i);
  }

  /** Writes descriptor `i` of the table at `table`. */
  writeDesc(
    table: number,
    i: number,
    addr: number,
    len: number,
    flags: number,
    next: number,
  ): void {
    const v = this.mem.view, o = table + 16 * i;
    v.setBigUint64(o, BigInt(addr), true);
    v.setUint32(o + 8, len, true);
    v.setUint16(o + 12, flags, true);
    v.setUint16(o + 14, next, true);
  }

  /** Adds a chain (direct or one indirect table) and makes it available; returns its head. */
  add(segs: Segment[], indirect = false): number {
    if (indirect) {
      const table = this.mem.alloc(16 * segs.length, 16);
      segs.forEach((s, i) =>
        this.writeDesc(
          table,
          i,
          s.gpa,
          s.len,
          (s.writable ? 2 : 0) | (i < segs.length - 1 ? 1 : 0),
          i + 1,
        )
      );
      const head = this.#free.shift()!;
      this.writeDesc(this.desc, head, table, 16 * segs.length, 4, 0);
      this.#chains.set(head, [head]);
      this.#push(head);
      return head;
    }
    if (this.#free.length < segs.length) throw new Error("Queue full");
    const ids = segs.map(() => this.#free.shift()!);
    segs.forEach((s, i) =>
      this.writeDesc(
        this.desc,
        ids[i],
        s.gpa,
        s.len,
        (s.writable ? 2 : 0) | (i < segs.length - 1 ? 1 : 0),
        ids[i + 1] ?? 0,
      )
    );
    this.#chains.set(ids[0], ids);
    this.#push(ids[0]);
    return ids[0];
  }

  #push(head: number): void {
    const v = this.mem.view;
    v.setUint16(this.avail + 4 + 2 * (this.#availIdx % this.size), head, true);
    this.#availIdx = (this.#availIdx + 1) & 0xffff;
    v.setUint16(this.avail + 2, this.#availIdx, true);
  }

  /**
   * Hostile use: makes `head` available whatever it is (out of range, a
   * descriptor written by hand with `writeDesc`, a head already in flight).
   */
  pushRaw(head: number): void {
    this.#push(head);
  }

  /** Hostile use: writes avail.idx directly (e.g. more than the ring size ahead). */
  setAvailIdx(idx: number): void {
    this.#availIdx = idx & 0xffff;
    this.mem.view.setUint16(this.avail + 2, this.#availIdx, true);
  }

  /** The next avail index this driver will publish. */
  get availIdx(): number {
    return this.#availIdx;
  }

  /** used.idx as the device last wrote it. */
  usedIdx(): number {
    return this.mem.view.getUint16(this.used + 2, true);
  }

  /** Kicks the backend. */
  notify(): void {
    eventfdWrite(this.kick, 1);
  }

  /** Used entries since the last call; their descriptors are freed. */
  takeUsed(): { id: number; len: number }[] {
    const v = this.mem.view;
    const idx = v.getUint16(this.used + 2, true);
    const out: { id: number; len: number }[] = [];
    while (this.#lastUsed !== idx) {
      const e = this.used + 4 + 8 * (this.#lastUsed % this.size);
      const id = v.getUint32(e, true);
      out.push({ id, len: v.getUint32(e + 4, true) });
      for (const d of this.#chains.get(id) ?? []) this.#free.push(d);
      this.#chains.delete(id);
      this.#lastUsed = (this.#lastUsed + 1) & 0xffff;
    }
    return out;
  }

  /** Interrupts received (resets the call eventfd). */
  interrupts(): number {
    return eventfdRead(this.call);
  }

  /** Closes the eventfds. */
  close(): void {
    closeAll([this.kick, this.call]);
  }
}

/** Options for `VirtioNetDriver.start`. */
export interface DriverOptions {
  memMiB?: number;
  queueSize?: number;
  mrgRxbuf?: boolean;
  regions?: 1 | 2;
  mtu?: number;
  /** RX buffer size posted by fillRx. */
  rxBufSize?: number;
  /** Hostile use: ring addresses (frontend-virtual) to send instead of the real ones. */
  ringAddr?: (ring: number, real: { desc: number; used: number; avail: number }) => {
    desc: number;
    used: number;
    avail: number;
  };
  /** Where rings and buffers start in guest memory (default 0x1000). */
  firstGpa?: number;
  /** Hostile use: feature bits to ask for instead of the usual set (ANDed with the offer). */
  features?: bigint;
  /** Protocol feature bits to ask for beyond MQ, REPLY_ACK and NET_MTU (ANDed with the offer). */
  protocol?: bigint;
  /** Share memory with one ADD_MEM_REG per region instead of SET_MEM_TABLE (CONFIGURE_MEM_SLOTS). */
  addMemReg?: boolean;
}

/** A guest NIC: negotiation, RX buffers, send and receive. */
export class VirtioNetDriver {
  readonly rx: DriverQueue;
  readonly tx: DriverQueue;
  features = 0n;
  protocol = 0n;
  readonly #rxBufs = new Map<number, number>(); // head → gpa
  readonly #rxSize: number;
  /** Every RX buffer the device filled, as (gpa, bytes written), in order. */
  readonly rxWrites: { gpa: number; len: number }[] = [];

  private constructor(
    readonly conn: RawFrontend,
    readonly mem: DriverMemory,
    readonly opts: DriverOptions,
  ) {
    const size = opts.queueSize ?? 256;
    if (opts.firstGpa !== undefined) mem.skipTo(opts.firstGpa);
    this.rx = new DriverQueue(mem, size);
    this.tx = new DriverQueue(mem, size);
    this.#rxSize = opts.rxBufSize ?? 2048;
  }

  /** A request that wants an ack when REPLY_ACK is negotiated; throws on a failed ack. */
  async request(code: number, payload?: Uint8Array, fds: number[] = []): Promise<void> {
    const ack = (this.protocol & (1n << BigInt(PF.REPLY_ACK))) !== 0n;
    this.conn.send(code, payload, fds, ack ? 1 | 8 : 1);
    if (ack) {
      const r = await this.conn.reply();
      const status = new DataView(r.payload.buffer).getBigUint64(0, true);
      if (r.request !== code || status !== 0n) {
        throw new Error(`Request ${code} refused (${status})`);
      }
    }
  }

  /** Connects and runs the whole negotiation the way QEMU does. */
  static async start(path: string, opts: DriverOptions = {}): Promise<VirtioNetDriver> {
    const conn = RawFrontend.connect(path);
    const d = new VirtioNetDriver(conn, new DriverMemory((opts.memMiB ?? 16) * 1024 * 1024), opts);
    conn.send(Req.GET_FEATURES);
    const offered = new DataView((await conn.reply()).payload.buffer).getBigUint64(0, true);
    conn.send(Req.SET_OWNER);
    if (offered & (1n << BigInt(F.PROTOCOL_FEATURES))) {
      conn.send(Req.GET_PROTOCOL_FEATURES);
      const pf = new DataView((await conn.reply()).payload.buffer).getBigUint64(0, true);
      const want = pf &
        ((1n << BigInt(PF.MQ)) | (1n << BigInt(PF.REPLY_ACK)) | (1n << BigInt(PF.NET_MTU)) |
          (opts.protocol ?? 0n));
      conn.send(Req.SET_PROTOCOL_FEATURES, u64(want));
      d.protocol = want;
      if (want & (1n << BigInt(PF.MQ))) {
        conn.send(Req.GET_QUEUE_NUM);
        await conn.reply();
      }
    }
    let f = (1n << BigInt(F.VERSION_1)) | (1n << BigInt(F.INDIRECT_DESC)) |
      (1n << BigInt(F.EVENT_IDX)) |
      (1n << BigInt(F.PROTOCOL_FEATURES));
    if (opts.mrgRxbuf ?? true) f |= 1n << BigInt(F.MRG_RXBUF);
    d.features = (opts.features ?? f) & offered;
    await d.request(Req.SET_FEATURES, u64(d.features));
    const t = d.mem.table(opts.regions ?? 1);
    if (opts.addMemReg) {
      const n = new DataView(t.payload.buffer).getUint32(0, true);
      for (let i = 0; i < n; i++) {
        const one = new Uint8Array(40);
        one.set(t.payload.subarray(8 + 32 * i, 8 + 32 * (i + 1)), 8);
        await d.request(Req.ADD_MEM_REG, one, [t.fds[i]]);
      }
    } else {
      await d.request(Req.SET_MEM_TABLE, t.payload, t.fds);
    }
    for (const [i, q] of [d.rx, d.tx].entries()) {
      await d.request(Req.SET_VRING_NUM, vringState(i, q.size));
      await d.request(Req.SET_VRING_BASE, vringState(i, 0));
      const addr = new Uint8Array(40);
      const v = new DataView(addr.buffer);
      const real = { desc: UVA_BASE + q.desc, used: UVA_BASE + q.used, avail: UVA_BASE + q.avail };
      const a = opts.ringAddr?.(i, real) ?? real;
      v.setUint32(0, i, true);
      v.setBigUint64(8, BigInt(a.desc), true);
      v.setBigUint64(16, BigInt(a.used), true);
      v.setBigUint64(24, BigInt(a.avail), true);
      await d.request(Req.SET_VRING_ADDR, addr);
      await d.request(Req.SET_VRING_KICK, u64(i), [q.kick]);
      await d.request(Req.SET_VRING_CALL, u64(i), [q.call]);
      if (d.protocol !== 0n || (offered & (1n << BigInt(F.PROTOCOL_FEATURES)))) {
        await d.request(Req.SET_VRING_ENABLE, vringState(i, 1));
      }
    }
    if (opts.mtu && d.protocol & (1n << BigInt(PF.NET_MTU))) {
      await d.request(Req.NET_SET_MTU, u64(opts.mtu));
    }
    return d;
  }

  /** Whether MRG_RXBUF was negotiated. */
  get mergeable(): boolean {
    return (this.features & (1n << BigInt(F.MRG_RXBUF))) !== 0n;
  }

  /** Posts `count` RX buffers. */
  fillRx(count: number): void {
    for (let i = 0; i < count; i++) {
      const gpa = this.mem.alloc(this.#rxSize, 64);
      const head = this.rx.add([{ gpa, len: this.#rxSize, writable: true }]);
      this.#rxBufs.set(head, gpa);
    }
    this.rx.notify();
  }

  /**
   * Sends one frame after a zero 12-byte header (or `header`, hostile use). `split` cuts header+frame
   * into descriptors of these sizes; `indirect` uses an indirect table.
   */
  send(
    frame: Uint8Array,
    opts: { split?: number[]; indirect?: boolean; header?: Uint8Array } = {},
  ): void {
    const total = 12 + frame.length;
    const gpa = this.mem.alloc(total, 16);
    this.mem.bytes.fill(0, gpa, gpa + 12);
    if (opts.header) this.mem.bytes.set(opts.header.subarray(0, 12), gpa);
    this.mem.bytes.set(frame, gpa + 12);
    const sizes = opts.split ?? [total];
    const segs: Segment[] = [];
    let at = 0;
    for (const s of sizes) {
      const len = Math.min(s, total - at);
      if (len > 0) segs.push({ gpa: gpa + at, len, writable: false });
      at += len;
    }
    if (at < total) segs.push({ gpa: gpa + at, len: total - at, writable: false });
    this.tx.add(segs, opts.indirect);
    this.tx.notify();
  }

  /** Frames received so far (headers checked, mergeable buffers joined, buffers reposted). */
  receive(): Uint8Array[] {
    const frames: Uint8Array[] = [];
    let pending: Uint8Array[] = [];
    let expect = 0;
    for (const { id, len } of this.rx.takeUsed()) {
      const gpa = this.#rxBufs.get(id)!;
      this.#rxBufs.delete(id);
      this.rxWrites.push({ gpa, len });
      const bytes = this.mem.bytes.slice(gpa, gpa + len);
      if (expect === 0) {
        expect = this.mergeable ? new DataView(bytes.buffer).getUint16(10, true) : 1;
        pending = [bytes.subarray(12)];
      } else {
        pending.push(bytes);
      }
      if (--expect === 0) {
        const out = new Uint8Array(pending.reduce((s, p) => s + p.length, 0));
        let o = 0;
        for (const p of pending) (out.set(p, o), (o += p.length));
        frames.push(out);
      }
      const head = this.rx.add([{ gpa, len: this.#rxSize, writable: true }]);
      this.#rxBufs.set(head, gpa);
    }
    this.rx.notify();
    return frames;
  }

  /** Waits until `n` frames arrived (or the timeout); returns them. */
  async receiveAtLeast(n: number, timeoutMs = 20_000): Promise<Uint8Array[]> {
    const out: Uint8Array[] = [];
    const deadline = Date.now() + timeoutMs;
    while (out.length < n && Date.now() < deadline) {
      out.push(...this.receive());
      if (out.length < n) await sleep(5);
    }
    return out;
  }

  /**
   * SET_VRING_ADDR for ring `i` with its real addresses, VHOST_VRING_F_LOG
   * and log_guest_addr = the used ring's guest address when `log` (or
   * `logAddr` to log somewhere else, hostile use).
   */
  async setVringAddr(i: number, log: boolean, logAddr?: number): Promise<void> {
    const q = i === 0 ? this.rx : this.tx;
    const addr = new Uint8Array(40);
    const v = new DataView(addr.buffer);
    v.setUint32(0, i, true);
    v.setUint32(4, log ? 1 : 0, true);
    v.setBigUint64(8, BigInt(UVA_BASE + q.desc), true);
    v.setBigUint64(16, BigInt(UVA_BASE + q.used), true);
    v.setBigUint64(24, BigInt(UVA_BASE + q.avail), true);
    v.setBigUint64(32, BigInt(log ? logAddr ?? q.used : 0), true);
    await this.request(Req.SET_VRING_ADDR, addr);
  }

  /**
   * SET_LOG_BASE with `fd` (size and offset in the payload), the way QEMU
   * sends it: no need_reply, and it waits for the backend's reply.
   */
  async setLogBase(fd: number, size: number, offset = 0): Promise<void> {
    const p = new Uint8Array(16);
    const v = new DataView(p.buffer);
    v.setBigUint64(0, BigInt(size), true);
    v.setBigUint64(8, BigInt(offset), true);
    this.conn.send(Req.SET_LOG_BASE, p, [fd]);
    const r = await this.conn.reply();
    if (r.request !== Req.SET_LOG_BASE) throw new Error(`SET_LOG_BASE answered by ${r.request}`);
  }

  /** SET_FEATURES with VHOST_F_LOG_ALL set or cleared (migration on/off). */
  async setLogAll(on: boolean): Promise<void> {
    const f = on ? this.features | (1n << BigInt(F.LOG_ALL)) : this.features;
    await this.request(Req.SET_FEATURES, u64(f));
  }

  /** GET_VRING_BASE for both rings (stops them); returns the indices. */
  async stopRings(): Promise<number[]> {
    const out: number[] = [];
    for (const i of [0, 1]) {
      this.conn.send(Req.GET_VRING_BASE, vringState(i, 0));
      out.push(new DataView((await this.conn.reply()).payload.buffer).getUint32(4, true));
    }
    return out;
  }

  /** Disconnects and releases everything. */
  close(): void {
    this.conn.close();
    this.rx.close();
    this.tx.close();
    this.mem.close();
  }
}

/** "02:00:00:00:00:01" → bytes. */
export function macBytes(mac: string): number[] {
  return mac.split(":").map((h) => parseInt(h, 16));
}

/** An Ethernet frame with a recognisable payload. */
export function ethFrame(dst: string, src: string, payloadLen: number, fill = 0xa5): Uint8Array {
  const f = new Uint8Array(14 + payloadLen);
  f.set(macBytes(dst), 0);
  f.set(macBytes(src), 6);
  f[12] = 0x88;
  f[13] = 0xb5;
  for (let i = 0; i < payloadLen; i++) f[14 + i] = (fill + i) & 0xff;
  return f;
}
