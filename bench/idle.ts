/** `deno task bench:idle` (as root): four idle QEMU guests on the switch (run as its own process); prints the switch's CPU use over 20 s. */
import { v8FlagsArg } from "../src/switch/v8_flags.ts";
import { buildGuestImage } from "../src/guest/image.ts";
import { QemuGuest } from "../src/guest/qemu.ts";
const image = await buildGuestImage(new URL("../.work/guest", import.meta.url).pathname);
const dir = await Deno.makeTempDir();
const sw = new Deno.Command(Deno.execPath(), {
  args: [
    "run",
    "-A",
    v8FlagsArg(),
    new URL("../src/cli/main.ts", import.meta.url).pathname,
    ...[1, 2, 3, 4].flatMap((i) => ["--vhost", `vm${i}=${dir}/vm${i}.sock`]),
    "--log-level",
    "warn",
  ],
  stdout: "null",
  stderr: "null",
}).spawn();
await new Promise((r) => setTimeout(r, 1500));
const guests = [1, 2, 3, 4].map((i) =>
  new QemuGuest({
    name: `vm${i}`,
    socketPath: `${dir}/vm${i}.sock`,
    mac: `52:54:00:00:00:0${i}`,
    ip: `10.0.0.${i}/24`,
    image,
  })
);
await Promise.all(guests.map((g) => g.boot()));
const r = await guests[0].run("ping -c 2 10.0.0.4");
console.log("ping ok:", r.code === 0);
await new Promise((r) => setTimeout(r, 3000));
const ticks = () => {
  const f = Deno.readTextFileSync(`/proc/${sw.pid}/stat`).split(") ")[1].split(" ");
  return Number(f[11]) + Number(f[12]);
};
const t0 = ticks(), w0 = performance.now();
await new Promise((r) => setTimeout(r, 20000));
const cpu = (ticks() - t0) / 100 / ((performance.now() - w0) / 1000) * 100;
console.log(`switch CPU with 4 idle guests: ${cpu.toFixed(2)}% of one core over 20 s`);
for (const g of guests) await g.stop();
sw.kill("SIGTERM");
await sw.status;
