/**
 * vswitch: a userspace virtio-net switch on Deno. QEMU guests attach over
 * vhost-user, the host over a TAP; a learning switch forwards between them.
 *
 * The library API (switch, ports, counters) is built on the libc binding
 * re-exported here.
 *
 * @example
 * ```ts
 * import { SysError } from "./mod.ts";
 * console.log(SysError.name);
 * ```
 *
 * @module
 */

export { SysError } from "./ffi/errno.ts";
export { type LevelName, logger, type LogOptions, setupLogging } from "./src/log.ts";
