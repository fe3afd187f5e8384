/**
 * The results chart: every system side by side, from the latest results.
 * Left, the testpmd loop (bench/results/loop-latest.json: vswitch, DPDK
 * io-forward, OVS-DPDK; Mpps per case); right, TCP between TCG guests
 * (bench:iperf: vswitch, Linux bridge, DPDK tso=1; Gbit/s per path, the
 * mean of both directions). bench:iperf runs may cover only some systems,
 * so each system's bars come from the newest iperf JSON that has it, and
 * the chart names that run's date. Hand-written SVG, no dependency.
 *
 * `deno run -A bench/chart.ts` rewrites bench/results/chart-latest.svg;
 * bench/loop.ts does it after every run.
 *
 * @module
 */

const LOOP_SYSTEMS = [
  { key: "vswitch", label: "vswitch", color: "#2b7bb9" },
  { key: "dpdk", label: "DPDK vhost io-fwd", color: "#8c8c8c" },
  { key: "ovs-dpdk", label: "OVS-DPDK NORMAL", color: "#e0a030" },
];
const IPERF_SYSTEMS = [
  { key: "vswitch", label: "vswitch", color: "#2b7bb9" },
  { key: "bridge", label: "Linux bridge", color: "#4caf50" },
  { key: "dpdk", label: "DPDK io-fwd tso=1", color: "#8c8c8c" },
];

interface LoopJson {
  date: string;
  cases: { case: string; mpps: Record<string, number> }[];
}
interface IperfJson {
  date: string;
  rows: { path: string; title: string; system: string; forward: number[]; reverse: number[] }[];
}

/** A group of bars. */
interface Group {
  label: string;
  values: (number | null)[];
}

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;");
const mean = (xs: number[]) => xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN;

// One bar panel at (x, y), w × h, with its own axis.
function panel(
  x: number,
  y: number,
  w: number,
  h: number,
  title: string,
  unit: string,
  groups: Group[],
  series: { label: string; color: string }[],
): string {
  const max = Math.max(0.001, ...groups.flatMap((g) => g.values.map((v) => v ?? 0)));
  const step = niceStep(max / 5);
  const top = Math.ceil(max / step) * step;
  const plotTop = y + 54, plotBottom = y + h - 40, plotH = plotBottom - plotTop;
  const left = x + 44, plotW = w - 54;
  const parts: string[] = [];
  parts.push(
    `<text x="${x + w / 2}" y="${y + 16}" font-size="14" font-weight="bold" ` +
      `text-anchor="middle">${esc(title)}</text>`,
  );
  series.forEach((s, i) => {
    const lx = left + i * (plotW / series.length);
    parts.push(
      `<rect x="${lx}" y="${y + 28}" width="11" height="11" fill="${s.color}"/>` +
        `<text x="${lx + 15}" y="${y + 38}" font-size="11">${esc(s.label)}</text>`,
    );
  });
  for (let v = 0; v <= top + 1e-9; v += step) {
    const gy = plotBottom - (v / top) * plotH;
    parts.push(
      `<line x1="${left}" y1="${gy}" x2="${left + plotW}" y2="${gy}" stroke="#e4e4e4"/>` +
        `<text x="${left - 5}" y="${gy + 4}" font-size="10" text-anchor="end">${
          Number(v.toFixed(2))
        }</text>`,
    );
  }
  parts.push(
    `<text x="${x + 10}" y="${(plotTop + plotBottom) / 2}" font-size="11" ` +
      `text-anchor="middle" transform="rotate(-90 ${x + 10} ${(plotTop + plotBottom) / 2})">${
        esc(unit)
      }</text>`,
  );
  const gw = plotW / groups.length;
  const bw = (gw - 16) / series.length;
  groups.forEach((g, gi) => {
    const gx = left + gi * gw + 8;
    g.values.forEach((v, si) => {
      const bx = gx + si * bw;
      if (v === null || !Number.isFinite(v)) {
        parts.push(
          `<text x="${bx + bw / 2}" y="${plotBottom - 4}" font-size="9" ` +
            `text-anchor="middle" fill="#999">n/a</text>`,
        );
        return;
      }
      const bh = (v / top) * plotH;
      parts.push(
        `<rect x="${bx + 1}" y="${plotBottom - bh}" width="${bw - 2}" height="${bh}" fill="${
          series[si].color
        }"/>` +
          `<text x="${bx + bw / 2}" y="${plotBottom - bh - 3}" font-size="9" ` +
          `text-anchor="middle">${v.toFixed(v >= 10 ? 1 : 2)}</text>`,
      );
    });
    parts.push(
      `<text x="${gx + (gw - 16) / 2}" y="${plotBottom + 15}" font-size="11" ` +
        `text-anchor="middle">${esc(g.label)}</text>`,
    );
  });
  parts.push(
    `<line x1="${left}" y1="${plotBottom}" x2="${left + plotW}" y2="${plotBottom}" ` +
      `stroke="black"/>`,
  );
  return parts.join("");
}

function niceStep(raw: number): number {
  const p = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}

function readJson<T>(path: string): T | null {
  try {
    return JSON.parse(Deno.readTextFileSync(path)) as T;
  } catch {
    return null;
  }
}

/** Each iperf system's rows from the newest run that measured it. */
function iperfBySystem(dir: string): Map<string, IperfJson> {
  const files = [...Deno.readDirSync(dir)]
    .map((e) => e.name)
    .filter((n) => /^iperf-\d.*\.json$/.test(n))
    .sort()
    .reverse();
  const out = new Map<string, IperfJson>();
  for (const name of ["iperf-latest.json", ...files]) {
    const j = readJson<IperfJson>(`${dir}/${name}`);
    if (j === null) continue;
    for (const s of IPERF_SYSTEMS) {
      if (!out.has(s.key) && j.rows.some((r) => r.system === s.key)) out.set(s.key, j);
    }
  }
  return out;
}

/** The chart's SVG text, from the results in `dir`. */
export function chartSvg(dir: string): string {
  const W = 1100, H = 420;
  const loop = readJson<LoopJson>(`${dir}/loop-latest.json`);
  const loopGroups: Group[] = (loop?.cases ?? []).map((c) => ({
    label: c.case,
    values: LOOP_SYSTEMS.map((s) => c.mpps[s.key] ?? null),
  }));
  const iperf = iperfBySystem(dir);
  const paths: { path: string; title: string }[] = [];
  for (const j of iperf.values()) {
    for (const r of j.rows) {
      if (!paths.some((p) => p.path === r.path)) paths.push({ path: r.path, title: r.path });
    }
  }
  const iperfGroups: Group[] = paths.map((p) => ({
    label: p.title,
    values: IPERF_SYSTEMS.map((s) => {
      const row = iperf.get(s.key)?.rows.find((r) => r.system === s.key && r.path === p.path);
      if (!row || row.forward.length + row.reverse.length === 0) return null;
      return mean([...row.forward, ...row.reverse]);
    }),
  }));
  const dates = IPERF_SYSTEMS.filter((s) => iperf.has(s.key))
    .map((s) => `${s.key} ${iperf.get(s.key)!.date.slice(0, 16).replace("T", " ")}`)
    .join(", ");
  const note1 = `loop: bench:loop ${
    loop ? loop.date.slice(0, 16).replace("T", " ") : "(no run)"
  } UTC, same run for all systems; 64B-4port is two pairs (sum shown)`;
  const note2 = `TCP: bench:iperf, two TCG guests, mean of both directions; runs: ${dates} UTC`;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" ` +
    `font-family="DejaVu Sans, sans-serif">` +
    `<rect width="100%" height="100%" fill="white"/>` +
    panel(
      10,
      8,
      560,
      H - 40,
      "testpmd loop (frames through the switch)",
      "Mpps",
      loopGroups,
      LOOP_SYSTEMS,
    ) +
    panel(590, 8, 500, H - 40, "iperf3 TCP between guests", "Gbit/s", iperfGroups, IPERF_SYSTEMS) +
    `<text x="14" y="${H - 20}" font-size="10" fill="#444">${esc(note1)}</text>` +
    `<text x="14" y="${H - 7}" font-size="10" fill="#444">${esc(note2)}</text>` +
    `</svg>\n`;
}

/** Writes `dir`/chart-latest.svg. */
export function writeChart(dir: string): void {
  Deno.writeTextFileSync(`${dir}/chart-latest.svg`, chartSvg(dir));
}

if (import.meta.main) {
  const dir = new URL("./results", import.meta.url).pathname;
  writeChart(dir);
  console.log(`${dir}/chart-latest.svg`);
}
