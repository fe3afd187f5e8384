/**
 * Lifecycle faults with real guests (CHECKLIST items 29–31): QEMU (TCG)
 * running Linux's virtio_net driver, and the switch as a SEPARATE PROCESS
 * (the CLI, `src/cli/main.ts`) so the test can read its /proc/<pid>/fd and
 * /proc/<pid>/maps, kill it and start it again.
 *
 * - A guest's QEMU is SIGKILLed in the middle of an iperf3 run: every fd and
 *   mapping its connection held in the switch is released, the other guests
 *   keep pinging, and the guest, booted again on the same socket, works.
 * - The switch is stopped (SIGTERM) and crashes (SIGKILL) while guests run,
 *   in client mode (QEMU is the vhost-user server) and in server mode (QEMU
 *   reconnects with `reconnect=1`): a new switch process picks the guests up
 *   and they ping each other again without rebooting.
 *
 * How an fd or a mapping is attributed to one guest: the kernel objects are
 * shared between QEMU and the switch, so the test reads QEMU's own fds
 * while it runs — the inode of its guest-RAM memfd (every QEMU names it
 * "memory-backend-memfd", so the name alone cannot tell guests apart), the
 * `eventfd-id` of each eventfd (/proc/<pid>/fdinfo), and its vhost-user
 * socket, whose peer on the switch's side `ss -x` names. A switch fd
 * belongs to that guest when it refers to one of those objects; a line of
 * the switch's maps belongs to it when it maps that memfd inode.
 */
import { assert, assertEquals, assertGreaterOrEqual } from "@std/assert";
import type { GuestImage } from "../../src/guest/image.ts";
import { guestImage as image, testGuest } from "../helpers/guests.ts";
import { type GuestOptions, guestsUnavailable, type QemuGuest } from "../../src/guest/qemu.ts";
import { requireOrSkip, sh } from "../helpers/env.ts";
import { SwitchProcess } from "../helpers/switch_process.ts";
import { fdTargets, mapsInode, mapsLines } from "../helpers/procfs.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };
/** Small guests: three of them run at once under TCG on two cores. */
const MEM_MIB = 128;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitUntil(what: string, done: () => boolean, timeoutMs: number): Promise<number> {
  const t0 = Date.now();
  while (!done()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`Timed out after ${timeoutMs} ms: ${what}`);
    await sleep(50);
  }
  return Date.now() - t0;
}

// ---------------------------------------------------------------------------
// /proc: which of a process's fds and mappings belong to one guest

/** One open fd as /proc shows it. */
interface FdInfo {
  fd: number;
  /** readlink of /proc/<pid>/fd/<fd>. */
  target: string;
  /** `ino:` from fdinfo (the memfd's inode for a memfd). */
  ino: number;
  /** `eventfd-id:` from fdinfo, for eventfds. */
  eventfdId?: number;
  /** The socket's inode, for sockets. */
  socket?: number;
}

function fdsOf(pid: number): FdInfo[] {
  const out: FdInfo[] = [];
  for (const [fd, target] of fdTargets(pid)) {
    let info = "";
    try {
      info = Deno.readTextFileSync(`/proc/${pid}/fdinfo/${fd}`);
    } catch {
      continue; // closed while we looked
    }
    const id = info.match(/^eventfd-id:\s*(\d+)/m);
    const sock = target.match(/^socket:\[(\d+)\]$/);
    out.push({
      fd: Number(fd),
      target,
      ino: Number(info.match(/^ino:\s*(\d+)/m)?.[1] ?? -1),
      eventfdId: id ? Number(id[1]) : undefined,
      socket: sock ? Number(sock[1]) : undefined,
    });
  }
  return out;
}

function isMemfd(target: string): boolean {
  return target.startsWith("/memfd:");
}

/** The kernel objects a guest's QEMU shares with a vhost-user backend. */
interface GuestObjects {
  memfdInodes: Set<number>;
  eventfdIds: Set<number>;
  /** Inodes of the backend's ends of QEMU's UNIX sockets. */
  peerSockets: Set<number>;
}

/** UNIX socket inode → its peer's inode, from `ss -xa`. */
async function socketPeers(): Promise<Map<number, number>> {
  const peers = new Map<number, number>();
  for (const line of (await sh("ss", "-xaH")).split("\n")) {
    // u_str ESTAB 0 0 /path/vm1.sock 15726 * 14861
    const f = line.trim().split(/\s+/);
    if (f.length >= 8) peers.set(Number(f[5]), Number(f[7]));
  }
  return peers;
}

async function guestObjects(qemuPid: number): Promise<GuestObjects> {
  const fds = fdsOf(qemuPid);
  const peers = await socketPeers();
  const peerSockets = new Set<number>();
  for (const f of fds) {
    const p = f.socket !== undefined ? peers.get(f.socket) : undefined;
    if (p) peerSockets.add(p);
  }
  return {
    memfdInodes: new Set(fds.filter((f) => isMemfd(f.target)).map((f) => f.ino)),
    eventfdIds: new Set(fds.flatMap((f) => f.eventfdId !== undefined ? [f.eventfdId] : [])),
    peerSockets,
  };
}

/** The switch's fds that refer to one guest's objects. */
function heldFor(swPid: number, g: GuestObjects): FdInfo[] {
  return fdsOf(swPid).filter((f) =>
    (isMemfd(f.target) && g.memfdInodes.has(f.ino)) ||
    (f.eventfdId !== undefined && g.eventfdIds.has(f.eventfdId)) ||
    (f.socket !== undefined && g.peerSockets.has(f.socket))
  );
}

function describeHeld(fds: FdInfo[]): string {
  const kinds = { socket: 0, eventfd: 0, memfd: 0 };
  for (const f of fds) {
    if (f.socket !== undefined) kinds.socket++;
    else if (f.eventfdId !== undefined) kinds.eventfd++;
    else kinds.memfd++;
  }
  return `${fds.length} (socket ${kinds.socket}, eventfd ${kinds.eventfd}, memfd ${kinds.memfd})`;
}

/** Lines of the switch's maps that map guest RAM (every QEMU memfd). */
function memfdMaps(pid: number): string[] {
  return mapsLines(pid, (l) => l.includes("/memfd:memory-backend-memfd"));
}

/** Those of them that map one guest's memfd (field 5 is the inode). */
function mapsFor(pid: number, g: GuestObjects): string[] {
  return memfdMaps(pid).filter((l) => g.memfdInodes.has(mapsInode(l)));
}

// ---------------------------------------------------------------------------
// Guests

/** Guest `n` with MEM_MIB of memory. */
function guest(
  name: string,
  dir: string,
  n: number,
  img: GuestImage,
  extra: Partial<GuestOptions> = {},
): QemuGuest {
  return testGuest(name, dir, n, img, { memMiB: MEM_MIB, ...extra });
}

/** Replies received by a busybox ping ("N packets transmitted, M packets received"). */
function received(output: string): { sent: number; got: number } {
  const m = output.match(/(\d+) packets transmitted, (\d+) packets received/);
  return { sent: Number(m?.[1] ?? 0), got: Number(m?.[2] ?? 0) };
}

/** Pings until one reply comes back (the path is up), then returns how long it took. */
async function pingUntilUp(g: QemuGuest, ip: string, timeoutMs: number): Promise<number> {
  const t0 = Date.now();
  for (;;) {
    const r = await g.run(`ping -c 1 -W 1 ${ip}`, 10_000);
    if (r.code === 0) return Date.now() - t0;
    if (Date.now() - t0 > timeoutMs) {
      throw new Error(`${g.options.name} cannot reach ${ip} after ${timeoutMs} ms:\n${r.output}`);
    }
  }
}

function pidAlive(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------

Deno.test({
  name:
    "SIGKILL of a guest's QEMU mid-iperf3 releases its port; the others keep pinging; it comes back",
  ...opts,
  async fn() {
    if (!requireOrSkip("QEMU fault test", guestsUnavailable())) return;
    const img = await image();
    const dir = await Deno.makeTempDir({ prefix: "vswitch-faults-" });
    try {
      await using sw = await SwitchProcess.cli(
        ["vm1", "vm2", "vm3"].flatMap((n) => ["--vhost", `${n}=${dir}/${n}.sock`]),
      );
      const idleFds = sw.fdCount();
      await using g1 = guest("vm1", dir, 1, img);
      await using g2 = guest("vm2", dir, 2, img);
      await using g3 = guest("vm3", dir, 3, img);
      let t0 = Date.now();
      await Promise.all([g1.boot(), g2.boot(), g3.boot()]);
      console.log(`three guests booted in ${Date.now() - t0} ms`);
      for (const [g, ip] of [[g1, "10.0.0.2"], [g3, "10.0.0.2"], [g3, "10.0.0.1"]] as const) {
        const r = await g.run(`ping -c 2 -W 3 ${ip}`);
        assertEquals(r.code, 0, `${g.options.name} -> ${ip} before the kill:\n${r.output}`);
      }

      // Everything the switch holds with all three connected, and what of it is vm1's.
      const allFds = sw.fdCount();
      const allMaps = memfdMaps(sw.pid).length;
      const vm1 = await guestObjects(g1.pid);
      const held1 = heldFor(sw.pid, vm1);
      const maps1 = mapsFor(sw.pid, vm1).length;
      const heldOthers = heldFor(sw.pid, await guestObjects(g2.pid)).length +
        heldFor(sw.pid, await guestObjects(g3.pid)).length;
      console.log(
        `switch fds: ${idleFds} idle, ${allFds} with 3 guests; vm1 holds ${
          describeHeld(held1)
        }, vm2+vm3 ${heldOthers}; guest-RAM maps: ${allMaps}, vm1's ${maps1}`,
      );
      // A connection holds its socket, kick/call/err eventfds and one fd per memory region.
      assertEquals(held1.filter((f) => f.socket !== undefined).length, 1, "vm1's socket");
      assertGreaterOrEqual(held1.filter((f) => f.eventfdId !== undefined).length, 4);
      assertGreaterOrEqual(held1.filter((f) => isMemfd(f.target)).length, 1);
      assertGreaterOrEqual(maps1, 1, "vm1's RAM is mapped in the switch");
      // Every fd the switch gained since it was idle is one of the guests' objects.
      assertEquals(allFds - idleFds, held1.length + heldOthers, "fds beyond the guests' ones");

      // iperf3 vm1 -> vm2; SIGKILL vm1's QEMU once data flows.
      assertEquals((await g2.run("iperf3 -s -D")).code, 0, "iperf3 server on vm2");
      await sleep(500);
      const mark = g1.console.length;
      const perf = g1.run("iperf3 -c 10.0.0.2 -t 60 -i 1 -f m", 120_000).catch((e) => e);
      const rate = () =>
        Number(g1.console.slice(mark).match(/sec\s+[\d.]+ \w+\s+([\d.]+) Mbits/)?.[1]);
      await waitUntil("iperf3 vm1 -> vm2 reports a rate", () => rate() > 0, 30_000);
      console.log(`iperf3 vm1 -> vm2 running at ${rate()} Mbit/s: SIGKILL vm1's QEMU`);
      // vm3 pings vm2 across the kill: 30 pings, 0.2 s apart.
      const ping = g3.run("ping -c 30 -i 0.2 -W 3 10.0.0.2", 60_000);
      ping.catch(() => {}); // awaited below; if an assertion fails first, not an unhandled rejection
      await sleep(1000);
      const qemu1 = g1.pid;
      t0 = Date.now();
      Deno.kill(qemu1, "SIGKILL");
      await g1.exited();
      assert((await perf) instanceof Error, "iperf3's guest is gone");

      await waitUntil(
        "the switch releases vm1's fds",
        () => heldFor(sw.pid, vm1).length === 0,
        20_000,
      ).catch((e) => {
        throw new Error(
          `${e.message}: still ${describeHeld(heldFor(sw.pid, vm1))}\n${sw.dumpLogs()}`,
        );
      });
      const releasedMs = Date.now() - t0; // from the SIGKILL
      const afterFds = sw.fdCount();
      const afterMaps = memfdMaps(sw.pid).length;
      console.log(
        `vm1 killed: released in ${releasedMs} ms; switch fds ${allFds} -> ${afterFds}, ` +
          `guest-RAM maps ${allMaps} -> ${afterMaps} (vm1's now ${mapsFor(sw.pid, vm1).length})`,
      );
      assertEquals(afterFds, allFds - held1.length, "exactly vm1's fds were closed");
      assertEquals(mapsFor(sw.pid, vm1).length, 0, "vm1's RAM is unmapped");
      assertEquals(afterMaps, allMaps - maps1, "only vm1's RAM was unmapped");
      assert(sw.alive && pidAlive(sw.pid), "the switch is still running");
      // The log line comes through the switch's stdout pipe, maybe after /proc shows the release.
      await sw.waitLog(/vswitch\.vhost\.vm1 .*(disconnected|Connection closed)/, 0, 20_000);

      const pinged = await ping;
      const { sent, got } = received(pinged.output);
      console.log(`vm3 -> vm2 across the kill: ${got}/${sent} replies (${Date.now() - t0} ms)`);
      assertEquals(sent, 30, pinged.output);
      assertGreaterOrEqual(got, 28, `vm3 -> vm2 while vm1 died:\n${pinged.output}`);

      // vm1 boots again on the same socket with the same MAC.
      await g1.stop();
      t0 = Date.now();
      await g1.boot();
      assert(g1.pid !== qemu1);
      const up = await pingUntilUp(g1, "10.0.0.2", 60_000);
      const again = await g1.run("ping -c 5 -i 0.2 -W 3 10.0.0.2");
      assertEquals(received(again.output).got, 5, `vm1 -> vm2 after the restart:\n${again.output}`);
      const back = await g3.run("ping -c 3 -W 3 10.0.0.1");
      assertEquals(back.code, 0, `vm3 -> vm1 after the restart:\n${back.output}`);
      const vm1b = await guestObjects(g1.pid);
      const held1b = heldFor(sw.pid, vm1b);
      console.log(
        `vm1 back: booted and pinging in ${
          Date.now() - t0
        } ms (first reply ${up} ms after boot); ` +
          `switch fds ${sw.fdCount()}, vm1 holds ${describeHeld(held1b)}; ` +
          `guest-RAM maps ${memfdMaps(sw.pid).length}`,
      );
      assertEquals(held1b.length, held1.length, "the new vm1 connection holds as much as the old");
      assertEquals(sw.fdCount(), allFds, "fd count back to the all-connected figure");
      assertEquals(mapsFor(sw.pid, vm1b).length, maps1);
      assertEquals(memfdMaps(sw.pid).length, allMaps);
    } finally {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

/**
 * Two guests stay up while the switch goes away twice (SIGTERM: a clean
 * stop that closes the connections; SIGKILL: a crash, the kernel closes
 * them) and a new switch process with the same arguments comes up.
 *
 * What QEMU 7.2 does (net/vhost-user.c): on the chardev's CLOSED event it
 * stops vhost and sets the NIC's link down (qmp_set_link). GET_VRING_BASE
 * cannot reach the dead backend, so it restores each ring's next avail
 * index from the used index; its stderr says so, harmlessly:
 *   Failed to set msg fds.
 *   vhost VQ 0 ring restore failed: -22: Invalid argument (22)
 * On the next OPENED event (a new connection: ours in client mode, or its
 * own `reconnect=1` retry in server mode, which meanwhile logs "Connection
 * refused" / "No such file or directory") it negotiates the device again,
 * sets the link up and, since the guest's driver is still running, replays
 * the memory table and the ring setup (kick/call/err fds). Nothing is
 * needed inside the guest: eth0 keeps its address and traffic resumes
 * about 1.2 s after the new switch process is started (mostly Deno's start).
 */
async function switchRestart(clientMode: boolean): Promise<void> {
  const img = await image();
  const dir = await Deno.makeTempDir({ prefix: "vswitch-faults-" });
  try {
    const flag = clientMode ? "--vhost-client" : "--vhost";
    const args = ["vm1", "vm2"].flatMap((n) => [flag, `${n}=${dir}/${n}.sock`]);
    // QEMU as the server creates its socket (`server=on,wait=off`); as the
    // client it reconnects every second (`reconnect=1`) and waits for the
    // switch's socket before the guest starts, so start the switch first.
    const extra: Partial<GuestOptions> = clientMode ? { server: true } : { reconnect: 1 };
    let sw = await SwitchProcess.cli(args);
    try {
      await using g1 = guest("vm1", dir, 1, img, extra);
      await using g2 = guest("vm2", dir, 2, img, extra);
      await Promise.all([g1.boot(), g2.boot()]);
      const pids = [g1.pid, g2.pid];
      const first = await g1.run("ping -c 3 -W 3 10.0.0.2");
      assertEquals(first.code, 0, `vm1 -> vm2 before the restarts:\n${first.output}`);
      // Proof of no reboot: a file in the guest's RAM-backed root, and its uptime.
      assertEquals((await g1.run("echo still-the-same-boot > /marker")).code, 0);
      const uptime = async (g: QemuGuest) =>
        Number((await g.run("cat /proc/uptime")).output.trim().split(/\s+/)[0]);
      let up1 = await uptime(g1);

      for (const signal of ["SIGTERM", "SIGKILL"] as const) {
        const status = await sw.stop(signal);
        if (signal === "SIGTERM") assertEquals(status.code, 0, `clean stop:\n${sw.dumpLogs()}`);
        else assertEquals(status.signal, "SIGKILL");
        // The switch is the only path between the guests: nothing passes now.
        const down = await g1.run("ping -c 2 -W 1 10.0.0.2");
        assertEquals(received(down.output).got, 0, `ping with no switch:\n${down.output}`);

        const t0 = Date.now();
        sw = await SwitchProcess.cli(args);
        await pingUntilUp(g1, "10.0.0.2", 60_000);
        const ms = Date.now() - t0;
        const r = await g1.run("ping -c 10 -i 0.2 -W 3 10.0.0.2");
        const back = await g2.run("ping -c 3 -W 3 10.0.0.1");
        console.log(
          `${clientMode ? "client" : "server"} mode, switch ${signal}: first reply ${ms} ms ` +
            `after starting the new switch; then ${received(r.output).got}/10 and ` +
            `${received(back.output).got}/3 back`,
        );
        assertEquals(received(r.output).got, 10, `vm1 -> vm2 after ${signal}:\n${r.output}`);
        assertEquals(back.code, 0, `vm2 -> vm1 after ${signal}:\n${back.output}`);
        // QEMU replayed its whole setup to the new switch: memory table, kick/call/err fds.
        for (const g of [g1, g2]) {
          const held = heldFor(sw.pid, await guestObjects(g.pid));
          const what = `${g.options.name} in the new switch: ${
            describeHeld(held)
          }\n${sw.dumpLogs()}`;
          assertEquals(held.filter((f) => f.socket !== undefined).length, 1, what);
          assertGreaterOrEqual(held.filter((f) => f.eventfdId !== undefined).length, 4, what);
          assertGreaterOrEqual(held.filter((f) => isMemfd(f.target)).length, 1, what);
          assert(sw.has(new RegExp(`${g.options.name} Memory table`)), what);
        }

        // Same QEMU processes, same boot.
        assertEquals([g1.pid, g2.pid], pids, "the QEMU processes are the same");
        assertEquals((await g1.run("cat /marker")).output.trim(), "still-the-same-boot");
        const now = await uptime(g1);
        assert(now > up1, `guest uptime went on (${up1} -> ${now} s): no reboot`);
        up1 = now;
        for (const g of [g1, g2]) {
          assertEquals(g.console.split("VSGUEST-READY").length, 2, "booted only once");
        }
      }
    } finally {
      await sw[Symbol.asyncDispose]();
    }
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

Deno.test({
  name: "the switch restarts while guests run (client mode): traffic resumes without rebooting",
  ...opts,
  async fn() {
    if (!requireOrSkip("QEMU switch-restart test", guestsUnavailable())) return;
    await switchRestart(true);
  },
});

Deno.test({
  name: "the switch restarts while guests run (server mode, QEMU reconnect=1): traffic resumes",
  ...opts,
  async fn() {
    if (!requireOrSkip("QEMU switch-restart test", guestsUnavailable())) return;
    await switchRestart(false);
  },
});
