/**
 * Prepares the machine for the test suite (run by `deno task test` first).
 * As root: installs the Debian packages the end-to-end tests use if they
 * are missing, and reserves 2 MiB hugepages for DPDK. Without root: says
 * which tests will be SKIPPED and why.
 *
 * @module
 */

/** Debian packages the suite needs; `--no-install-recommends` ones apart. */
const PACKAGES = [
  "qemu-system-x86", // real guests (TCG)
  "busybox-static", // the guests' userland
  "cpio", // packing the guest initramfs
  "iperf3", // TCP throughput through the switch
  "iproute2", // namespaces, TAPs, veths
  "iputils-ping", // pings in namespaces and guests
  "tcpdump", // debugging captures
  "dpdk", // testpmd: virtio-user traffic generator and reference backend
  "gcc", // the struct layout test compiles a probe against the C headers
  "libc6-dev",
];
const NO_RECOMMENDS = ["linux-image-cloud-amd64"]; // the guests' kernel and virtio modules

const HUGEPAGES = 512;
const enc = new TextEncoder();

function say(line: string): void {
  Deno.stdout.writeSync(enc.encode(`[prepare] ${line}\n`));
}

async function run(
  cmd: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<boolean> {
  const out = await new Deno.Command(cmd, { args, env, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    say(`${cmd} ${args.join(" ")} failed (exit ${out.code}):`);
    say(new TextDecoder().decode(out.stderr).trim().split("\n").slice(-5).join("\n"));
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

async function installPackages(): Promise<boolean> {
  const plain = await missing(PACKAGES);
  const bare = await missing(NO_RECOMMENDS);
  if (plain.length === 0 && bare.length === 0) {
    say("Debian packages: all present");
    return true;
  }
  say(`installing Debian packages: ${[...plain, ...bare].join(" ")}`);
  const env = { DEBIAN_FRONTEND: "noninteractive" };
  if (!(await run("apt-get", ["update", "-q"], env))) return false;
  if (plain.length && !(await run("apt-get", ["install", "-y", "-q", ...plain], env))) return false;
  if (
    bare.length &&
    !(await run("apt-get", ["install", "-y", "-q", "--no-install-recommends", ...bare], env))
  ) return false;
  return true;
}

async function setupHugepages(): Promise<boolean> {
  const nr = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";
  const script = `[ "$(cat ${nr})" -ge ${HUGEPAGES} ] || echo ${HUGEPAGES} > ${nr}; ` +
    `mkdir -p /dev/hugepages; ` +
    `grep -qs ' /dev/hugepages hugetlbfs ' /proc/mounts || mount -t hugetlbfs none /dev/hugepages`;
  if (!(await run("sh", ["-c", script]))) return false;
  const free = Deno.readTextFileSync("/proc/meminfo").match(/HugePages_Total:\s+(\d+)/)?.[1];
  say(`hugepages: ${free} x 2 MiB reserved, /dev/hugepages mounted`);
  return true;
}

if (Deno.uid() !== 0) {
  say("*** not root: SKIPPED will be printed for the TAP, namespace, QEMU and DPDK tests ***");
  say("*** (they need root to create TAPs/namespaces, install packages and reserve hugepages) ***");
  Deno.exit(0);
}
const ok = (await installPackages()) && (await setupHugepages());
if (!ok) {
  say("preparation failed: the end-to-end tests cannot run");
  Deno.exit(1);
}
