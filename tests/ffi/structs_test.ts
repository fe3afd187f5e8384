/**
 * Every struct layout in ffi/structs.ts against the system's own headers:
 * a C program prints sizeof/offsetof and we compare.
 */
import { assertEquals } from "@std/assert";
import {
  CMSGHDR,
  cmsgLen,
  cmsgSpace,
  EPOLL_EVENT,
  IFREQ,
  IOVEC,
  MSGHDR,
  SOCKADDR_UN,
  STAT,
} from "../../ffi/structs.ts";
import * as K from "../../ffi/constants.ts";
import { hasCommand, requireOrSkip } from "../helpers/env.ts";

const C_SOURCE = `
#define _GNU_SOURCE
#include <stdio.h>
#include <sys/ioctl.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/uio.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <fcntl.h>
#include <net/if.h>
#include <linux/if_tun.h>
#define P(name, v) printf("%s %lu\\n", name, (unsigned long)(v))
int main(void) {
  P("sockaddr_un.size", sizeof(struct sockaddr_un));
  P("sockaddr_un.sun_family", offsetof(struct sockaddr_un, sun_family));
  P("sockaddr_un.sun_path", offsetof(struct sockaddr_un, sun_path));
  P("sockaddr_un.pathCapacity", sizeof(((struct sockaddr_un *)0)->sun_path));
  P("iovec.size", sizeof(struct iovec));
  P("iovec.iov_base", offsetof(struct iovec, iov_base));
  P("iovec.iov_len", offsetof(struct iovec, iov_len));
  P("msghdr.size", sizeof(struct msghdr));
  P("msghdr.msg_name", offsetof(struct msghdr, msg_name));
  P("msghdr.msg_namelen", offsetof(struct msghdr, msg_namelen));
  P("msghdr.msg_iov", offsetof(struct msghdr, msg_iov));
  P("msghdr.msg_iovlen", offsetof(struct msghdr, msg_iovlen));
  P("msghdr.msg_control", offsetof(struct msghdr, msg_control));
  P("msghdr.msg_controllen", offsetof(struct msghdr, msg_controllen));
  P("msghdr.msg_flags", offsetof(struct msghdr, msg_flags));
  P("cmsghdr.size", sizeof(struct cmsghdr));
  P("cmsghdr.cmsg_len", offsetof(struct cmsghdr, cmsg_len));
  P("cmsghdr.cmsg_level", offsetof(struct cmsghdr, cmsg_level));
  P("cmsghdr.cmsg_type", offsetof(struct cmsghdr, cmsg_type));
  { struct cmsghdr c; P("cmsghdr.data", (char *)CMSG_DATA(&c) - (char *)&c); }
  P("cmsg.space4", CMSG_SPACE(4)); P("cmsg.space32", CMSG_SPACE(32)); P("cmsg.len12", CMSG_LEN(12));
  P("epoll_event.size", sizeof(struct epoll_event));
  P("epoll_event.events", offsetof(struct epoll_event, events));
  P("epoll_event.data", offsetof(struct epoll_event, data));
  P("ifreq.size", sizeof(struct ifreq));
  P("ifreq.ifr_name", offsetof(struct ifreq, ifr_name));
  P("ifreq.nameCapacity", IFNAMSIZ);
  P("ifreq.ifr_flags", offsetof(struct ifreq, ifr_flags));
  P("stat.size", sizeof(struct stat));
  P("stat.st_mode", offsetof(struct stat, st_mode));
  P("stat.st_size", offsetof(struct stat, st_size));
  P("k.SOCK_NONBLOCK", SOCK_NONBLOCK); P("k.SOCK_CLOEXEC", SOCK_CLOEXEC);
  P("k.MSG_CTRUNC", MSG_CTRUNC); P("k.MSG_NOSIGNAL", MSG_NOSIGNAL); P("k.MSG_CMSG_CLOEXEC", MSG_CMSG_CLOEXEC);
  P("k.F_GET_SEALS", F_GET_SEALS); P("k.F_ADD_SEALS", F_ADD_SEALS); P("k.F_SEAL_SHRINK", F_SEAL_SHRINK);
  P("k.EFD_NONBLOCK", EFD_NONBLOCK); P("k.EFD_CLOEXEC", EFD_CLOEXEC);
  P("k.EPOLL_CLOEXEC", EPOLL_CLOEXEC); P("k.EPOLLRDHUP", EPOLLRDHUP);
  P("k.TUNSETIFF", TUNSETIFF); P("k.TUNSETOFFLOAD", TUNSETOFFLOAD); P("k.TUNSETVNETHDRSZ", TUNSETVNETHDRSZ);
  P("k.TUNGETIFF", TUNGETIFF); P("k.IFF_VNET_HDR", IFF_VNET_HDR); P("k.IFF_MULTI_QUEUE", IFF_MULTI_QUEUE);
  P("k.IFF_TAP", IFF_TAP); P("k.IFF_NO_PI", IFF_NO_PI); P("k.TUN_F_CSUM", TUN_F_CSUM); P("k.TUN_F_TSO4", TUN_F_TSO4);
  P("k.MAP_SHARED", MAP_SHARED); P("k.MFD_ALLOW_SEALING", MFD_ALLOW_SEALING);
  return 0;
}
`;

async function measured(): Promise<Map<string, number>> {
  const dir = await Deno.makeTempDir({ prefix: "vswitch-layout-" });
  try {
    await Deno.writeTextFile(`${dir}/l.c`, C_SOURCE);
    const cc = await new Deno.Command("cc", { args: [`${dir}/l.c`, "-o", `${dir}/l`] }).output();
    if (!cc.success) {
      throw new Error(`Cannot compile layout probe: ${new TextDecoder().decode(cc.stderr)}`);
    }
    const out = await new Deno.Command(`${dir}/l`).output();
    const lines = new TextDecoder().decode(out.stdout).trim().split("\n");
    return new Map(lines.map((l) => [l.split(" ")[0], Number(l.split(" ")[1])]));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const STRUCTS: Record<string, Record<string, number>> = {
  sockaddr_un: SOCKADDR_UN,
  iovec: IOVEC,
  msghdr: MSGHDR,
  cmsghdr: CMSGHDR,
  epoll_event: EPOLL_EVENT,
  ifreq: IFREQ,
  stat: STAT,
};

Deno.test("struct sizes and offsets match the C headers", async () => {
  if (!requireOrSkip("struct layout test", hasCommand("cc") ? undefined : "no C compiler (cc)")) {
    return;
  }
  const c = await measured();
  for (const [struct, layout] of Object.entries(STRUCTS)) {
    for (const [field, value] of Object.entries(layout)) {
      assertEquals(value, c.get(`${struct}.${field}`), `${struct}.${field}`);
    }
  }
  assertEquals(cmsgSpace(4), c.get("cmsg.space4"));
  assertEquals(cmsgSpace(32), c.get("cmsg.space32"));
  assertEquals(cmsgLen(12), c.get("cmsg.len12"));
  for (const [key, value] of c) {
    if (!key.startsWith("k.")) continue;
    assertEquals((K as Record<string, unknown>)[key.slice(2)], value, key);
  }
});
