import { assert, assertEquals, assertThrows } from "@std/assert";
import { acceptUnix, connectUnix, listenUnix, MessageIo, socketPair } from "../../ffi/socket.ts";
import { ftruncate, memfdCreate, mmap, munmap } from "../../ffi/memory.ts";
import { closeAll, closeFd, unlinkIfExists } from "../../ffi/io.ts";
import { SysError } from "../../ffi/errno.ts";
import { openFdCount } from "../helpers/env.ts";

Deno.test("SCM_RIGHTS: two memfds cross a socketpair and share bytes both ways", () => {
  const [a, b] = socketPair();
  const fdA = memfdCreate("t-a");
  const fdB = memfdCreate("t-b");
  ftruncate(fdA, 4096);
  ftruncate(fdB, 4096);
  const sender = new MessageIo(8);
  const receiver = new MessageIo(8);
  const payload = new Uint8Array([1, 2, 3, 4, 5]);
  assertEquals(sender.send(a, payload, payload.length, [fdA, fdB]), 5);
  const buf = new Uint8Array(16);
  const got = receiver.recv(b, buf)!;
  assertEquals(got.bytes, 5);
  assertEquals([...buf.subarray(0, 5)], [1, 2, 3, 4, 5]);
  assertEquals(got.fds.length, 2);
  assert(got.fds[0] !== fdA && got.fds[1] !== fdB, "received fds are new descriptors");

  const mine = mmap(fdA, 4096);
  const theirs = mmap(got.fds[0], 4096);
  new Uint8Array(mine.buffer)[100] = 0xab;
  assertEquals(new Uint8Array(theirs.buffer)[100], 0xab);
  new Uint8Array(theirs.buffer)[200] = 0xcd;
  assertEquals(new Uint8Array(mine.buffer)[200], 0xcd);
  const mineB = mmap(fdB, 4096);
  const theirsB = mmap(got.fds[1], 4096);
  new Uint8Array(theirsB.buffer)[7] = 0x77;
  assertEquals(new Uint8Array(mineB.buffer)[7], 0x77);
  for (const m of [mine, theirs, mineB, theirsB]) munmap(m);
  closeAll([a, b, fdA, fdB, ...got.fds]);
});

Deno.test("SCM_RIGHTS: more fds than the control buffer holds is MSG_CTRUNC, arrived fds closed", () => {
  const [a, b] = socketPair();
  const sent = Array.from({ length: 6 }, (_, i) => memfdCreate(`t-${i}`));
  new MessageIo(8).send(a, new Uint8Array([9]), 1, sent);
  const before = openFdCount();
  const small = new MessageIo(2);
  const err = assertThrows(() => small.recv(b, new Uint8Array(4)), Error);
  assert(err.message.includes("MSG_CTRUNC"), err.message);
  assertEquals(openFdCount(), before, "every fd that arrived was closed");
  closeAll([a, b, ...sent]);
});

Deno.test("recv returns null on EAGAIN and 0 bytes at EOF", () => {
  const [a, b] = socketPair(true);
  const io = new MessageIo(1);
  assertEquals(io.recv(b, new Uint8Array(4)), null);
  closeFd(a);
  assertEquals(io.recv(b, new Uint8Array(4))!.bytes, 0);
  closeFd(b);
});

Deno.test("listen / connect / accept4 on a socket path", () => {
  const path = `/tmp/vswitch-test-${Deno.pid}.sock`;
  unlinkIfExists(path);
  const l = listenUnix(path);
  assertEquals(acceptUnix(l), -1, "nothing pending yet");
  const c = connectUnix(path);
  const s = acceptUnix(l);
  assert(s >= 0);
  const io = new MessageIo(1);
  io.send(c, new Uint8Array([42]));
  const buf = new Uint8Array(1);
  assertEquals(io.recv(s, buf)!.bytes, 1);
  assertEquals(buf[0], 42);
  closeAll([c, s, l]);
  unlinkIfExists(path);
});

Deno.test("failing calls throw SysError with the errno name", () => {
  const e1 = assertThrows(() => closeFd(-1), SysError);
  assertEquals(e1.code, "EBADF");
  assertEquals(e1.syscall, "close");
  assertEquals(e1.errno, 9);
  const e2 = assertThrows(() => connectUnix("/tmp/vswitch-no-such-socket"), SysError);
  assertEquals(e2.code, "ENOENT");
  assertEquals(e2.syscall, "connect");
  assert(e2.message.includes("/tmp/vswitch-no-such-socket"), e2.message);
  const path = `/tmp/vswitch-test-refused-${Deno.pid}.sock`;
  const l = listenUnix(path);
  closeFd(l); // the path stays, nobody listens
  const e3 = assertThrows(() => connectUnix(path), SysError);
  assertEquals(e3.code, "ECONNREFUSED");
  unlinkIfExists(path);
});
