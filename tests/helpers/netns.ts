/**
 * Network namespaces for tests: created with a unique name, removed by
 * `[Symbol.asyncDispose]` together with every process started inside.
 *
 * @module
 */

import { sh } from "./env.ts";

/** A network namespace the test owns. */
export class NetNs {
  readonly #children: Deno.ChildProcess[] = [];

  private constructor(readonly name: string) {}

  /** `ip netns add NAME` (and brings its loopback up). */
  static async create(name: string): Promise<NetNs> {
    await sh("ip", "netns", "add", name);
    const ns = new NetNs(name);
    await ns.exec("ip", "link", "set", "lo", "up");
    return ns;
  }

  /** Runs a command inside the namespace; returns stdout, throws on failure. */
  exec(cmd: string, ...args: string[]): Promise<string> {
    return sh("ip", "netns", "exec", this.name, cmd, ...args);
  }

  /** Starts a long-running command inside the namespace; killed on dispose. */
  spawn(cmd: string, ...args: string[]): Deno.ChildProcess {
    const child = new Deno.Command("ip", {
      args: ["netns", "exec", this.name, cmd, ...args],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#children.push(child);
    return child;
  }

  /** Moves host interface `ifname` (e.g. the switch's TAP) into the namespace, addressed `cidr` and up. */
  async adopt(ifname: string, cidr: string): Promise<void> {
    await sh("ip", "link", "set", ifname, "netns", this.name);
    await this.exec("ip", "addr", "add", cidr, "dev", ifname);
    await this.exec("ip", "link", "set", ifname, "up");
  }

  /** Reads a counter of an interface in the namespace (statistics/NAME). */
  async counter(ifname: string, stat: string): Promise<number> {
    return Number((await this.exec("cat", `/sys/class/net/${ifname}/statistics/${stat}`)).trim());
  }

  /** Kills what it started and deletes the namespace. */
  async [Symbol.asyncDispose](): Promise<void> {
    for (const c of this.#children) {
      try {
        c.kill("SIGKILL");
      } catch { /* already gone */ }
      await c.status;
    }
    await sh("ip", "netns", "del", this.name).catch(() => {});
  }
}
