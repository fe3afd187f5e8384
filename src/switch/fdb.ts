/**
 * The forwarding database: MAC address → port, learned on ingress, aged
 * out after `agingMs`. An open-addressing hash table over typed arrays
 * (linear probing, backward-shift deletion), so learning and lookup
 * allocate nothing. A MAC is two numbers: its top 16 bits and low 32 bits.
 *
 * @module
 */

const EMPTY = -1;

/** One learned entry, for dumps. */
export interface FdbEntry {
  /** "aa:bb:cc:dd:ee:ff". */
  mac: string;
  /** Port id. */
  port: number;
  /** Milliseconds since it was last seen. */
  ageMs: number;
}

/** A MAC learning table. */
export class Fdb {
  readonly #mask: number;
  readonly #port: Int32Array;
  readonly #hi: Uint32Array;
  readonly #lo: Uint32Array;
  readonly #seen: Float64Array;
  readonly #limit: number;
  /** Entries in use. */
  size = 0;
  /** Learning refused because the table was full. */
  full = 0;
  /** Entry lifetime without traffic. */
  agingMs: number;

  /** @param capacity a power of two; at most 3/4 of it is filled */
  constructor(capacity = 8192, agingMs = 300_000) {
    if (capacity & (capacity - 1)) {
      throw new RangeError(`FDB capacity ${capacity}: not a power of two`);
    }
    this.#mask = capacity - 1;
    this.#port = new Int32Array(capacity).fill(EMPTY);
    this.#hi = new Uint32Array(capacity);
    this.#lo = new Uint32Array(capacity);
    this.#seen = new Float64Array(capacity);
    this.#limit = (capacity * 3) >>> 2;
    this.agingMs = agingMs;
  }

  #slot(hi: number, lo: number): number {
    let h = Math.imul(lo ^ Math.imul(hi, 0x9e3779b1), 0x85ebca6b);
    h ^= h >>> 13;
    return h & this.#mask;
  }

  /**
   * Records that `hi:lo` was seen on `port` at `now` (ms). A MAC that moved
   * is relearned on its new port. Returns the port it was on before, or -1.
   */
  learn(hi: number, lo: number, port: number, now: number): number {
    const ports = this.#port;
    let i = this.#slot(hi, lo);
    for (;;) {
      const p = ports[i];
      if (p === EMPTY) break;
      if (this.#lo[i] === lo && this.#hi[i] === hi) {
        this.#seen[i] = now;
        if (p !== port) ports[i] = port;
        return p;
      }
      i = (i + 1) & this.#mask;
    }
    if (this.size >= this.#limit) {
      this.full++;
      return -1;
    }
    ports[i] = port;
    this.#hi[i] = hi;
    this.#lo[i] = lo;
    this.#seen[i] = now;
    this.size++;
    return -1;
  }

  /** The port `hi:lo` was learned on, or -1 when unknown. */
  lookup(hi: number, lo: number): number {
    const ports = this.#port;
    let i = this.#slot(hi, lo);
    for (;;) {
      const p = ports[i];
      if (p === EMPTY) return -1;
      if (this.#lo[i] === lo && this.#hi[i] === hi) return p;
      i = (i + 1) & this.#mask;
    }
  }

  // Backward-shift deletion keeps every probe chain unbroken.
  #removeAt(i: number): void {
    const mask = this.#mask;
    const ports = this.#port;
    let hole = i;
    let j = i;
    for (;;) {
      j = (j + 1) & mask;
      if (ports[j] === EMPTY) break;
      const home = this.#slot(this.#hi[j], this.#lo[j]);
      // Move j into the hole if its home is not cyclically in (hole, j].
      const inRange = hole <= j ? home > hole && home <= j : home > hole || home <= j;
      if (!inRange) {
        ports[hole] = ports[j];
        this.#hi[hole] = this.#hi[j];
        this.#lo[hole] = this.#lo[j];
        this.#seen[hole] = this.#seen[j];
        hole = j;
      }
    }
    ports[hole] = EMPTY;
    this.size--;
  }

  #removeWhere(pred: (i: number) => boolean): number {
    let removed = 0;
    for (let i = 0; i <= this.#mask;) {
      if (this.#port[i] !== EMPTY && pred(i)) {
        this.#removeAt(i);
        removed++;
        // The shift may have moved another entry into i: look again.
      } else {
        i++;
      }
    }
    return removed;
  }

  /** Drops entries not seen for `agingMs`; returns how many. */
  age(now: number): number {
    return this.#removeWhere((i) => now - this.#seen[i] > this.agingMs);
  }

  /** Forgets every MAC learned on `port`. */
  removePort(port: number): number {
    return this.#removeWhere((i) => this.#port[i] === port);
  }

  /** Forgets every entry; returns how many. */
  clear(): number {
    const n = this.size;
    this.#port.fill(EMPTY);
    this.size = 0;
    return n;
  }

  /** Every entry (control path). */
  entries(now: number): FdbEntry[] {
    const out: FdbEntry[] = [];
    for (let i = 0; i <= this.#mask; i++) {
      if (this.#port[i] === EMPTY) continue;
      out.push({
        mac: macString(this.#hi[i], this.#lo[i]),
        port: this.#port[i],
        ageMs: now - this.#seen[i],
      });
    }
    return out;
  }
}

/** "aa:bb:cc:dd:ee:ff" from the two halves. */
export function macString(hi: number, lo: number): string {
  const bytes = [hi >>> 8, hi & 0xff, lo >>> 24, (lo >>> 16) & 0xff, (lo >>> 8) & 0xff, lo & 0xff];
  return bytes.map((b) => b.toString(16).padStart(2, "0")).join(":");
}
