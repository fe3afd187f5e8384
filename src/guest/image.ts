/**
 * A small Linux guest for the demo and the end-to-end tests: the host's
 * Debian cloud kernel and an initramfs with busybox, the virtio-net driver
 * modules and iperf3. Built once into a cache directory.
 *
 * The guest's /init loads the modules, configures eth0 from the kernel
 * command line (`vs.ip=ADDR/PREFIX`), prints a ready marker and runs a
 * shell on the serial console that `QemuGuest.run` drives.
 *
 * @module
 */

/** Kernel and initramfs paths. */
export interface GuestImage {
  kernel: string;
  initrd: string;
}

/** Driver modules in load order (each after what it depends on; `modinfo -F depends`). */
const MODULES = [
  "kernel/drivers/virtio/virtio_ring.ko",
  "kernel/drivers/virtio/virtio.ko",
  "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
  "kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
  "kernel/drivers/virtio/virtio_pci.ko",
  "kernel/net/core/failover.ko",
  "kernel/drivers/net/net_failover.ko",
  "kernel/drivers/net/virtio_net.ko",
];

/** The marker /init prints when eth0 is configured. */
export const READY_MARKER = "VSGUEST-READY";
/** The marker /init prints when the NIC did not come up. */
export const FAILED_MARKER = "VSGUEST-NO-NIC";

const INIT = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
for m in ${MODULES.map((m) => m.split("/").pop()).join(" ")}; do
  insmod /modules/$m 2>/dev/null || echo "insmod $m failed"
done
ip link set lo up
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    vs.ip=*) ip addr add "\${arg#vs.ip=}" dev eth0 ;;
  esac
done
if ip link set eth0 up; then echo ${READY_MARKER}; else echo ${FAILED_MARKER}; fi
while true; do
  setsid sh -c 'stty -echo; exec sh' </dev/ttyS0 >/dev/ttyS0 2>&1
done
`;

function newest(dir: string, prefix: string): string | undefined {
  const names: string[] = [];
  try {
    for (const e of Deno.readDirSync(dir)) if (e.name.startsWith(prefix)) names.push(e.name);
  } catch {
    return undefined;
  }
  return names.sort().pop();
}

/** The cloud kernel version under /boot, if installed. */
export function cloudKernelVersion(): string | undefined {
  const k = newest("/boot", "vmlinuz-");
  const v = k?.slice("vmlinuz-".length);
  return v && v.endsWith("cloud-amd64") ? v : undefined;
}

async function run(cmd: string, args: string[], cwd?: string): Promise<string> {
  const out = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(
      `Cannot build guest image: ${cmd} ${args.join(" ")} failed: ${
        new TextDecoder().decode(out.stderr)
      }`,
    );
  }
  return new TextDecoder().decode(out.stdout);
}

/** Shared libraries a binary needs, from ldd (loader included). */
async function libraries(binary: string): Promise<string[]> {
  const text = await run("ldd", [binary]);
  return [...text.matchAll(/(\/\S+\.so[^\s]*)/g)].map((m) => m[1]);
}

/**
 * Builds (or reuses) the guest image under `cacheDir`. Needs the cloud
 * kernel, busybox-static, iperf3 and cpio (`tests/prepare.ts` installs them).
 */
export async function buildGuestImage(cacheDir: string): Promise<GuestImage> {
  const version = cloudKernelVersion();
  if (!version) {
    throw new Error(
      "Cannot build guest image: no /boot/vmlinuz-*-cloud-amd64 (linux-image-cloud-amd64)",
    );
  }
  const kernel = `/boot/vmlinuz-${version}`;
  Deno.mkdirSync(cacheDir, { recursive: true });
  cacheDir = Deno.realPathSync(cacheDir);
  const initrd = `${cacheDir}/initrd-${version}.cpio.gz`;
  try {
    Deno.statSync(initrd);
    return { kernel, initrd };
  } catch { /* build it */ }
  const root = Deno.makeTempDirSync({ dir: cacheDir, prefix: "root-" });
  try {
    for (const d of ["bin", "proc", "sys", "dev", "modules", "tmp", "lib", "lib64", "usr/bin"]) {
      Deno.mkdirSync(`${root}/${d}`, { recursive: true });
    }
    Deno.copyFileSync("/bin/busybox", `${root}/bin/busybox`);
    for (const m of MODULES) {
      Deno.copyFileSync(`/lib/modules/${version}/${m}`, `${root}/modules/${m.split("/").pop()}`);
    }
    Deno.copyFileSync("/usr/bin/iperf3", `${root}/usr/bin/iperf3`);
    Deno.chmodSync(`${root}/usr/bin/iperf3`, 0o755);
    for (const lib of await libraries("/usr/bin/iperf3")) {
      const dest = `${root}${lib}`;
      Deno.mkdirSync(dest.slice(0, dest.lastIndexOf("/")), { recursive: true });
      Deno.copyFileSync(lib, dest);
    }
    Deno.writeTextFileSync(`${root}/init`, INIT, { mode: 0o755 });
    Deno.chmodSync(`${root}/init`, 0o755);
    Deno.chmodSync(`${root}/bin/busybox`, 0o755);
    const tmp = `${initrd}.tmp`;
    await run("sh", ["-c", `find . | cpio -o -H newc --quiet | gzip -1 > '${tmp}'`], root);
    Deno.renameSync(tmp, initrd);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
  return { kernel, initrd };
}
