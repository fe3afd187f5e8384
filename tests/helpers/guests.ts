/**
 * Test guests: the shared guest image and QEMU guest N on the test's
 * 10.0.0.0/24 (MAC 52:54:00:00:00:0N, IP 10.0.0.N), its vhost-user socket
 * and console log in the test's directory.
 *
 * @module
 */

import { buildGuestImage, type GuestImage } from "../../src/guest/image.ts";
import { type GuestOptions, QemuGuest } from "../../src/guest/qemu.ts";

const WORK = new URL("../../.work", import.meta.url).pathname;

/** The guest image (built once into .work/guest, reused after). */
export async function guestImage(): Promise<GuestImage> {
  return await buildGuestImage(`${WORK}/guest`);
}

/** Guest `n` named `name`, with `extra` options over the defaults. */
export function testGuest(
  name: string,
  dir: string,
  n: number,
  img: GuestImage,
  extra: Partial<GuestOptions> = {},
): QemuGuest {
  return new QemuGuest({
    name,
    socketPath: `${dir}/${name}.sock`,
    mac: `52:54:00:00:00:0${n}`,
    ip: `10.0.0.${n}/24`,
    image: img,
    logFile: `${dir}/${name}.log`,
    ...extra,
  });
}
