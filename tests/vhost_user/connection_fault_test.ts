/**
 * CHECKLIST item 33 in the control plane: an exception that is not a
 * protocol error (a bug in a backend, a failed dataplane command) while
 * serving one connection closes that connection only, with every fd it
 * brought, and the device is reset; a connection next to it keeps working.
 */
import { assert, assertEquals, assertMatch } from "@std/assert";
import { socketPair } from "../../ffi/socket.ts";
import { closeAll } from "../../ffi/io.ts";
import { ftruncate, memfdCreate } from "../../ffi/memory.ts";
import { Connection } from "../../src/vhost_user/connection.ts";
import { type DeviceBackend, VhostUserDevice } from "../../src/vhost_user/device.ts";
import { Reactor } from "../../src/vhost_user/reactor.ts";
import { logger } from "../../src/log.ts";
import { RawFrontend, Req } from "../helpers/frontend.ts";
import { openFdCount } from "../helpers/env.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

function backend(failOnMemory: boolean): DeviceBackend {
  return {
    setMemory: (regions) => {
      if (failOnMemory && regions !== null) {
        return Promise.reject(new TypeError("backend bug: cannot read property of undefined"));
      }
      return Promise.resolve();
    },
    startQueue: () => Promise.resolve(),
    stopQueue: () => Promise.resolve(0),
    setCall: () => Promise.resolve(),
    setMtu: () => Promise.resolve(),
    setLog: () => Promise.resolve(),
    inject: () => Promise.resolve(),
  };
}

Deno.test({
  name: "a backend exception closes only its own connection and releases its fds",
  ...opts,
  async fn() {
    const fdsBefore = openFdCount();
    const reactor = new Reactor();
    const [badOurs, badPeer] = socketPair(true);
    const [goodOurs, goodPeer] = socketPair(true);
    const bad = new Connection(
      badOurs,
      new VhostUserDevice(backend(true), logger("t", "bad")),
      reactor,
      logger("t", "bad"),
    );
    const good = new Connection(
      goodOurs,
      new VhostUserDevice(backend(false), logger("t", "good")),
      reactor,
      logger("t", "good"),
    );
    const fb = new RawFrontend(badPeer), fg = new RawFrontend(goodPeer);
    try {
      const memfd = memfdCreate("conn-fault");
      ftruncate(memfd, 1 << 20);
      const table = new Uint8Array(40);
      const v = new DataView(table.buffer);
      v.setUint32(0, 1, true);
      v.setBigUint64(16, 1n << 20n, true);
      v.setBigUint64(24, 0x7f00_0000_0000n, true);
      fb.send(Req.SET_MEM_TABLE, table, [memfd]);
      closeAll([memfd]);
      assert(await fb.closedByPeer(), "the faulty connection was closed");
      const reason = await bad.closed;
      assertMatch(reason, /^Internal error: TypeError: backend bug/);
      fg.send(Req.GET_FEATURES);
      assertEquals((await fg.reply()).request, Req.GET_FEATURES, "the other one still answers");
    } finally {
      fb.close();
      fg.close();
      await good.close("test over");
      await reactor.close();
    }
    assertEquals(openFdCount(), fdsBefore, "the memfd, sockets and mapping fds are all closed");
  },
});
