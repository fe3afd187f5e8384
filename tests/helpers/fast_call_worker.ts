/**
 * Worker body for tests/ffi/fast_call_test.ts: the data path's FFI calls
 * (eventfd signal and read, as the switch's worker makes them per burst
 * and per wake-up) in a hot loop, long enough for V8 to optimize it.
 */
import { eventfdCreate, eventfdRead, eventfdSignal } from "../../ffi/eventfd.ts";
import { libc } from "../../ffi/libc.ts";

const efd = eventfdCreate();
let s = 0;
function step(i: number): void {
  if ((i & 3) === 0 && eventfdSignal(efd)) s++;
  if ((i & 7) === 0) s += eventfdRead(efd);
}
for (let i = 0; i < 2_000_000; i++) step(i);
libc.close(efd);
console.log(`calls done: ${s}`);
self.close();
