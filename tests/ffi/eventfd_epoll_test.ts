import { assert, assertEquals } from "@std/assert";
import { eventfdCreate, eventfdRead, eventfdSignal, eventfdWrite } from "../../ffi/eventfd.ts";
import { Epoll } from "../../ffi/epoll.ts";
import { EPOLLIN } from "../../ffi/constants.ts";
import { closeAll } from "../../ffi/io.ts";

Deno.test("eventfd counts add up and reset on read", () => {
  const fd = eventfdCreate();
  assertEquals(eventfdRead(fd), 0, "empty counter reads as 0 (EAGAIN)");
  eventfdWrite(fd, 3);
  eventfdWrite(fd, 4);
  assert(eventfdSignal(fd));
  assertEquals(eventfdRead(fd), 8);
  assertEquals(eventfdRead(fd), 0);
  eventfdWrite(fd, 0xffff_fff0);
  assertEquals(eventfdRead(fd), 0xffff_fff0);
  closeAll([fd]);
});

Deno.test("epoll reports a ready eventfd with its token and times out when idle", async () => {
  const ep = new Epoll(8);
  const a = eventfdCreate();
  const b = eventfdCreate();
  ep.add(a, EPOLLIN, 7);
  ep.add(b, EPOLLIN, 0xfffffffe);
  assertEquals(ep.wait(0), 0, "nothing ready");
  const t0 = performance.now();
  assertEquals(ep.wait(50), 0, "sync wait times out");
  assert(performance.now() - t0 >= 45, "the sync wait really waited");
  assertEquals(await ep.waitAsync(30), 0, "async wait times out");

  eventfdWrite(b, 1);
  assertEquals(ep.wait(0), 1);
  assertEquals(ep.token(0), 0xfffffffe);
  assert(ep.events(0) & EPOLLIN);

  // The async wait wakes when another party signals while it sleeps.
  eventfdRead(b);
  const pending = ep.waitAsync(5000);
  setTimeout(() => eventfdWrite(a, 1), 20);
  const n = await pending;
  assert(n >= 1);
  const tokens = Array.from({ length: n }, (_, i) => ep.token(i));
  assert(tokens.includes(7), `tokens ${tokens}`);
  ep.remove(a);
  ep.remove(a); // removing twice is harmless
  assertEquals(ep.wait(0), 0, "a removed fd no longer reports");
  ep.close();
  closeAll([a, b]);
});
