/**
 * vhost-user wire format (qemu docs/interop/vhost-user.rst): request codes,
 * header flags, payload layouts and protocol feature bits.
 *
 * @module
 */

/** Front-end message types ("Front-end message types" in vhost-user.rst). */
export const Request = {
  /** Get the backend's virtio feature bits (reply: u64). */
  GET_FEATURES: 1,
  /** Set the negotiated virtio feature bits (u64). */
  SET_FEATURES: 2,
  /** Claim the backend for this frontend (no payload). */
  SET_OWNER: 3,
  /** Deprecated; reset the device to its initial state (no payload). */
  RESET_OWNER: 4,
  /** Share guest memory: region table + one fd per region. */
  SET_MEM_TABLE: 5,
  /** Set the dirty-log area (needs LOG_SHMFD; not supported). */
  SET_LOG_BASE: 6,
  /** Set the dirty-log eventfd (not supported). */
  SET_LOG_FD: 7,
  /** Set a ring's size (vring state). */
  SET_VRING_NUM: 8,
  /** Set a ring's desc/used/avail addresses (frontend virtual addresses). */
  SET_VRING_ADDR: 9,
  /** Set a ring's next avail index (vring state). */
  SET_VRING_BASE: 10,
  /** Stop a ring and return its next avail index (reply: vring state). */
  GET_VRING_BASE: 11,
  /** Set the eventfd the guest kicks; starts the ring. u64 index + no-fd bit. */
  SET_VRING_KICK: 12,
  /** Set the eventfd we signal to interrupt the guest. */
  SET_VRING_CALL: 13,
  /** Set the eventfd we signal on a ring error. */
  SET_VRING_ERR: 14,
  /** Get the protocol feature bits (reply: u64). */
  GET_PROTOCOL_FEATURES: 15,
  /** Set the negotiated protocol feature bits (u64). */
  SET_PROTOCOL_FEATURES: 16,
  /** Get the number of queue pairs supported (reply: u64; needs MQ). */
  GET_QUEUE_NUM: 17,
  /** Enable or disable a ring (vring state; num 1 = enable). */
  SET_VRING_ENABLE: 18,
  /** Ask the backend to broadcast a RARP for a MAC (needs RARP). */
  SEND_RARP: 19,
  /** Tell the backend the guest's MTU (u64; needs NET_MTU). */
  NET_SET_MTU: 20,
} as const;

/** The name of a request code, for logs. */
export function requestName(code: number): string {
  for (const [name, value] of Object.entries(Request)) if (value === code) return name;
  return `UNKNOWN(${code})`;
}

/** Protocol feature bits ("Protocol features" in vhost-user.rst). */
export const ProtocolFeature = {
  MQ: 0,
  LOG_SHMFD: 1,
  RARP: 2,
  REPLY_ACK: 3,
  NET_MTU: 4,
  BACKEND_REQ: 5,
  CONFIG: 9,
} as const;

/** What we offer: REPLY_ACK, MQ (one queue pair for now) and NET_MTU. */
export const OFFERED_PROTOCOL_FEATURES: bigint = (1n << BigInt(ProtocolFeature.MQ)) |
  (1n << BigInt(ProtocolFeature.REPLY_ACK)) |
  (1n << BigInt(ProtocolFeature.NET_MTU));

/** Queue pairs we report for GET_QUEUE_NUM. */
export const QUEUE_PAIRS = 1;

/** Header: u32 request, u32 flags, u32 size ("Message structure"). */
export const HEADER_SIZE = 12;
/** Flags: bits 0–1 carry the protocol version, which must be 1. */
export const VERSION_MASK = 0x3;
export const VERSION = 0x1;
/** Flags: this message is a reply. */
export const FLAG_REPLY = 0x4;
/** Flags: the frontend wants an ack (REPLY_ACK negotiated). */
export const FLAG_NEED_REPLY = 0x8;
/** The largest payload we accept; the biggest we use is 8 regions = 264 B. */
export const MAX_PAYLOAD = 4096;
/** The most fds one message may carry (VHOST_MEMORY_BASELINE_NREGIONS). */
export const MAX_FDS = 8;
/** The most memory regions in SET_MEM_TABLE. */
export const MAX_REGIONS = 8;
/** Largest ring we accept (VIRTIO 1.2 §2.7: Queue Size ≤ 32768). */
export const MAX_RING_SIZE = 32768;

/** Payload sizes. */
export const U64_SIZE = 8;
/** struct vhost_vring_state { u32 index; u32 num; } */
export const VRING_STATE_SIZE = 8;
/** struct vhost_vring_addr { u32 index, flags; u64 desc, used, avail, log; } */
export const VRING_ADDR_SIZE = 40;
/** Offsets inside the vring address payload. */
export const VRING_ADDR = { index: 0, flags: 4, desc: 8, used: 16, avail: 24, log: 32 } as const;
/** SET_VRING_ADDR flag: log used-ring writes (needs LOG_ALL; not supported). */
export const VHOST_VRING_F_LOG = 0x1;
/** Memory table header: u32 nregions, u32 padding. */
export const MEM_HEADER_SIZE = 8;
/** One region: u64 guest_phys_addr, memory_size, userspace_addr, mmap_offset. */
export const MEM_REGION_SIZE = 32;
/** Kick/call/err payload: bits 0–7 ring index, bit 8 "no fd" (polling / none). */
export const VRING_IDX_MASK = 0xff;
export const VRING_NOFD_MASK = 0x100;
