/**
 * The per-port counter table `--stats` prints.
 *
 * @module
 */

import type { PortStats } from "../switch/switch.ts";

const COLUMNS: [string, (p: PortStats) => string | number][] = [
  ["port", (p) => p.name],
  ["type", (p) => p.type],
  ["up", (p) => (p.connected ? "yes" : "no")],
  ["rx pkts", (p) => p.counters.rxPackets],
  ["rx bytes", (p) => p.counters.rxBytes],
  ["tx pkts", (p) => p.counters.txPackets],
  ["tx bytes", (p) => p.counters.txBytes],
  ["drops", (p) => drops(p)],
  ["irqs", (p) => p.counters.interrupts],
];

/** Every drop counter summed. */
export function drops(p: PortStats): number {
  const c = p.counters;
  return c.dropNoBuffer + c.dropTooBig + c.dropRunt + c.dropBadDescriptor + c.dropBadHeader +
    c.dropSameport + c.dropTapError;
}

/** Drop counters that are non-zero, as "name=value" pairs. */
export function dropDetail(p: PortStats): string {
  return Object.entries(p.counters)
    .filter(([k, v]) => k.startsWith("drop") && v > 0)
    .map(([k, v]) => `${k.slice(4)}=${v}`)
    .join(" ");
}

/** Formats the table (rx = received by the switch from the port). */
export function formatStats(ports: PortStats[]): string {
  const rows = ports.map((p) => COLUMNS.map(([, f]) => String(f(p))));
  const head = COLUMNS.map(([h]) => h);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i < 3 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ");
  const details = ports.map((p) => [p.name, dropDetail(p)]).filter(([, d]) => d);
  return [line(head), ...rows.map(line), ...details.map(([n, d]) => `  ${n} drops: ${d}`)].join(
    "\n",
  );
}
