/**
 * Kernel constants for x86-64 Linux, each with the UAPI header it comes from.
 *
 * @module
 */

// <bits/socket.h>, <linux/socket.h>
export const AF_UNIX = 1;
export const SOCK_STREAM = 1;
export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;
export const SOL_SOCKET = 1;
/** <linux/socket.h>: cmsg_type carrying file descriptors. */
export const SCM_RIGHTS = 1;
/** <linux/socket.h>: control data was truncated (fds lost or dropped). */
export const MSG_CTRUNC = 0x8;
export const MSG_DONTWAIT = 0x40;
/** <linux/socket.h>: the peer never gets SIGPIPE from our sendmsg. */
export const MSG_NOSIGNAL = 0x4000;
/** <linux/socket.h>: received fds get FD_CLOEXEC. */
export const MSG_CMSG_CLOEXEC = 0x40000000;
export const SHUT_RDWR = 2;

// <asm-generic/fcntl.h>
export const O_RDONLY = 0;
export const O_RDWR = 2;
export const O_CREAT = 0o100;
export const O_NONBLOCK = 0o4000;
export const O_CLOEXEC = 0o2000000;
export const F_GETFL = 3;
export const F_SETFL = 4;
/** <linux/fcntl.h>: F_LINUX_SPECIFIC_BASE (1024) + 10. */
export const F_GET_SEALS = 1034;
export const F_ADD_SEALS = 1033;
export const F_SEAL_SEAL = 0x1;
export const F_SEAL_SHRINK = 0x2;
export const F_SEAL_GROW = 0x4;
export const F_SEAL_WRITE = 0x8;

// <linux/memfd.h>
export const MFD_CLOEXEC = 0x1;
export const MFD_ALLOW_SEALING = 0x2;

// <asm-generic/mman-common.h>, <linux/mman.h>
export const PROT_NONE = 0x0;
export const PROT_READ = 0x1;
export const PROT_WRITE = 0x2;
export const MAP_SHARED = 0x01;
export const MAP_PRIVATE = 0x02;
export const MAP_FIXED = 0x10;
export const MAP_ANONYMOUS = 0x20;
export const MAP_NORESERVE = 0x4000;
/** <asm-generic/mman-common.h>: leave the range out of core dumps (VmFlags "dd"). */
export const MADV_DONTDUMP = 16;
/** <linux/mman.h>: mremap flags. */
export const MREMAP_MAYMOVE = 0x1;
export const MREMAP_FIXED = 0x2;
/** mmap's error return, (void *)-1. */
export const MAP_FAILED = 0xffff_ffff_ffff_ffffn;

// <linux/eventfd.h>
export const EFD_SEMAPHORE = 0x1;
export const EFD_NONBLOCK = 0o4000;
export const EFD_CLOEXEC = 0o2000000;

// <linux/eventpoll.h>
export const EPOLL_CLOEXEC = 0o2000000;
export const EPOLL_CTL_ADD = 1;
export const EPOLL_CTL_DEL = 2;
export const EPOLL_CTL_MOD = 3;
export const EPOLLIN = 0x001;
export const EPOLLOUT = 0x004;
export const EPOLLERR = 0x008;
export const EPOLLHUP = 0x010;
export const EPOLLRDHUP = 0x2000;

// <linux/if_tun.h>
export const TUNSETIFF = 0x400454ca;
export const TUNSETOFFLOAD = 0x400454d0;
export const TUNSETVNETHDRSZ = 0x400454d8;
export const TUNGETIFF = 0x800454d2;
export const IFF_TUN = 0x0001;
export const IFF_TAP = 0x0002;
export const IFF_NO_PI = 0x1000;
export const IFF_VNET_HDR = 0x4000;
export const IFF_MULTI_QUEUE = 0x0100;
/** TUNSETOFFLOAD flags. */
export const TUN_F_CSUM = 0x01;
export const TUN_F_TSO4 = 0x02;
export const TUN_F_TSO6 = 0x04;
export const TUN_F_TSO_ECN = 0x08;
export const TUN_F_UFO = 0x10;
/** USO (UDP segmentation) for IPv4 / IPv6 (Linux 6.2+; older kernels refuse the flags). */
export const TUN_F_USO4 = 0x20;
export const TUN_F_USO6 = 0x40;

// <linux/stat.h>
export const S_IFMT = 0o170000;
export const S_IFREG = 0o100000;
