//! Traffic a test sends from inside a namespace: UDP datagrams and ICMP
//! echo requests through ordinary sockets.

use std::{
    net::{SocketAddr, UdpSocket},
    thread,
    time::{Duration, Instant},
};

use crate::{Netns, packet::checksum};

/// Sends `count` UDP datagrams of `payload` bytes from namespace `from` to
/// `dst`, from a fixed source address and port.
pub fn send_udp(from: &Netns, src: SocketAddr, dst: SocketAddr, count: usize, payload: usize) {
    let s: UdpSocket = from.run(move || UdpSocket::bind(src).expect("bind sender"));
    send_udp_on(&s, dst, count, payload);
}

/// Sends `count` datagrams of `payload` bytes on an already bound socket
/// (it stays in the namespace it was created in).
pub fn send_udp_on(s: &UdpSocket, dst: SocketAddr, count: usize, payload: usize) {
    let buf = vec![0x5a; payload];
    for _ in 0..count {
        // Back off when the socket buffer is full instead of dropping.
        loop {
            match s.send_to(&buf, dst) {
                Ok(_) => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    thread::sleep(Duration::from_micros(200));
                }
                Err(e) => panic!("send_to {dst}: {e}"),
            }
        }
    }
}

/// Sends `count` ICMP (or ICMPv6) echo requests with `payload` bytes from
/// namespace `from` to `dst` through a raw socket, and waits up to a second
/// for the replies. Returns the replies received.
pub fn ping(from: &Netns, dst: std::net::IpAddr, count: u16, payload: usize) -> usize {
    from.run(move || {
        use std::net::IpAddr;
        let (domain, proto, req_type) = match dst {
            IpAddr::V4(_) => (libc::AF_INET, libc::IPPROTO_ICMP, 8u8),
            IpAddr::V6(_) => (libc::AF_INET6, libc::IPPROTO_ICMPV6, 128u8),
        };
        // SAFETY: plain socket(2) call; the fd is closed below.
        let fd = unsafe { libc::socket(domain, libc::SOCK_RAW, proto) };
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        let (addr, len) = sockaddr(SocketAddr::new(dst, 0));
        for seq in 0..count {
            let mut pkt = vec![req_type, 0, 0, 0, 0x12, 0x34, (seq >> 8) as u8, seq as u8];
            pkt.extend(std::iter::repeat_n(0xa5, payload));
            if dst.is_ipv4() {
                let c = checksum(&pkt);
                pkt[2..4].copy_from_slice(&c.to_be_bytes());
            } // ICMPv6: the kernel fills in the checksum.
            // SAFETY: valid buffer and address for the call.
            let r = unsafe {
                libc::sendto(
                    fd,
                    pkt.as_ptr().cast(),
                    pkt.len(),
                    0,
                    (&raw const addr).cast(),
                    len,
                )
            };
            assert_eq!(
                r as usize,
                pkt.len(),
                "sendto: {}",
                std::io::Error::last_os_error()
            );
        }
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 200_000,
        };
        // SAFETY: valid option buffer.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                size_of_val(&tv) as u32,
            )
        };
        let mut replies = 0;
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut buf = [0u8; 65536];
        while replies < count as usize && Instant::now() < deadline {
            // SAFETY: valid buffer.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n <= 0 {
                continue;
            }
            let n = n as usize;
            let icmp = if dst.is_ipv4() {
                &buf[((buf[0] & 0x0f) as usize * 4).min(n)..n]
            } else {
                &buf[..n]
            };
            if icmp.first() == Some(&(if dst.is_ipv4() { 0 } else { 129 })) {
                replies += 1;
            }
        }
        // SAFETY: closing the fd we opened.
        unsafe { libc::close(fd) };
        replies
    })
}

fn sockaddr(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match a {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { (&raw mut ss).cast::<libc::sockaddr_in>().write(sin) };
            (ss, size_of::<libc::sockaddr_in>() as u32)
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as u16,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { (&raw mut ss).cast::<libc::sockaddr_in6>().write(sin6) };
            (ss, size_of::<libc::sockaddr_in6>() as u32)
        }
    }
}
