import { assertEquals, assertThrows } from "@std/assert";
import {
  addSeals,
  fstat,
  ftruncate,
  getSeals,
  memfdCreate,
  mmap,
  munmap,
} from "../../ffi/memory.ts";
import {
  closeFd,
  IovecArray,
  readFd,
  readInto,
  readvFd,
  writeFd,
  writeFrom,
  writevFd,
} from "../../ffi/io.ts";
import { socketPair } from "../../ffi/socket.ts";
import { F_SEAL_SHRINK, MFD_CLOEXEC, S_IFMT, S_IFREG } from "../../ffi/constants.ts";
import { SysError } from "../../ffi/errno.ts";

Deno.test("memfd: size, seals, mapping at an offset", () => {
  const fd = memfdCreate("t-mem");
  ftruncate(fd, 3 * 4096);
  const st = fstat(fd);
  assertEquals(st.size, 3 * 4096);
  assertEquals(st.mode & S_IFMT, S_IFREG);
  assertEquals(getSeals(fd) & F_SEAL_SHRINK, 0);
  addSeals(fd, F_SEAL_SHRINK);
  assertEquals(getSeals(fd) & F_SEAL_SHRINK, F_SEAL_SHRINK);
  assertThrows(() => ftruncate(fd, 4096), SysError, "EPERM");

  const whole = mmap(fd, 3 * 4096);
  const tail = mmap(fd, 4096, 2 * 4096); // offset honoured
  new Uint8Array(whole.buffer)[2 * 4096 + 5] = 99;
  assertEquals(new Uint8Array(tail.buffer)[5], 99);
  munmap(tail);
  munmap(whole);
  closeFd(fd);

  const unsealable = memfdCreate("t-nosealing", MFD_CLOEXEC);
  assertEquals(getSeals(unsealable) & 1, 1, "F_SEAL_SEAL set when sealing is not allowed");
  closeFd(unsealable);
  const [s1, s2] = socketPair();
  assertEquals(getSeals(s1), -1, "not a memfd");
  closeFd(s1);
  closeFd(s2);
});

Deno.test("read/write/readv/writev into and out of mmap'd memory", () => {
  const fd = memfdCreate("t-io");
  ftruncate(fd, 4096);
  const m = mmap(fd, 4096);
  const mem = new Uint8Array(m.buffer);
  const [a, b] = socketPair();

  mem.set([10, 11, 12, 13], 1000);
  assertEquals(writeFrom(a, m.address + 1000, 4), 4);
  const got = new Uint8Array(4);
  assertEquals(readFd(b, got), 4);
  assertEquals([...got], [10, 11, 12, 13]);

  writeFd(a, new Uint8Array([20, 21, 22]));
  assertEquals(readInto(b, m.address + 2000, 3), 3);
  assertEquals([...mem.subarray(2000, 2003)], [20, 21, 22]);

  // writev gathers from two places in the mapping; readv scatters back.
  mem.set([1, 2], 100);
  mem.set([3, 4, 5], 300);
  const iov = new IovecArray(4);
  iov.push(m.address + 100, 2);
  iov.push(m.address + 300, 3);
  assertEquals(writevFd(a, iov), 5);
  iov.clear();
  iov.push(m.address + 3000, 1);
  iov.push(m.address + 3500, 4);
  assertEquals(readvFd(b, iov), 5);
  assertEquals(mem[3000], 1);
  assertEquals([...mem.subarray(3500, 3504)], [2, 3, 4, 5]);

  munmap(m);
  for (const f of [fd, a, b]) closeFd(f);
});
