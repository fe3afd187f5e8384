/**
 * Command-line options that shape a ForwardRig (bench/heap.ts,
 * bench/memsize.ts): guests, memory per guest, where the buffers sit, and
 * how copy windows are built.
 *
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";
import { type ForwardRigOptions, RIG_LAYOUT_BYTES } from "./harness.ts";
import type { WindowOptions } from "../src/virtio/address_window.ts";

/** A size such as 4096, 256m, 4g (binary units). */
export function parseSize(text: string): number {
  const m = /^(\d+)([kmg]?)$/i.exec(text.trim());
  if (m === null) throw new Error(`Cannot read size "${text}": use a number with k, m or g`);
  const unit = { "": 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[m[2].toLowerCase()]!;
  return Number(m[1]) * unit;
}

/**
 * Where the buffers go: "top" (the last 4 MiB-aligned place they fit in,
 * above 4 GiB guest-physical for memory of more than 2 GiB), "bottom" (0)
 * or a byte offset.
 */
export function bufferOffset(at: string, memSize: number | undefined): number {
  if (at === "bottom") return 0;
  if (at === "top") {
    const size = memSize ?? RIG_LAYOUT_BYTES;
    const step = 4 * 1024 * 1024;
    return Math.max(0, Math.floor((size - RIG_LAYOUT_BYTES) / step) * step);
  }
  return parseSize(at);
}

/**
 * Rig and window options from `--guests N --mem SIZE --at top|bottom|OFFSET
 * --window auto|chunked|legacy --max-pairs N` (0: no pair windows, copies
 * between chunks take the word loop).
 */
export function rigArgs(
  args: string[],
): { positional: string[]; rig: Omit<ForwardRigOptions, "frameLen">; window: WindowOptions } {
  const a = parseArgs(args, {
    string: ["guests", "mem", "at", "window", "max-pairs"],
    default: { guests: "2", at: "bottom", window: "auto" },
  });
  const memSize = a.mem === undefined ? undefined : parseSize(a.mem);
  const mode = a.window as WindowOptions["mode"];
  if (mode !== "auto" && mode !== "chunked" && mode !== "packed" && mode !== "legacy") {
    throw new Error(`Cannot use window mode "${a.window}": auto, chunked, packed or legacy`);
  }
  return {
    positional: a._.map(String),
    rig: { guests: Number(a.guests), memSize, bufAt: bufferOffset(a.at, memSize) },
    window: { mode, maxPairs: a["max-pairs"] === undefined ? undefined : Number(a["max-pairs"]) },
  };
}
