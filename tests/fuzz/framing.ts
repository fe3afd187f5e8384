/**
 * Target `a2`: random byte streams and fds (built from the message grammar
 * of messages.ts, raw headers and junk) written in random chunks to a real
 * `Connection` over a socketpair and a `Reactor`.
 *
 * @module
 */

import fc from "fast-check";
import { reset as resetLogging } from "@logtape/logtape";
import { libc } from "../../ffi/libc.ts";
import { closeAll } from "../../ffi/io.ts";
import { MessageIo, socketPair } from "../../ffi/socket.ts";
import { Connection } from "../../src/vhost_user/connection.ts";
import { VhostUserDevice } from "../../src/vhost_user/device.ts";
import { Reactor } from "../../src/vhost_user/reactor.ts";
import {
  captureErrorLogs,
  count,
  counted,
  describe,
  errorLogs,
  EscapeTrap,
  fail,
  params,
  resetStats,
  type RunOptions,
  show,
  type TargetOutcome,
  tick,
  trace,
  U32_MAX,
  u32Arb,
} from "./common.ts";
import {
  FD_KINDS,
  fdCount,
  fdDiff,
  type FdKind,
  FdPool,
  ourFds,
  ourMappings,
  sameFds,
} from "./fds.ts";
import {
  checkReset,
  flagsArb,
  fuzzLog,
  messageArb,
  type MsgSpec,
  prologueArb,
} from "./messages.ts";
import { FakeBackend } from "./fake_backend.ts";

// ---------------------------------------------------------------------------
// Target a2: message framing through a real Connection
// ---------------------------------------------------------------------------

type Piece =
  | { t: "msg"; m: MsgSpec }
  | { t: "raw"; request: number; flags: number; size: number; body: Uint8Array }
  | { t: "junk"; bytes: Uint8Array };

/** A byte stream as a frontend might write it. */
export interface StreamSpec {
  pieces: Piece[];
  /** Chunk boundaries (taken modulo the stream length). */
  cuts: number[];
  /** Yield to the event loop after chunk i when pauses[i % n] (partial reads). */
  pauses: boolean[];
  /** fds sent with the chunk holding byte `at` (more than 8 in one chunk: MSG_CTRUNC). */
  extraFds: { at: number; kinds: FdKind[] }[];
  /** shutdown(SHUT_WR) = EOF with the reply path open; close; or no EOF (the switch closes). */
  end: "shutdown" | "close" | "none";
}

const pieceArb: fc.Arbitrary<Piece> = fc.oneof(
  { weight: 6, arbitrary: messageArb.map((m) => ({ t: "msg" as const, m })) },
  {
    weight: 2,
    // A header with any fields; size may exceed 4096 (item 2) or the bytes that follow (item 1).
    arbitrary: fc.record({
      t: fc.constant("raw" as const),
      request: fc.oneof(fc.integer({ min: 0, max: 50 }), u32Arb),
      flags: flagsArb,
      size: fc.oneof(
        fc.constantFrom(0, 1, 8, 12, 40, 264, 4095, 4096, 4097, 65536, 0x8000_0000, U32_MAX),
        fc.nat({ max: 300 }),
        u32Arb,
      ),
      body: fc.uint8Array({ maxLength: 64 }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.uint8Array({ minLength: 1, maxLength: 40 }).map((bytes) => ({
      t: "junk" as const,
      bytes,
    })),
  },
);

export const streamArb: fc.Arbitrary<StreamSpec> = fc.record({
  // Sometimes a full bring-up first, so EOF and errors also hit running rings (item 29).
  pieces: fc.tuple(
    fc.option(prologueArb.map((ms) => ms.map((m) => ({ t: "msg" as const, m }))), { freq: 4 }),
    fc.array(pieceArb, { minLength: 0, maxLength: 12 }),
  ).map(([pro, rest]): Piece[] => [...(pro ?? []), ...rest]),
  cuts: fc.array(fc.nat({ max: 0xffff }), { maxLength: 8 }),
  pauses: fc.array(fc.boolean(), { minLength: 1, maxLength: 4 }),
  extraFds: fc.array(
    fc.record({
      at: fc.nat({ max: 0xffff }),
      kinds: fc.array(fc.constantFrom(...FD_KINDS), { minLength: 1, maxLength: 10 }),
    }),
    { maxLength: 2 },
  ),
  end: fc.constantFrom("shutdown", "shutdown", "close", "none"),
});

interface FdsAt {
  at: number;
  kinds: FdKind[];
  /** Noise from StreamSpec.extraFds, not a message's own fds. */
  extra?: boolean;
}

function serialize(s: StreamSpec): { bytes: Uint8Array; fdsAt: FdsAt[] } {
  const parts: Uint8Array[] = [];
  const fdsAt: FdsAt[] = [];
  let len = 0;
  for (const p of s.pieces) {
    let b: Uint8Array;
    if (p.t === "junk") b = p.bytes;
    else {
      const [request, flags, size, body] = p.t === "msg"
        ? [p.m.request, p.m.flags, p.m.payload.length, p.m.payload]
        : [p.request, p.flags, p.size, p.body];
      b = new Uint8Array(12 + body.length);
      const v = new DataView(b.buffer);
      v.setUint32(0, request >>> 0, true);
      v.setUint32(4, flags >>> 0, true);
      v.setUint32(8, size >>> 0, true);
      b.set(body, 12);
      if (p.t === "msg" && p.m.fds.length > 0) fdsAt.push({ at: len, kinds: p.m.fds });
    }
    parts.push(b);
    len += b.length;
  }
  const bytes = new Uint8Array(len);
  let o = 0;
  for (const p of parts) {
    bytes.set(p, o);
    o += p.length;
  }
  if (len > 0) {
    for (const x of s.extraFds) fdsAt.push({ at: x.at % len, kinds: x.kinds, extra: true });
  }
  return { bytes, fdsAt };
}

const SEND_MAX_FDS = 16;
/** <asm-generic/ioctls.h>: bytes waiting in a socket's receive queue. */
const FIONREAD = 0x541b;

/** Why a connection closed, in a few classes (coverage of items 1–4 and the device's errors). */
function closeClass(reason: string): string {
  if (reason === "Frontend disconnected") return "EOF";
  if (reason.includes("middle of a message")) return "EOF mid-message";
  if (reason.includes("(limit 4096)")) return "payload > 4096";
  if (reason.includes("MSG_CTRUNC")) return "MSG_CTRUNC";
  if (reason.includes("more than 8 fds")) return "> 8 fds";
  if (reason.startsWith("fuzz:")) return "closed by the switch";
  if (reason.startsWith("Cannot recvmsg")) return "recvmsg error";
  if (reason.startsWith("Internal error")) return "internal error";
  return "device ProtocolError";
}

async function runStream(
  pool: FdPool,
  reactor: Reactor,
  trap: EscapeTrap,
  s: StreamSpec,
): Promise<void> {
  const fdsBefore = fdCount();
  const mapsBefore = ourMappings();
  const [ours, theirs] = socketPair(true);
  const pair = [
    Deno.readLinkSync(`/proc/self/fd/${ours}`),
    Deno.readLinkSync(`/proc/self/fd/${theirs}`),
  ];
  const oursBefore = ourFds(pair);
  oursBefore.delete(`${ours}`);
  oursBefore.delete(`${theirs}`);
  trace(() => `a2: fds ${ours}/${theirs} (${fdsBefore} open): ${show(s)}`);
  const backend = new FakeBackend();
  const device = new VhostUserDevice(backend, fuzzLog);
  const conn = new Connection(theirs, device, reactor, fuzzLog);
  let reason: string | null = null;
  conn.closed.then((r) => (reason = r));
  const io = new MessageIo(SEND_MAX_FDS);
  const { bytes, fdsAt } = serialize(s);
  // A frontend sends each message with its own sendmsg, so a message's fds
  // arrive with its first byte: cut there, and at the random points.
  const msgStarts = fdsAt.filter((x) => !x.extra).map((x) => x.at);
  const cuts = [
    ...new Set([
      0,
      bytes.length,
      ...msgStarts,
      ...s.cuts.map((c) => bytes.length ? c % bytes.length : 0),
    ]),
  ].sort((a, b) => a - b);
  let sendFailed = "";
  for (let i = 0; i + 1 < cuts.length && !sendFailed; i++) {
    const [from, to] = [cuts[i], cuts[i + 1]];
    if (to <= from) continue;
    const kinds = fdsAt.filter((x) => x.at >= from && x.at < to).flatMap((x) => x.kinds)
      .slice(0, SEND_MAX_FDS);
    const fds = kinds.map((k) => pool.dup(k));
    try {
      let off = from;
      // A stream socket may take part of a chunk; fds go with its first byte.
      while (off < to) {
        const chunk = bytes.subarray(off, to);
        off += io.send(ours, chunk, chunk.length, off === from ? fds : []);
      }
    } catch (e) {
      // EPIPE/ECONNRESET: the switch already closed this connection, as it may.
      sendFailed = describe(e);
    } finally {
      closeAll(fds); // ours; in-flight copies belong to the kernel, then the switch
    }
    if (s.pauses[i % s.pauses.length]) await tick();
  }
  if (s.end === "shutdown") libc.shutdown(ours, 1 /* SHUT_WR */);
  else if (s.end === "close") libc.close(ours);
  if (s.end === "none") {
    // No EOF: let the connection consume what arrived, then the switch closes it.
    const n = new Uint8Array(4);
    for (let i = 0; i < 2000 && reason === null; i++) {
      if (libc.ioctl(theirs, FIONREAD, n) < 0) break; // closed meanwhile: done
      if (new DataView(n.buffer).getInt32(0, true) === 0) break;
      await tick();
    }
    for (let i = 0; i < 3; i++) await tick();
    if (reason === null) await conn.close("fuzz: end of stream");
  }
  // After EOF the connection must close by itself (items 1, 29).
  let timer: ReturnType<typeof setTimeout> | undefined;
  const closed = await Promise.race([
    conn.closed.then(() => true),
    new Promise<boolean>((r) => (timer = setTimeout(() => r(false), 20_000))),
  ]);
  clearTimeout(timer);
  if (s.end !== "close") {
    // Drain the replies (the reply path stayed open), then hang up.
    const buf = new Uint8Array(256);
    for (;;) {
      let r;
      try {
        r = io.recv(ours, buf);
      } catch {
        break;
      }
      if (r === null || r.bytes === 0) {
        if (r) closeAll(r.fds);
        break;
      }
      closeAll(r.fds);
    }
    libc.close(ours);
  }
  if (!closed) {
    fail(`the connection did not close within 20 s after ${s.end === "none" ? "close()" : "EOF"}`);
  }
  count(`closed: ${closeClass(reason as string | null ?? "")}`);
  count("ring starts", backend.starts);
  await tick();
  const escaped = trap.take();
  if (escaped.length > 0) fail(`escaped: ${escaped.join("\n")}`);
  if (errorLogs.length > 0) fail(`error logs: ${errorLogs.join("\n")}`);
  // "Internal error" means handle() threw something else than ProtocolError, or a
  // reply could not be written; with our end still reading, neither may happen.
  const r = reason as string | null;
  if (r !== null && r.startsWith("Internal error") && s.end !== "close") {
    fail(`connection closed with an internal error: ${r}`);
  }
  const v = backend.take();
  if (v.length > 0) fail(`dataplane saw: ${v.join("; ")}`);
  checkReset(device, backend, "after close");
  if (!pool.allOpen()) fail("a template fd of the pool was closed");
  const oursAfter = ourFds(pair);
  if (!sameFds(oursBefore, oursAfter)) {
    fail(
      `fds after close differ (${r}; end ${s.end}; send: ${sendFailed || "ok"}): ${
        fdDiff(oursBefore, oursAfter)
      } (all open fds ${fdsBefore} → ${fdCount()})`,
    );
  }
  const mapsAfter = ourMappings();
  if (mapsAfter.ours !== mapsBefore.ours) {
    fail(`mappings of memfds / /dev/zero ${mapsBefore.ours} → ${mapsAfter.ours} after close`);
  }
}

export async function runTargetA2(o: RunOptions): Promise<TargetOutcome> {
  const t0 = performance.now();
  const st = resetStats();
  await captureErrorLogs();
  const pool = new FdPool();
  const reactor = new Reactor();
  const trap = new EscapeTrap();
  trap.install();
  const state = { evals: 0, failed: false };
  try {
    const prop = fc.asyncProperty(
      streamArb,
      counted(o, state, async (s: StreamSpec) => {
        errorLogs.length = 0;
        trap.take();
        await runStream(pool, reactor, trap, s);
      }),
    );
    const details = await fc.check(prop, params(o)) as fc.RunDetails<unknown>;
    return { details, ms: performance.now() - t0, evals: state.evals, stats: st };
  } finally {
    await reactor.close();
    trap.uninstall();
    pool.close();
    await resetLogging();
  }
}
