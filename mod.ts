/**
 * vswitch: a userspace virtio-net switch on Deno. QEMU guests attach over
 * vhost-user, the host over a TAP; a learning switch forwards between them.
 *
 * @example Embed the switch
 * ```ts ignore
 * import { Switch } from "./mod.ts";
 *
 * await using sw = await Switch.create({ fdbAgingSeconds: 300 });
 * await sw.addVhostServer("vm1", "/tmp/vm1.sock"); // QEMU connects here
 * await sw.addVhostClient("vm2", "/tmp/vm2.sock"); // QEMU listens here
 * await sw.addTap("host", "vs-tap0");
 * for (const p of sw.stats()) console.log(p.name, p.counters.rxPackets);
 * console.log(await sw.fdb());
 * sw.subscribe((e) => console.log(e.time, e.port, e.type, e.reason ?? ""));
 * await sw.flushFdb("vm1");
 * ```
 *
 * @module
 */

export {
  type FdbRow,
  type PortOptions,
  type PortStats,
  Switch,
  type SwitchEvent,
  type SwitchOptions,
} from "./src/switch/switch.ts";
export type { CaptureDirection, CaptureRequest, CaptureStatus } from "./src/switch/capture.ts";
export type { Port, TapPort, VhostPort } from "./src/switch/ports.ts";
export { COUNTER_NAMES, type CounterName } from "./src/switch/counters.ts";
export { SysError } from "./ffi/errno.ts";
export { type LevelName, type Logger, logger, type LogOptions, setupLogging } from "./src/log.ts";
export type { FdbEntry } from "./src/switch/fdb.ts";
