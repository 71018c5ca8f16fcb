//! TCP_NODELAY on the cluster bus links this node opened.
//!
//! Redis 7.0 disables Nagle's algorithm on the bus links it accepts but
//! not on the ones it opens (`strace`: `setsockopt(TCP_NODELAY)` follows
//! each `accept4` on the bus port, never a `connect`), and every node
//! sends its messages on the links it opened. A request and its answer
//! therefore travel on two different connections that each carry data one
//! way only: the peer never has data to piggyback an ACK on, delays it
//! (40 ms on Linux), and Nagle holds the next small message until that ACK.
//! Row fetches (`RowFetch` / `RowData`) then took 7.3 ms on average and 44
//! ms at p99 (`recsys bench hps --cache-mb 0 --fetch-timeout-ms 1000`).
//! Each announce interval this finds the process's TCP sockets whose peer
//! is a cluster node's bus port and sets TCP_NODELAY on them, as Redis does
//! on its client connections and accepted bus links.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::os::raw::c_int;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use redis_module::{Context, RedisValue};

use crate::util::reply_bytes;

/// Links switched to TCP_NODELAY (INFO).
pub static SET: AtomicU64 = AtomicU64::new(0);

/// The other nodes' bus addresses, from CLUSTER NODES (`ip:port@cport`).
fn bus_addresses(ctx: &Context) -> HashSet<SocketAddr> {
    let Ok(reply) = ctx.call("CLUSTER", &["NODES"][..]) else {
        return HashSet::new();
    };
    let text = match &reply {
        RedisValue::VerbatimString((_, bytes)) => bytes.clone(),
        other => reply_bytes(other).unwrap_or_default(),
    };
    String::from_utf8_lossy(&text)
        .lines()
        .filter(|l| !l.contains("myself"))
        .filter_map(|l| {
            let addr = l.split_whitespace().nth(1)?;
            let (ip_port, rest) = addr.split_once('@')?;
            let cport: u16 = rest.split(',').next()?.parse().ok()?;
            let ip: IpAddr = ip_port
                .rsplit_once(':')?
                .0
                .trim_matches(['[', ']'])
                .parse()
                .ok()?;
            Some(SocketAddr::new(ip, cport))
        })
        .collect()
}

/// The peer of socket `fd`, if it is a connected TCP socket.
fn peer(fd: c_int) -> Option<SocketAddr> {
    // SAFETY: a zeroed sockaddr_storage is a valid out buffer of its size.
    unsafe {
        let mut ss: libc::sockaddr_storage = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        if libc::getpeername(fd, &mut ss as *mut _ as *mut libc::sockaddr, &mut len) != 0 {
            return None;
        }
        match ss.ss_family as c_int {
            libc::AF_INET => {
                let a = &*(&ss as *const _ as *const libc::sockaddr_in);
                let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
                Some(SocketAddr::new(ip.into(), u16::from_be(a.sin_port)))
            }
            libc::AF_INET6 => {
                let a = &*(&ss as *const _ as *const libc::sockaddr_in6);
                let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
                Some(SocketAddr::new(ip.into(), u16::from_be(a.sin6_port)))
            }
            _ => None,
        }
    }
}

/// Sets TCP_NODELAY on every socket of this process connected to another
/// node's bus port. Main thread; a few hundred system calls at most.
pub fn apply(ctx: &Context) {
    let nodes = bus_addresses(ctx);
    if nodes.is_empty() {
        return;
    }
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    for entry in dir.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<c_int>().ok())
        else {
            continue;
        };
        let Some(addr) = peer(fd) else { continue };
        if !nodes.contains(&addr) {
            continue;
        }
        let one: c_int = 1;
        let mut now: c_int = 0;
        let mut len = std::mem::size_of::<c_int>() as libc::socklen_t;
        // SAFETY: `fd` is a socket of this process (getpeername succeeded);
        // the option buffers are c_int sized.
        unsafe {
            if libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                &mut now as *mut c_int as *mut _,
                &mut len,
            ) == 0
                && now == 0
                && libc::setsockopt(
                    fd,
                    libc::IPPROTO_TCP,
                    libc::TCP_NODELAY,
                    &one as *const c_int as *const _,
                    std::mem::size_of::<c_int>() as libc::socklen_t,
                ) == 0
            {
                SET.fetch_add(1, Relaxed);
            }
        }
    }
}
