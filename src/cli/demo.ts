/**
 * The demo (`deno task demo`): the switch with two vhost-user ports and a
 * TAP, two QEMU guests on the vhost-user ports, and the host side of the
 * TAP in a network namespace of its own (so the demo never touches the
 * host's routing). Shows guest↔guest and guest↔host pings with the
 * switch's counters and FDB, then removes everything it made.
 *
 * @module
 */

import { buildGuestImage } from "../guest/image.ts";
import { QemuGuest } from "../guest/qemu.ts";
import { setupLogging } from "../log.ts";
import { Switch } from "../switch/switch.ts";
import { DEMO_PACKAGES, installPackages, say } from "./install.ts";
import { formatStats } from "./stats_table.ts";

const NS = "vsdemo";
const TAP = "vsdemo0";

function show(title: string, text: string): void {
  console.log(`\n=== ${title}\n${text.trimEnd()}`);
}

async function sh(...args: string[]): Promise<string> {
  const out = await new Deno.Command(args[0], {
    args: args.slice(1),
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  if (!out.success) throw new Error(`Cannot run ${args.join(" ")}: ${text.trim()}`);
  return text;
}

if (Deno.uid() !== 0) {
  console.error(`The demo needs root: it creates a TAP and a network namespace, and boots two
QEMU guests (installing qemu-system-x86, busybox-static, cpio, iperf3 and
linux-image-cloud-amd64 if they are missing). Run it as root:
  sudo npx -y deno@2.9.6 task demo`);
  Deno.exit(2);
}
if (!(await installPackages("demo", DEMO_PACKAGES))) {
  console.error(
    "The demo cannot install QEMU and the guest kernel (see above); it needs Debian's apt.",
  );
  Deno.exit(2);
}

await setupLogging({ level: "warn" });
const work = new URL("../../.work", import.meta.url).pathname;
const dir = await Deno.makeTempDir({ prefix: "vswitch-demo-" });
say("demo", "building the guest image (Debian cloud kernel + busybox initramfs)");
const image = await buildGuestImage(`${work}/guest`);

const sw = await Switch.create();
const guests: QemuGuest[] = [];
let failed = false;
try {
  say("demo", `switch: vhost-user ports vm1, vm2 (server mode, ${dir}/vm*.sock), TAP ${TAP}`);
  await sw.addVhostServer("vm1", `${dir}/vm1.sock`);
  await sw.addVhostServer("vm2", `${dir}/vm2.sock`);
  await sw.addTap("host", TAP);
  await sh("ip", "netns", "add", NS);
  await sh("ip", "link", "set", TAP, "netns", NS);
  await sh("ip", "netns", "exec", NS, "ip", "addr", "add", "10.0.0.254/24", "dev", TAP);
  await sh("ip", "netns", "exec", NS, "ip", "link", "set", TAP, "up");
  say("demo", `host side: ${TAP} in namespace ${NS} as 10.0.0.254/24`);

  for (const n of [1, 2]) {
    guests.push(
      new QemuGuest({
        name: `vm${n}`,
        socketPath: `${dir}/vm${n}.sock`,
        mac: `52:54:00:00:00:0${n}`,
        ip: `10.0.0.${n}/24`,
        image,
        logFile: `${dir}/vm${n}.log`,
      }),
    );
  }
  say("demo", "booting two QEMU guests (TCG): vm1 10.0.0.1, vm2 10.0.0.2");
  const t0 = performance.now();
  await Promise.all(guests.map((g) => g.boot()));
  say("demo", `guests up in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

  const [vm1, vm2] = guests;
  show("vm1 -> vm2: ping -c 3 10.0.0.2", (await vm1.run("ping -c 3 -W 3 10.0.0.2")).output);
  show("vm2 -> host: ping -c 3 10.0.0.254", (await vm2.run("ping -c 3 -W 3 10.0.0.254")).output);
  show(
    "host -> vm1: ip netns exec vsdemo ping -c 3 10.0.0.1",
    await sh("ip", "netns", "exec", NS, "ping", "-c", "3", "-W", "3", "10.0.0.1"),
  );
  await vm2.run("iperf3 -s -D");
  await new Promise((r) => setTimeout(r, 300));
  const perf = await vm1.run("iperf3 -c 10.0.0.2 -t 3 -f m", 60_000);
  show(
    "vm1 -> vm2: iperf3 -t 3",
    perf.output.split("\n").filter((l) => /sender|receiver/.test(l)).join("\n"),
  );
  show("switch counters (rx = received from the port)", formatStats(sw.stats()));
  show(
    "FDB",
    (await sw.fdb()).map((e) =>
      `${e.mac}  ${e.portName.padEnd(5)} ${(e.ageMs / 1000).toFixed(1)} s`
    ).join("\n"),
  );
} catch (e) {
  failed = true;
  console.error(`\nThe demo failed: ${(e as Error).message}`);
} finally {
  say("demo", "cleaning up: guests, switch, namespace, sockets");
  for (const g of guests) await g.stop();
  await sw.close();
  await sh("ip", "netns", "del", NS).catch(() => {});
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}
Deno.exit(failed ? 1 : 0);
