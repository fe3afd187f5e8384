/**
 * The one binding to libc. Every symbol the switch uses is declared here,
 * with its C prototype; the thin wrappers in the other `ffi/` files add
 * errno handling and struct encoding.
 *
 * ABI notes (x86-64 System V, the only target):
 * - `ssize_t` results of read/write/readv/writev/recvmsg/sendmsg are declared
 *   `i32`: the value comes back in `rax` and reading `eax` is exact for every
 *   length below 2^31 and for -1. A 64-bit result would be a BigInt, an
 *   allocation per call on paths that run per batch.
 * - `size_t` parameters are `usize`. Calls on the data path pass a BigInt
 *   made once (a module constant such as `8n`, no allocation per call): V8's
 *   fast call for a 64-bit parameter takes a BigInt, and in a Worker a
 *   number there makes the optimized caller deoptimize ("not a BigInt")
 *   every time it is optimized again. Seen in bench:iperf with numbers: 400
 *   deopts of the worker's loop in one 10 s run, and V8's compiler threads
 *   using 0.42 of a core that the TCG guests lacked. tests/ffi/fast_call_test.ts
 *   guards it. Control-path calls may pass numbers (see `Widened`).
 * - `buffer` parameters take a Uint8Array (V8 fast call); `pointer`
 *   parameters take memory that is not a JS allocation (an mmap'd region).
 *
 * @module
 */

const SYMBOLS = {
  /** int *__errno_location(void); — the calling thread's errno. */
  __errno_location: { parameters: [], result: "pointer" },
  /** char *strerror(int errnum); */
  strerror: { parameters: ["i32"], result: "pointer" },
  /** int close(int fd); */
  close: { parameters: ["i32"], result: "i32" },

  // --- sockets (AF_UNIX stream) ---
  /** int socket(int domain, int type, int protocol); */
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  /** int socketpair(int domain, int type, int protocol, int sv[2]); */
  socketpair: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  /** int bind(int fd, const struct sockaddr *addr, socklen_t len); */
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  /** int listen(int fd, int backlog); */
  listen: { parameters: ["i32", "i32"], result: "i32" },
  /** int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags); */
  accept4: { parameters: ["i32", "pointer", "pointer", "i32"], result: "i32" },
  /** int connect(int fd, const struct sockaddr *addr, socklen_t len); */
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  /** ssize_t sendmsg(int fd, const struct msghdr *msg, int flags); */
  sendmsg: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  /** ssize_t recvmsg(int fd, struct msghdr *msg, int flags); */
  recvmsg: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  /** int shutdown(int fd, int how); */
  shutdown: { parameters: ["i32", "i32"], result: "i32" },

  // --- memory ---
  /** int memfd_create(const char *name, unsigned int flags); */
  memfd_create: { parameters: ["buffer", "u32"], result: "i32" },
  /** int ftruncate(int fd, off_t length); */
  ftruncate: { parameters: ["i32", "i64"], result: "i32" },
  /** int fstat(int fd, struct stat *st); */
  fstat: { parameters: ["i32", "buffer"], result: "i32" },
  /** int fcntl(int fd, int cmd, int arg); — the int-argument form only. */
  fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
  /** void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off); */
  mmap: { parameters: ["pointer", "usize", "i32", "i32", "i32", "i64"], result: "pointer" },
  /** int munmap(void *addr, size_t len); */
  munmap: { parameters: ["pointer", "usize"], result: "i32" },
  /**
   * void *mremap(void *old, size_t old_len, size_t new_len, int flags, ... void *new);
   * — variadic in C; glibc reads `new` with va_arg only under MREMAP_FIXED,
   * from the fifth integer register, where this fixed prototype puts it.
   */
  mremap: { parameters: ["pointer", "usize", "usize", "i32", "pointer"], result: "pointer" },

  /** int madvise(void *addr, size_t len, int advice); */
  madvise: { parameters: ["pointer", "usize", "i32"], result: "i32" },

  // --- eventfd / epoll ---
  /** int eventfd(unsigned int initval, int flags); */
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  /** int epoll_create1(int flags); */
  epoll_create1: { parameters: ["i32"], result: "i32" },
  /** int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev); */
  epoll_ctl: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  /** int epoll_wait(int epfd, struct epoll_event *evs, int max, int timeout); — sync poll. */
  epoll_wait: { parameters: ["i32", "buffer", "i32", "i32"], result: "i32" },
  /** The same call run on Deno's thread pool (~10–15 µs): idle sleeps only. */
  epoll_wait_nb: {
    name: "epoll_wait",
    parameters: ["i32", "buffer", "i32", "i32"],
    result: "i32",
    nonblocking: true,
  },

  // --- files, TAP ---
  /** int open(const char *path, int flags, mode_t mode); */
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  /** int ioctl(int fd, unsigned long req, void *arg); — pointer-argument form. */
  ioctl: { parameters: ["i32", "u64", "buffer"], result: "i32" },
  /** int ioctl(int fd, unsigned long req, unsigned long arg); — integer-argument form. */
  ioctl_int: { name: "ioctl", parameters: ["i32", "u64", "u64"], result: "i32" },
  /** ssize_t read(int fd, void *buf, size_t n); — into a JS buffer. */
  read: { parameters: ["i32", "buffer", "usize"], result: "i32" },
  /** ssize_t read(int fd, void *buf, size_t n); — into foreign memory. */
  read_ptr: { name: "read", parameters: ["i32", "pointer", "usize"], result: "i32" },
  /** ssize_t write(int fd, const void *buf, size_t n); — from a JS buffer. */
  write: { parameters: ["i32", "buffer", "usize"], result: "i32" },
  /** ssize_t write(int fd, const void *buf, size_t n); — from foreign memory. */
  write_ptr: { name: "write", parameters: ["i32", "pointer", "usize"], result: "i32" },
  /** ssize_t readv(int fd, const struct iovec *iov, int iovcnt); */
  readv: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  /** ssize_t writev(int fd, const struct iovec *iov, int iovcnt); */
  writev: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  /** int unlink(const char *path); */
  unlink: { parameters: ["buffer"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

type Symbols = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

/**
 * The symbols with 64-bit integer parameters widened to `number | bigint`:
 * Deno converts a number argument exactly (it is below 2^53 by our checks),
 * which suits the control path; hot calls pass BigInt constants (above).
 */
type Widened = {
  [K in keyof Symbols]: Symbols[K] extends (...args: infer A) => infer R
    ? (...args: { [I in keyof A]: A[I] extends bigint ? number | bigint : A[I] }) => R
    : Symbols[K];
};

/** The opened library; one per thread (each Worker opens its own). */
export const libc: Widened = Deno.dlopen("libc.so.6", SYMBOLS).symbols as unknown as Widened;

const errnoView = new Deno.UnsafePointerView(libc.__errno_location()!);

/**
 * The calling thread's errno. Read it right after the failing call: nothing
 * between the call and this read may make another libc call.
 */
export function errno(): number {
  return errnoView.getInt32(0);
}

/** The C library's message for an errno value. */
export function strerror(code: number): string {
  const p = libc.strerror(code);
  return p === null ? `errno ${code}` : Deno.UnsafePointerView.getCString(p);
}

const encoder = new TextEncoder();

/** A NUL-terminated C string in a fresh buffer (control path only). */
export function cString(s: string): Uint8Array<ArrayBuffer> {
  const bytes = encoder.encode(s);
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}

/** A pointer's address as a number: exact, since user addresses are below 2^47. */
export function addressOf(p: Deno.PointerValue): number {
  return p === null ? 0 : Number(Deno.UnsafePointer.value(p));
}

/** A pointer object for an address held as a number. */
export function pointerAt(address: number): Deno.PointerValue {
  return Deno.UnsafePointer.create(BigInt(address));
}
