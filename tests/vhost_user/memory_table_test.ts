import { assert, assertEquals, assertThrows } from "@std/assert";
import {
  MemoryTable,
  MemoryTableError,
  parseMemoryTable,
} from "../../src/vhost_user/memory_table.ts";
import { addSeals, ftruncate, memfdCreate } from "../../ffi/memory.ts";
import { F_SEAL_SHRINK } from "../../ffi/constants.ts";
import { SysError } from "../../ffi/errno.ts";
import { openFdCount } from "../helpers/env.ts";

type R = [number, number, number, number]; // gpa, size, uva, offset

function table(regions: R[], count = regions.length): Uint8Array {
  const out = new Uint8Array(8 + 32 * regions.length);
  const v = new DataView(out.buffer);
  v.setUint32(0, count, true);
  regions.forEach((r, i) =>
    r.forEach((x, j) => v.setBigUint64(8 + 32 * i + 8 * j, BigInt(x), true))
  );
  return out;
}

Deno.test("memory table parsing rejects every malformed shape (items 5, 6, 8, 28)", () => {
  const ok: R = [0, 0x10000, 0x7f0000000000, 0];
  const cases: [string, Uint8Array, number][] = [
    ["0 regions", table([]), 0],
    [
      "9 regions",
      table(Array.from({ length: 9 }, (_, i) => [i * 0x10000, 0x10000, i * 0x10000, 0] as R)),
      9,
    ],
    ["size disagrees with count", table([ok], 2), 2],
    ["fd count disagrees", table([ok]), 2],
    ["zero-size region", table([[0, 0, 0, 0]]), 1],
    ["gpa + size overflows", table([[2 ** 53 - 0x1000, 0x10000, 0, 0]]), 1],
    ["value beyond 2^53", table([[0, 0x10000, Number.MAX_SAFE_INTEGER + 2, 0]]), 1],
    ["overlapping guest-physical", table([[0, 0x10000, 0, 0], [0x8000, 0x10000, 0x100000, 0]]), 2],
    [
      "overlapping frontend-virtual",
      table([[0, 0x10000, 0, 0], [0x100000, 0x10000, 0x8000, 0]]),
      2,
    ],
  ];
  for (const [name, payload, fds] of cases) {
    assertThrows(() => parseMemoryTable(payload, fds), MemoryTableError, undefined, name);
  }
  assertThrows(
    () => parseMemoryTable(new Uint8Array(4), 0),
    MemoryTableError,
    "payload of 4 bytes",
  );
  assertEquals(parseMemoryTable(table([ok]), 1)[0].userAddr, 0x7f0000000000);
});

Deno.test("a region past the end of its file is refused and its fd closed (item 7)", () => {
  const before = openFdCount();
  const fd = memfdCreate("short");
  ftruncate(fd, 0x10000);
  const regions = parseMemoryTable(table([[0, 0x10000, 0x1000000, 0x1000]]), 1);
  const err = assertThrows(() => new MemoryTable(regions, [fd]), MemoryTableError);
  assert(err.message.includes("beyond the file"), err.message);
  assertEquals(openFdCount(), before, "the fd was closed");
});

Deno.test("a mapped table translates frontend-virtual addresses and honours the offset", () => {
  const fd = memfdCreate("two");
  ftruncate(fd, 0x20000);
  const regions = parseMemoryTable(
    table([[0, 0x10000, 0x7f0000000000, 0], [0x100000, 0x10000, 0x7f0000100000, 0x10000]]),
    1 + 1,
  );
  const fd2 = memfdCreate("two-b");
  ftruncate(fd2, 0x20000);
  const t = new MemoryTable(regions, [fd, fd2]);
  assertEquals(t.translateUser(0x7f0000100010, 16), { region: 1, offset: 0x10 });
  assertEquals(t.translateUser(0x7f000000fff8, 16), null, "crosses the end of region 0");
  assertEquals(t.unsealed, [0, 1]);
  const mapped = t.mapped();
  assertEquals(mapped[1].gpa, 0x100000);
  t.close();
  t.close(); // idempotent
});

Deno.test("seal policy (item 7): a memfd sealed against shrinking is trusted, others noted", () => {
  const sealed = memfdCreate("sealed");
  ftruncate(sealed, 0x10000);
  addSeals(sealed, F_SEAL_SHRINK);
  const plain = memfdCreate("plain");
  ftruncate(plain, 0x10000);
  const t = new MemoryTable(
    parseMemoryTable(table([[0, 0x10000, 0, 0], [0x10000, 0x10000, 0x10000, 0]]), 2),
    [sealed, plain],
  );
  try {
    assertEquals(t.unsealed, [1], "only the unsealed memfd is reported");
    // The seal is real: the frontend can no longer shrink the sealed file under us.
    assertThrows(() => ftruncate(sealed, 0x1000), SysError, "EPERM");
  } finally {
    t.close();
  }
});
