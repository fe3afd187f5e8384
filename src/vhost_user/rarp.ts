/**
 * The frame SEND_RARP asks for (vhost-user.rst "VHOST_USER_SEND_RARP"):
 * after a migration, QEMU names the guest's MAC so the backend can
 * announce it on the guest's new port for guests that do not announce
 * themselves (no VIRTIO_NET_F_GUEST_ANNOUNCE). A broadcast RARP request
 * (RFC 903: ARP layout, EtherType 0x8035, opcode 3) from that MAC, as QEMU
 * itself sends for emulated NICs: switches on the way learn the MAC's new
 * place from its source address.
 *
 * @module
 */

/** EtherType of RARP (RFC 903). */
export const ETH_P_RARP = 0x8035;
/** Minimum Ethernet frame without FCS. */
const MIN_FRAME = 60;

/** A MAC that may be a frame's source: unicast and not all zero. */
export function isUnicastMac(mac: Uint8Array): boolean {
  return mac.length === 6 && (mac[0] & 1) === 0 && mac.some((b) => b !== 0);
}

/** A 60-byte broadcast RARP request from `mac` (6 bytes). */
export function rarpFrame(mac: Uint8Array): Uint8Array {
  const f = new Uint8Array(MIN_FRAME);
  const v = new DataView(f.buffer);
  f.fill(0xff, 0, 6); // destination: broadcast
  f.set(mac, 6); // source: the migrated guest
  v.setUint16(12, ETH_P_RARP);
  v.setUint16(14, 1); // hardware type: Ethernet
  v.setUint16(16, 0x0800); // protocol type: IPv4
  f[18] = 6; // hardware address length
  f[19] = 4; // protocol address length
  v.setUint16(20, 3); // opcode: reverse request
  f.set(mac, 22); // sender hardware address
  f.set(mac, 32); // target hardware address (protocol addresses stay 0)
  return f;
}
