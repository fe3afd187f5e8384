/**
 * The version this build reports (`vswitch --version`, the control API,
 * `vswitch_build_info`). Kept equal to deno.json's "version".
 *
 * @module
 */

/** The vswitch version. */
export const VERSION = "0.1.0";
