/**
 * The demo (`deno task demo`): two QEMU guests and the host TAP bridged by
 * the switch, pinging each other. The switch itself lands with the
 * end-to-end issue; until then this prints the plan.
 *
 * @module
 */

console.log(`vswitch demo — what it will do:
  1. build a small guest image (Debian cloud kernel + busybox initramfs)
  2. start the switch with a TAP port and two vhost-user ports
  3. boot two QEMU guests (TCG) whose virtio-net NICs use those ports
  4. ping guest <-> guest and guest <-> host, printing per-port counters
  5. clean up every process, socket, TAP and namespace
The switch core is not built yet: see the README's status section.`);
