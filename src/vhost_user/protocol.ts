/**
 * vhost-user wire format (qemu docs/interop/vhost-user.rst): request codes,
 * header flags, payload layouts and protocol feature bits.
 *
 * @module
 */

/** A frontend broke the protocol: close its connection. */
export class ProtocolError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ProtocolError";
  }
}

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
  /** Share the dirty-page log: u64 size, u64 offset + its fd (needs LOG_SHMFD). */
  SET_LOG_BASE: 6,
  /** Set the eventfd that tells the frontend the log changed (needs LOG_SHMFD). */
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
  /** Track in-flight descriptors in a shared buffer (INFLIGHT_SHMFD; not offered). */
  GET_INFLIGHT_FD: 31,
  /** Give back the in-flight buffer after a restart (INFLIGHT_SHMFD; not offered). */
  SET_INFLIGHT_FD: 32,
  /** Disable every ring and go back to the initial state, ownership kept (RESET_DEVICE). */
  RESET_DEVICE: 34,
  /** How many memory regions we can hold (reply: u64; CONFIGURE_MEM_SLOTS). */
  GET_MAX_MEM_SLOTS: 36,
  /** Map one more region: single region description + its fd (CONFIGURE_MEM_SLOTS). */
  ADD_MEM_REG: 37,
  /** Unmap one region, named by guest address, user address and size (CONFIGURE_MEM_SLOTS). */
  REM_MEM_REG: 38,
  /** The virtio device status byte (u64; STATUS): DRIVER_OK starts, 0 resets. */
  SET_STATUS: 39,
  /** Read the device status back (reply: u64; STATUS). */
  GET_STATUS: 40,
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
  INFLIGHT_SHMFD: 12,
  RESET_DEVICE: 13,
  CONFIGURE_MEM_SLOTS: 15,
  STATUS: 16,
} as const;

/**
 * What we offer: MQ (one queue pair for now), LOG_SHMFD (migration's dirty
 * log), RARP (announcing a migrated guest), REPLY_ACK, NET_MTU,
 * RESET_DEVICE, CONFIGURE_MEM_SLOTS (memory hotplug) and STATUS. Not
 * INFLIGHT_SHMFD: QEMU's vhost-user-net never asks for it (README).
 */
export const OFFERED_PROTOCOL_FEATURES: bigint = [
  ProtocolFeature.MQ,
  ProtocolFeature.LOG_SHMFD,
  ProtocolFeature.RARP,
  ProtocolFeature.REPLY_ACK,
  ProtocolFeature.NET_MTU,
  ProtocolFeature.RESET_DEVICE,
  ProtocolFeature.CONFIGURE_MEM_SLOTS,
  ProtocolFeature.STATUS,
].reduce((f, b) => f | (1n << BigInt(b)), 0n);

/**
 * VHOST_F_LOG_ALL: the vhost feature bit (26) a frontend sets with
 * SET_FEATURES while it migrates, and clears after ("Migration"). We
 * offer it in GET_FEATURES; QEMU refuses to migrate without it.
 */
export const VHOST_F_LOG_ALL = 26;

/** Memory slots we report for GET_MAX_MEM_SLOTS (ADD_MEM_REG may fill them). */
export const MAX_MEM_SLOTS = 32;

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
/** SET_VRING_ADDR flag: log used-ring writes at the payload's log address. */
export const VHOST_VRING_F_LOG = 0x1;
/** SET_LOG_BASE payload: u64 mmap size, u64 mmap offset. */
export const LOG_BASE_SIZE = 16;
/** ADD_MEM_REG / REM_MEM_REG payload: u64 padding, then one region. */
export const MEM_REG_SIZE = 8 + 32;
/** The largest dirty log we map (covers 8 TiB of guest memory). */
export const MAX_LOG_SIZE = 256 * 1024 * 1024;
/** VIRTIO 1.2 §2.1: device status DRIVER_OK. */
export const STATUS_DRIVER_OK = 4;
/** Memory table header: u32 nregions, u32 padding. */
export const MEM_HEADER_SIZE = 8;
/** One region: u64 guest_phys_addr, memory_size, userspace_addr, mmap_offset. */
export const MEM_REGION_SIZE = 32;
/** Kick/call/err payload: bits 0–7 ring index, bit 8 "no fd" (polling / none). */
export const VRING_IDX_MASK = 0xff;
export const VRING_NOFD_MASK = 0x100;
