/**
 * Installs the Debian packages the demo and the tests need (as root, only
 * the missing ones) and reserves hugepages for DPDK.
 *
 * @module
 */

/** Packages the demo needs: guests, namespaces, pings. */
export const DEMO_PACKAGES = [
  "qemu-system-x86",
  "busybox-static",
  "cpio",
  "iperf3",
  "iproute2",
  "iputils-ping",
];
/** The guests' kernel and virtio modules, installed without recommends. */
export const KERNEL_PACKAGE = "linux-image-cloud-amd64";

const enc = new TextEncoder();

/** Prints a line prefixed with `[tag]`. */
export function say(tag: string, line: string): void {
  Deno.stdout.writeSync(enc.encode(`[${tag}] ${line}\n`));
}

async function run(tag: string, cmd: string, args: string[]): Promise<boolean> {
  const out = await new Deno.Command(cmd, {
    args,
    env: { DEBIAN_FRONTEND: "noninteractive" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    say(tag, `${cmd} ${args.join(" ")} failed (exit ${out.code}):`);
    say(tag, new TextDecoder().decode(out.stderr).trim().split("\n").slice(-5).join("\n"));
  }
  return out.success;
}

async function installed(pkg: string): Promise<boolean> {
  const out = await new Deno.Command("dpkg-query", {
    args: ["-W", "-f=${Status}", pkg],
    stdout: "piped",
    stderr: "null",
  }).output();
  return new TextDecoder().decode(out.stdout).includes("install ok installed");
}

async function missing(pkgs: string[]): Promise<string[]> {
  const result: string[] = [];
  for (const p of pkgs) if (!(await installed(p))) result.push(p);
  return result;
}

/**
 * Installs whichever of `packages` (and the cloud kernel, without
 * recommends) are missing. Returns false if apt failed.
 */
export async function installPackages(tag: string, packages: string[]): Promise<boolean> {
  const plain = await missing(packages);
  const bare = await missing([KERNEL_PACKAGE]);
  if (plain.length === 0 && bare.length === 0) {
    say(tag, "Debian packages: all present");
    return true;
  }
  say(tag, `installing Debian packages: ${[...plain, ...bare].join(" ")}`);
  if (!(await run(tag, "apt-get", ["update", "-q"]))) return false;
  if (plain.length && !(await run(tag, "apt-get", ["install", "-y", "-q", ...plain]))) return false;
  if (bare.length) {
    return await run(tag, "apt-get", ["install", "-y", "-q", "--no-install-recommends", ...bare]);
  }
  return true;
}

/** Reserves `pages` 2 MiB hugepages and mounts /dev/hugepages (idempotent). */
export async function setupHugepages(tag: string, pages = 512): Promise<boolean> {
  const nr = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";
  const script = `[ "$(cat ${nr})" -ge ${pages} ] || echo ${pages} > ${nr}; ` +
    `mkdir -p /dev/hugepages; ` +
    `grep -qs ' /dev/hugepages hugetlbfs ' /proc/mounts || mount -t hugetlbfs none /dev/hugepages`;
  if (!(await run(tag, "sh", ["-c", script]))) return false;
  const total = Deno.readTextFileSync("/proc/meminfo").match(/HugePages_Total:\s+(\d+)/)?.[1];
  say(tag, `hugepages: ${total} x 2 MiB reserved, /dev/hugepages mounted`);
  return true;
}
