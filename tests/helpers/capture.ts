/**
 * Packet captures with tshark (Wireshark 4.0 on the testbed) inside a test's
 * network namespace, and a checksum verdict over the TCP segments captured.
 *
 * Why a plain "no Bad checksum" filter is not enough: Linux hands a TCP
 * segment whose checksum is offloaded around as CHECKSUM_PARTIAL, with only
 * the pseudo-header sum in the checksum field (tcp_v4_send_check(), and
 * virtio_net_hdr_to_skb() for what a TAP writer marks NEEDS_CSUM). An
 * AF_PACKET capture sees those bytes as they are, before any device fills
 * the sum in, and tshark reports them "Bad". Such a segment is not wrong:
 * the receiving kernel trusts CHECKSUM_PARTIAL, and on a wire the NIC
 * would complete it. So a segment counts as
 * - good: tshark verified the checksum;
 * - partial: the field holds exactly the pseudo-header sum of its IPv4
 *   addresses and TCP length (what a correct offloading sender leaves);
 * - bad: anything else — a checksum someone computed wrongly.
 * The IPv4 header checksum is never offloaded by Linux, so it must verify.
 *
 * @module
 */

import type { NetNs } from "./netns.ts";

/** How `tsharkFields` reads a file: a display filter, preferences, the field separator. */
export interface TsharkRead {
  /** Display filter (`-Y`); default: every packet. */
  filter?: string;
  /** Preferences (`-o name:value`), e.g. "tcp.check_checksum:TRUE". */
  prefs?: string[];
  /** Field separator (default "|"). */
  separator?: string;
}

/**
 * The `fields` of every packet of capture `file` that passes the filter,
 * one array per packet, read with tshark. TCP reassembly is off: every
 * test reads per-packet fields, and on an iperf3 capture reassembly can be
 * pathological (seen: a 32 MB capture of a guest without offloads took
 * tshark 4.0 over 9 minutes at full CPU with it, 2 s without, the same
 * fields either way).
 */
export async function tsharkFields(
  file: string,
  fields: string[],
  read: TsharkRead = {},
): Promise<string[][]> {
  const sep = read.separator ?? "|";
  const out = await new Deno.Command("tshark", {
    args: [
      "-r",
      file,
      "-n",
      ...["tcp.desegment_tcp_streams:FALSE", ...(read.prefs ?? [])].flatMap((p) => ["-o", p]),
      ...(read.filter === undefined ? [] : ["-Y", read.filter]),
      "-T",
      "fields",
      "-E",
      `separator=${sep}`,
      ...fields.flatMap((f) => ["-e", f]),
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(`Cannot read capture ${file}: ${new TextDecoder().decode(out.stderr)}`);
  }
  const text = new TextDecoder().decode(out.stdout).trim();
  return text === "" ? [] : text.split("\n").map((l) => l.split(sep));
}

/** The verdict over the TCP/IPv4 segments of a capture. */
export interface ChecksumVerdict {
  /** TCP/IPv4 segments in the capture. */
  segments: number;
  /** Segments tshark verified. */
  good: number;
  /** Segments carrying only the pseudo-header sum (CHECKSUM_PARTIAL). */
  partial: number;
  /** Segments whose TCP checksum is neither, or whose IPv4 header checksum is wrong. */
  bad: string[];
  /** Segments longer than 1514 bytes on the wire (GSO/TSO frames). */
  large: number;
}

/** A running capture (dumpcap via tshark) into a pcap file. */
export class Capture {
  private constructor(
    readonly file: string,
    readonly child: Deno.ChildProcess,
    readonly stderr: () => string,
  ) {}

  /**
   * Starts capturing `filter` on `ifname` inside `ns` into `file`, at most
   * `maxKiB` KiB (so a fast iperf3 run cannot fill the disk), and waits until
   * tshark says it is capturing.
   */
  static async start(
    ns: NetNs,
    ifname: string,
    file: string,
    filter = "tcp",
    maxKiB = 32768,
  ): Promise<Capture> {
    const child = ns.spawn(
      "tshark",
      "-i",
      ifname,
      "-f",
      filter,
      "-w",
      file,
      "-a",
      `filesize:${maxKiB}`,
      "-q",
    );
    let err = "";
    const dec = new TextDecoder();
    (async () => {
      try {
        for await (const chunk of child.stderr) err += dec.decode(chunk, { stream: true });
      } catch { /* gone */ }
    })();
    child.stdout.cancel().catch(() => {});
    const cap = new Capture(file, child, () => err);
    const deadline = Date.now() + 15_000;
    while (!/Capturing on/.test(err)) {
      if (Date.now() > deadline) {
        child.kill("SIGKILL");
        throw new Error(`Cannot start tshark on ${ifname} in ${ns.name}:\n${err}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    return cap;
  }

  /** Stops the capture (SIGINT, so tshark flushes the file) and waits for it. */
  async stop(): Promise<void> {
    try {
      this.child.kill("SIGINT");
    } catch { /* already gone (filesize reached) */ }
    const t = setTimeout(() => {
      try {
        this.child.kill("SIGKILL");
      } catch { /* gone */ }
    }, 5000);
    await this.child.status;
    clearTimeout(t);
  }
}

/** The pseudo-header sum (RFC 793 §3.1, folded, not complemented) of a TCP/IPv4 segment. */
export function pseudoHeaderSum(src: string, dst: string, tcpLength: number): number {
  let sum = 6 + tcpLength;
  for (const addr of [src, dst]) {
    const b = addr.split(".").map(Number);
    sum += (b[0] << 8 | b[1]) + (b[2] << 8 | b[3]);
  }
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

const FIELDS = [
  "frame.number",
  "frame.len",
  "ip.src",
  "ip.dst",
  "ip.len",
  "ip.hdr_len",
  "tcp.checksum",
  "tcp.checksum.status",
  "ip.checksum.status",
];

/**
 * Reads `file` with tshark, checksum verification on, and classifies every
 * TCP/IPv4 segment (see the module comment).
 */
export async function verifyChecksums(file: string): Promise<ChecksumVerdict> {
  const rows = await tsharkFields(file, FIELDS, {
    filter: "ip && tcp",
    prefs: ["tcp.check_checksum:TRUE", "ip.check_checksum:TRUE"],
  });
  const v: ChecksumVerdict = { segments: 0, good: 0, partial: 0, bad: [], large: 0 };
  for (const [num, frameLen, src, dst, ipLen, hdrLen, check, tcpStatus, ipStatus] of rows) {
    v.segments++;
    if (Number(frameLen) > 1514) v.large++;
    // Status values are Wireshark's proto_checksum_enum_e: 0 Bad, 1 Good, 2 Unverified.
    const ipGood = ipStatus === "1" || ipStatus === "Good";
    const tcpGood = tcpStatus === "1" || tcpStatus === "Good";
    const partial = Number(check) === pseudoHeaderSum(src, dst, Number(ipLen) - Number(hdrLen));
    if (!ipGood) v.bad.push(`frame ${num}: IPv4 header checksum status ${ipStatus}`);
    else if (tcpGood) v.good++;
    else if (partial) v.partial++;
    else v.bad.push(`frame ${num}: ${src} > ${dst} TCP checksum ${check} status ${tcpStatus}`);
  }
  return v;
}
