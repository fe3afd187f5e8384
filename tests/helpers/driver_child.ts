/**
 * A frontend in its own process, so a test can SIGKILL it mid-traffic the
 * way a guest's QEMU dies (CHECKLIST item 29): connects to a vhost-user
 * socket, negotiates, then sends a frame every millisecond until killed.
 *
 * Usage: deno run -A driver_child.ts SOCKET DST_MAC SRC_MAC
 *
 * @module
 */

import { ethFrame, VirtioNetDriver } from "./frontend.ts";

const [path, dst, src] = Deno.args;
const d = await VirtioNetDriver.start(path, { memMiB: 64 });
d.fillRx(64);
console.log("running");
for (;;) {
  d.send(ethFrame(dst, src, 46, 0x33));
  d.tx.takeUsed();
  d.receive();
  await new Promise((r) => setTimeout(r, 1));
}
