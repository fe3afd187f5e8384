/**
 * The declarative config file (TOML, read with deno-std's TOML parser)
 * and its reconciliation with the running switch. The format is in the
 * README ("Config file"). A file is checked whole before anything
 * changes: one mistake refuses it, with every mistake listed, and the
 * running switch stays as it was.
 *
 * @module
 */

import { parse as parseToml } from "@std/toml/parse";
import { logger } from "../log.ts";
import {
  checkSpec,
  type Controller,
  OFFLOAD_NAMES,
  parseOffloads,
  type PortSpec,
  sameSpec,
} from "./controller.ts";
import { UserError } from "./errors.ts";
import type { ReloadResult } from "./server.ts";

const log = logger("config");

/** A parsed, checked config file. */
export interface Config {
  /** Control socket path (default: defaultControlPath()). */
  control?: string;
  /** Metrics listen address HOST:PORT ("" or absent: off). */
  metrics?: string;
  /** FDB aging in seconds. */
  fdbAging?: number;
  ports: PortSpec[];
}

const TOP_KEYS = ["control", "metrics", "fdb", "port"];
const PORT_KEYS = ["name", "type", "path", "ifname", "offloads"];

/** Checks HOST:PORT (HOST defaults to 127.0.0.1; a bare PORT is fine); returns [host, port]. */
export function parseListen(text: string, what = "--metrics"): [string, number] {
  if (/^\d{1,5}$/.test(text)) text = `:${text}`; // a bare port: on loopback
  const m = text.match(/^(\[[0-9a-fA-F:]+\]|[^:\s]*):(\d{1,5})$/);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) {
    throw new UserError(`Cannot use ${what} ${text}: expected HOST:PORT, e.g. 127.0.0.1:9469`);
  }
  const host = m[1] === "" ? "127.0.0.1" : m[1].replace(/^\[|\]$/g, "");
  return [host, port];
}

/** Parses and checks config text; throws a UserError listing every mistake. */
export function parseConfig(text: string, file: string): Config {
  let raw: Record<string, unknown>;
  try {
    raw = parseToml(text) as Record<string, unknown>;
  } catch (e) {
    throw new UserError(
      `Cannot load config ${file}: ${(e as Error).message.split("\n")[0]} (fix the TOML syntax)`,
    );
  }
  const errors: string[] = [];
  const cfg: Config = { ports: [] };
  for (const k of Object.keys(raw)) {
    if (!TOP_KEYS.includes(k)) errors.push(`unknown key "${k}" (known: ${TOP_KEYS.join(", ")})`);
  }
  if (raw.control !== undefined) {
    if (typeof raw.control !== "string" || !raw.control.startsWith("/")) {
      errors.push(`control must be an absolute socket path`);
    } else cfg.control = raw.control;
  }
  if (raw.metrics !== undefined) {
    if (typeof raw.metrics !== "string") errors.push(`metrics must be "HOST:PORT" or ""`);
    else if (raw.metrics !== "") {
      try {
        parseListen(raw.metrics, "metrics");
        cfg.metrics = raw.metrics;
      } catch (e) {
        errors.push((e as Error).message);
      }
    }
  }
  if (raw.fdb !== undefined) {
    const fdb = raw.fdb as Record<string, unknown>;
    if (typeof fdb !== "object" || Array.isArray(fdb)) errors.push(`[fdb] must be a table`);
    else {
      for (const k of Object.keys(fdb)) if (k !== "aging") errors.push(`unknown key fdb.${k}`);
      if (fdb.aging !== undefined) {
        if (typeof fdb.aging !== "number" || !(fdb.aging >= 0)) {
          errors.push(`fdb.aging must be a number of seconds ≥ 0`);
        } else cfg.fdbAging = fdb.aging;
      }
    }
  }
  const ports = raw.port ?? [];
  if (!Array.isArray(ports)) errors.push(`port must be an array of tables ([[port]])`);
  else {
    for (const [i, p] of (ports as Record<string, unknown>[]).entries()) {
      const where = `port ${i + 1}${typeof p?.name === "string" ? ` (${p.name})` : ""}`;
      if (typeof p !== "object" || p === null) {
        errors.push(`${where}: must be a table`);
        continue;
      }
      const bad = Object.keys(p).filter((k) => !PORT_KEYS.includes(k));
      if (bad.length) {
        errors.push(`${where}: unknown key "${bad[0]}" (known: ${PORT_KEYS.join(", ")})`);
        continue;
      }
      try {
        const spec: PortSpec = { name: p.name as string, type: p.type as PortSpec["type"] };
        if (p.path !== undefined) spec.path = p.path as string;
        if (p.ifname !== undefined) spec.ifname = p.ifname as string;
        if (typeof p.offloads === "string") spec.offloads = parseOffloads(p.offloads);
        else if (p.offloads !== undefined) spec.offloads = p.offloads as string[];
        if (spec.offloads?.length === OFFLOAD_NAMES.length) delete spec.offloads; // all: the default
        checkSpec(spec, cfg.ports);
        cfg.ports.push(spec);
      } catch (e) {
        errors.push(`${where}: ${(e as Error).message}`);
      }
    }
  }
  if (errors.length) {
    throw new UserError(`Cannot load config ${file}: ${errors.join("; ")} (nothing was changed)`);
  }
  return cfg;
}

/** Reads and checks a config file. */
export async function loadConfig(file: string): Promise<Config> {
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (e) {
    throw new UserError(
      `Cannot read config ${file}: ${
        e instanceof Deno.errors.NotFound
          ? "no such file"
          : (e as Error).message.split(" (os error")[0]
      } (check the path)`,
    );
  }
  return parseConfig(text, file);
}

/** What reconciliation may change besides ports. */
export interface ReconcileHooks {
  /** Rebinds the metrics endpoint (undefined: off). */
  setMetrics?: (listen: string | undefined) => Promise<void>;
}

/**
 * Makes the switch match `next`: config ports that are gone are removed,
 * new ones added, changed ones re-created; unchanged ports are not touched
 * (their guests keep forwarding). Ports added by the CLI or the API are
 * left alone, and a config port whose name or path one of them holds is
 * refused before anything changes.
 */
export async function reconcile(
  ctl: Controller,
  prev: Config | undefined,
  next: Config,
  hooks: ReconcileHooks = {},
): Promise<ReloadResult> {
  const current = new Map(
    ctl.specs().filter((s) => s.origin === "config").map((s) => [s.spec.name, s.spec]),
  );
  const others = ctl.specs().filter((s) => s.origin !== "config").map((s) => s.spec);
  // Checked whole first: nothing changes if any port would clash.
  const errors: string[] = [];
  for (const s of next.ports) {
    try {
      checkSpec(s, others);
    } catch (e) {
      errors.push(`port ${s.name}: ${(e as Error).message}`);
    }
  }
  if (errors.length) {
    throw new UserError(`Cannot reload: ${errors.join("; ")} (nothing was changed)`, {
      status: 409,
    });
  }
  const result: ReloadResult = { added: [], removed: [], changed: [], unchanged: [], notes: [] };
  const wanted = new Map(next.ports.map((s) => [s.name, s]));
  for (const [name] of current) if (!wanted.has(name)) result.removed.push(name);
  for (const s of next.ports) {
    const cur = current.get(s.name);
    if (!cur) result.added.push(s.name);
    else if (sameSpec(cur, s)) result.unchanged.push(s.name);
    else result.changed.push(s.name);
  }
  try {
    for (const name of [...result.removed, ...result.changed]) await ctl.remove(name);
    for (const s of next.ports) {
      if (result.added.includes(s.name) || result.changed.includes(s.name)) {
        await ctl.add(s, "config");
      }
    }
  } catch (e) {
    throw new UserError(
      `Reload stopped part way: ${(e as Error).message} (fix it and reload again)`,
      { cause: e },
    );
  }
  if (next.fdbAging !== undefined && next.fdbAging !== prev?.fdbAging) {
    await ctl.sw.setFdbAging(next.fdbAging);
  }
  if (next.metrics !== prev?.metrics && hooks.setMetrics) await hooks.setMetrics(next.metrics);
  if (next.control !== prev?.control) {
    result.notes.push("control socket changes take effect when the switch restarts");
  }
  log
    .info`Reloaded: added ${result.added.length}, removed ${result.removed.length}, changed ${result.changed.length}, unchanged ${result.unchanged.length}`;
  return result;
}
