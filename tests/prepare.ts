/**
 * Prepares the machine for the test suite (run by `deno task test` first).
 * As root: installs the Debian packages the end-to-end tests use if they
 * are missing, and reserves 2 MiB hugepages for DPDK. Without root: says
 * which tests will be SKIPPED and why.
 *
 * @module
 */

import { DEMO_PACKAGES, installPackages, say, setupHugepages } from "../src/cli/install.ts";

/** What the suite needs beyond the demo's packages. */
const TEST_PACKAGES = [
  ...DEMO_PACKAGES,
  "tcpdump", // debugging captures
  "tshark", // checksum verifier (e2e offload test, tests/net/segment_test.ts); reads back captures
  "prometheus", // a real scraper for the metrics endpoint (and promtool check metrics)
  "dpdk",
  "dpdk-dev", // dpdk-testpmd (Debian ships it here, not in dpdk): generator and reference backend
  "gcc", // the struct layout test compiles a probe against the C headers
  "libc6-dev",
];

if (Deno.uid() !== 0) {
  say(
    "prepare",
    "*** not root: SKIPPED will be printed for the TAP, namespace, QEMU and DPDK tests ***",
  );
  say(
    "prepare",
    "*** (they need root to create TAPs/namespaces, install packages and reserve hugepages) ***",
  );
  Deno.exit(0);
}
const ok = (await installPackages("prepare", TEST_PACKAGES)) && (await setupHugepages("prepare"));
if (!ok) {
  say("prepare", "preparation failed: the end-to-end tests cannot run");
  Deno.exit(1);
}
