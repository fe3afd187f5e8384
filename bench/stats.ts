/**
 * The statistics the benchmarks report with (one definition for all of
 * them): the median of a set of runs, failed runs (null) left out.
 *
 * @module
 */

/** The median of the numbers in `xs` (nulls are failed runs and left out); undefined if none. */
export function median(xs: readonly (number | null)[]): number | undefined {
  const ok = xs.filter((x): x is number => x !== null).sort((a, b) => a - b);
  if (!ok.length) return undefined;
  const m = ok.length >> 1;
  return ok.length % 2 ? ok[m] : (ok[m - 1] + ok[m]) / 2;
}
