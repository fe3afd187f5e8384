/**
 * Hostile migration and hotplug messages: dirty logs too small, past their
 * file, not files, logged beyond their end, replaced while traffic flows;
 * ADD_MEM_REG overlapping, beyond the slots, with a bad fd or none, or
 * without its feature. `Stage.runCase` adds the usual promises: the good
 * guests kept forwarding, the switch is up, nothing the attacker sent is
 * left open or mapped.
 */
import { assert, assertEquals } from "@std/assert";
import { ftruncate, type Mapping, memfdCreate, mmap, munmap } from "../../ffi/memory.ts";
import { eventfdCreate } from "../../ffi/eventfd.ts";
import { closeAll } from "../../ffi/io.ts";
import { ethFrame, PF, Req, UVA_BASE } from "../helpers/frontend.ts";
import { A, BAD, type Case, hostileTest, sleep } from "./harness.ts";

const bitOf = (n: number) => 1n << BigInt(n);
const MiB = 1 << 20;
/** 16 MiB of guest memory need 512 bytes of log (4 KiB pages, 8 per byte). */
const LOG_16M = 512;

/** A memfd of `size` bytes (mapped here when `map`, to read what the switch marked). */
function memfd(size: number): number {
  const fd = memfdCreate("hostile-log");
  ftruncate(fd, size);
  return fd;
}

function logPayload(size: number, offset = 0): Uint8Array {
  const p = new Uint8Array(16);
  const v = new DataView(p.buffer);
  v.setBigUint64(0, BigInt(size), true);
  v.setBigUint64(8, BigInt(offset), true);
  return p;
}

function memReg(gpa: number, size: number, uva: number): Uint8Array {
  const p = new Uint8Array(40);
  const v = new DataView(p.buffer);
  [gpa, size, uva, 0].forEach((x, i) => v.setBigUint64(8 + 8 * i, BigInt(x), true));
  return p;
}

function inode(fd: number): number {
  return Deno.statSync(`/proc/self/fd/${fd}`).ino!;
}

const LOGGING = { protocol: bitOf(PF.LOG_SHMFD), memMiB: 16 };
const HOTPLUG = { protocol: bitOf(PF.CONFIGURE_MEM_SLOTS), addMemReg: true, memMiB: 16 };

const cases: Case[] = [
  {
    item: 14,
    name: "SET_LOG_FD without LOG_SHMFD",
    run: async (s) => {
      const g = await s.guest();
      const fd = eventfdCreate();
      g.conn.send(Req.SET_LOG_FD, new Uint8Array(0), [fd]);
      closeAll([fd]);
      await s.closedWith(g.conn, /SET_LOG_FD: LOG_SHMFD not negotiated/);
    },
  },
  {
    item: 7,
    name: "a dirty log smaller than the guest's memory",
    run: async (s) => {
      const g = await s.guest(LOGGING);
      const fd = memfd(4096);
      g.conn.send(Req.SET_LOG_BASE, logPayload(64), [fd]);
      closeAll([fd]);
      await s.closedWith(g.conn, /dirty log of 64 bytes: guest memory up to 0x1000000 needs 512/);
    },
  },
  {
    item: 7,
    name: "a dirty log whose offset + size run past the end of its file",
    run: async (s) => {
      const g = await s.guest(LOGGING);
      const fd = memfd(4096);
      g.conn.send(Req.SET_LOG_BASE, logPayload(LOG_16M, 4000), [fd]);
      closeAll([fd]);
      await s.closedWith(g.conn, /offset 4000 \+ size 512 beyond the file's 4096 bytes/);
    },
  },
  {
    item: 4,
    name: "a dirty log fd that is not a file (an eventfd), and one with no fd at all",
    run: async (s) => {
      const g = await s.guest(LOGGING);
      const fd = eventfdCreate();
      g.conn.send(Req.SET_LOG_BASE, logPayload(LOG_16M), [fd]);
      closeAll([fd]);
      await s.closedWith(g.conn, /dirty log: fd is not a regular file/);
      for (let i = 0; i < 100 && (await s.sp.stats()).bad.connected; i++) await sleep(10);
      const h = await s.guest(LOGGING);
      h.conn.send(Req.SET_LOG_BASE, logPayload(LOG_16M));
      await s.closedWith(h.conn, /SET_LOG_BASE: 0 fds, expected 1/);
    },
  },
  {
    item: 19,
    name: "a used ring logged beyond the end of the log: marks dropped and counted, port kept",
    run: async (s) => {
      const g = await s.guest(LOGGING);
      g.fillRx(32);
      const fd = memfd(4096);
      const map: Mapping = mmap(fd, 4096);
      try {
        await g.setLogBase(fd, LOG_16M);
        await g.setLogAll(true);
        await g.setVringAddr(0, true, 2 ** 40); // log_guest_addr far beyond 16 MiB
        for (let i = 0; i < 10; i++) s.da.send(ethFrame(BAD, A, 100, i));
        assertEquals((await g.receiveAtLeast(10)).length, 10);
        assert(await s.until("bad", "dirtyLogBeyond", 1) >= 1, "clamped marks are counted");
        const bits = new Uint8Array(map.buffer);
        const page = Math.floor(g.rxWrites[0].gpa / 4096);
        assert(bits[page >> 3] & (1 << (page & 7)), "payload pages are still marked");
        assert((await s.sp.stats()).bad.connected, "the port stays");
      } finally {
        munmap(map);
        closeAll([fd]);
      }
    },
  },
  {
    item: 9,
    name:
      "the dirty log replaced 20 times while traffic flows: old logs unmapped, the last one used",
    run: async (s) => {
      const g = await s.guest(LOGGING);
      g.fillRx(64);
      const fds: number[] = [];
      try {
        for (let i = 0; i < 20; i++) {
          const fd = memfd(4096);
          fds.push(fd);
          await g.setLogBase(fd, LOG_16M);
          if (i === 0) await g.setLogAll(true);
          s.da.send(ethFrame(BAD, A, 100, i));
          s.da.send(ethFrame(BAD, A, 1000, i));
          g.receive();
        }
        await g.receiveAtLeast(40 - g.rxWrites.length);
        assertEquals(g.rxWrites.length, 40);
        for (const fd of fds.slice(0, -1)) {
          assertEquals(s.sp.mapsOf(inode(fd)).length, 0, "a replaced log is unmapped");
        }
        assertEquals(s.sp.mapsOf(inode(fds[19])).length, 1, "the current log is mapped");
        const map = mmap(fds[19], 4096);
        const bits = new Uint8Array(map.buffer);
        const page = Math.floor(g.rxWrites[39].gpa / 4096);
        const marked = (bits[page >> 3] & (1 << (page & 7))) !== 0;
        munmap(map);
        assert(marked, "the last frame was marked in the last log");
      } finally {
        closeAll(fds);
      }
    },
  },
  {
    item: 14,
    name: "ADD_MEM_REG without CONFIGURE_MEM_SLOTS",
    run: async (s) => {
      const g = await s.guest();
      const fd = memfd(MiB);
      g.conn.send(Req.ADD_MEM_REG, memReg(1 << 30, MiB, UVA_BASE + (1 << 30)), [fd]);
      closeAll([fd]);
      await s.closedWith(g.conn, /ADD_MEM_REG: CONFIGURE_MEM_SLOTS not negotiated/);
    },
  },
  {
    item: 8,
    name: "ADD_MEM_REG overlapping a region already mapped",
    run: async (s) => {
      const g = await s.guest(HOTPLUG);
      const fd = memfd(16 * MiB);
      g.conn.send(Req.ADD_MEM_REG, memReg(8 * MiB, 16 * MiB, UVA_BASE + (1 << 30)), [fd]);
      closeAll([fd]);
      await s.closedWith(g.conn, /regions new and 0: guest-physical ranges overlap/);
    },
  },
  {
    item: 5,
    name: "ADD_MEM_REG beyond the 32 slots",
    run: async (s) => {
      const g = await s.guest(HOTPLUG);
      const fd = memfd(4096);
      try {
        for (let i = 1; i < 32; i++) {
          const gpa = (1 << 30) + i * 4096;
          await g.request(Req.ADD_MEM_REG, memReg(gpa, 4096, UVA_BASE + gpa), [fd]);
        }
        const gpa = 1 << 29;
        g.conn.send(Req.ADD_MEM_REG, memReg(gpa, 4096, UVA_BASE + gpa), [fd]);
        await s.closedWith(g.conn, /all 32 slots in use/);
      } finally {
        closeAll([fd]);
      }
    },
  },
  {
    item: 7,
    name: "ADD_MEM_REG with an eventfd, and with no fd",
    run: async (s) => {
      const g = await s.guest(HOTPLUG);
      const fd = eventfdCreate();
      g.conn.send(Req.ADD_MEM_REG, memReg(1 << 30, MiB, UVA_BASE + (1 << 30)), [fd]);
      closeAll([fd]);
      await s.closedWith(g.conn, /fd is not a regular file/);
      for (let i = 0; i < 100 && (await s.sp.stats()).bad.connected; i++) await sleep(10);
      const h = await s.guest(HOTPLUG);
      h.conn.send(Req.ADD_MEM_REG, memReg(1 << 30, MiB, UVA_BASE + (1 << 30)));
      await s.closedWith(h.conn, /ADD_MEM_REG: 0 fds, expected 1/);
    },
  },
];

hostileTest("hostile migration and hotplug messages: the attacker's port only", cases);
