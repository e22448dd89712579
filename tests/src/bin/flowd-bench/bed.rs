//! The live benchmarks' test bed, on the e2e harness (`flowd_tests`): the
//! harness's veth pair between two namespaces with GRO on the receiver, a
//! live-frame XDP traffic generator on the sender's end, and the flowd
//! daemon (`flowd_tests::Flowd`) inside the receiver's namespace. Guards
//! remove every namespace, mount and process created here, also on error;
//! processes are stopped by their PID.

use std::{
    net::SocketAddr,
    ops::Deref,
    os::fd::{AsFd, OwnedFd},
    process::Child,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use flowd_tests::{Flowd, Link, http_get, in_ns, packet::Ipv4Ends};

use super::raw::{self, BPF_PROG_TYPE_XDP, XDP_TX};

/// A destination MAC nobody has: the receiver's stack drops such frames as
/// PACKET_OTHERHOST right away (after XDP and packet taps saw them). The
/// harness's MACs are 02:f1:0d:XX:XX:01/02 with XX below 0x3f.
pub(super) const MAC_NOBODY: [u8; 6] = [0x02, 0xf1, 0x0d, 0xbe, 0x00, 0x99];

/// The harness's IPv4-only veth pair (`a` sends, `b` receives, static
/// neighbours: no packet crosses it unless a benchmark sends it), with GRO
/// on the receiver and what the generator needs. Derefs to the [`Link`].
pub(super) struct Pair {
    link: Link,
    /// ifindex of `if_a` inside `a` (the generator's ingress_ifindex).
    pub(super) ifindex_a: u32,
    /// Addresses of a frame from `a` to `b`.
    pub(super) ends: Ipv4Ends,
}

impl Deref for Pair {
    type Target = Link;
    fn deref(&self) -> &Link {
        &self.link
    }
}

impl Pair {
    pub(super) fn new() -> anyhow::Result<Self> {
        let link = Link::try_new()?;
        // GRO on the receiver turns on its NAPI, so frames transmitted by
        // XDP on the sender are received also when no XDP program runs there.
        link.b
            .try_exec(&["ethtool", "-K", &link.if_b, "gro", "on"])?;
        let name = link.if_a.clone();
        let ifindex_a = link.a.run_scoped(move || {
            flowd::loader::ifindex(&name).with_context(|| format!("no interface {name}"))
        })?;
        let ends = link.ipv4_a_to_b();
        Ok(Self {
            link,
            ifindex_a,
            ends,
        })
    }

    /// A frame from `a` to `b` at a MAC nobody has.
    pub(super) fn ends_to_nobody(&self) -> Ipv4Ends {
        Ipv4Ends {
            dst_mac: MAC_NOBODY,
            ..self.ends
        }
    }

    /// `flowd run --iface IF_B` (its defaults: flow capacity 65,536, drain
    /// interval 1 s) plus `extra` in the receiver's namespace, with its pins
    /// on a private bpffs; waits until it is ready.
    pub(super) fn start_daemon(&self, extra: &[&str]) -> anyhow::Result<Flowd> {
        let mut args = vec!["--iface", self.if_b.as_str()];
        args.extend_from_slice(extra);
        Flowd::try_start_env(&self.b, &args, &[("FLOWD_LOG", "warn")])
    }
}

/// An HTTP/1.0 GET to the daemon from inside its namespace: (status, body,
/// latency of the request alone).
pub(super) fn get(d: &Flowd, path: &str) -> anyhow::Result<(u16, String, Duration)> {
    let addr: SocketAddr = d.listen;
    in_ns(d.namespace(), move || {
        let t = Instant::now();
        let (status, body) = http_get(addr, path)?;
        Ok((status, body, t.elapsed()))
    })
}

/// The daemon's `/metrics` in the text format.
pub(super) fn metrics(d: &Flowd) -> anyhow::Result<String> {
    let (status, body, _) = get(d, "/metrics")?;
    ensure!(status == 200, "GET /metrics: {status}");
    Ok(body)
}

// ------------------------------------------------------------ generator

/// A live-frame XDP generator: `BPF_PROG_TEST_RUN` with
/// `BPF_F_TEST_XDP_LIVE_FRAMES` of a 2-instruction `XDP_TX` program
/// (`r0 = XDP_TX; exit`), on the sender's
/// end of the pair; every run transmits one frame to the peer.
pub(super) struct Generator {
    prog: OwnedFd,
    frame: Vec<u8>,
    ifindex: u32,
    ns: String,
}

impl Generator {
    /// Sends `frame` unchanged (one flow).
    pub(super) fn fixed(pair: &Pair, frame: Vec<u8>) -> anyhow::Result<Self> {
        let prog = raw::load_prog(
            BPF_PROG_TYPE_XDP,
            &raw::ret_insns(XDP_TX as i32),
            0,
            "bench_xdp_tx",
        )?;
        Ok(Self::with(pair, prog, frame))
    }

    /// Sends `frame` with a random source port and random low 16 bits of
    /// the source address (198.18.0.0/16) per frame: a new flow per frame.
    pub(super) fn random_sources(pair: &Pair, frame: Vec<u8>) -> anyhow::Result<Self> {
        let prog = raw::load_prog(
            BPF_PROG_TYPE_XDP,
            &raw::random_source_insns(),
            0,
            "bench_xdp_rand",
        )?;
        Ok(Self::with(pair, prog, frame))
    }

    fn with(pair: &Pair, prog: OwnedFd, frame: Vec<u8>) -> Self {
        Self {
            prog,
            frame,
            ifindex: pair.ifindex_a,
            ns: pair.a.name.clone(),
        }
    }

    /// Sends `count` frames as fast as the generator goes; returns the wall
    /// time it took.
    pub(super) fn burst(&self, count: u64) -> anyhow::Result<Duration> {
        let prog = self.prog.try_clone()?;
        let (frame, ifindex) = (self.frame.clone(), self.ifindex);
        in_ns(&self.ns, move || {
            let t = Instant::now();
            let mut left = count;
            while left > 0 {
                let n = left.min(u64::from(u32::MAX / 2)) as u32;
                raw::xdp_live_frames(prog.as_fd(), ifindex, &frame, n)
                    .context("BPF_PROG_TEST_RUN (live frames)")?;
                left -= u64::from(n);
            }
            Ok(t.elapsed())
        })
    }

    /// Sends `rate × secs` frames paced at `rate` per second, in slices of
    /// one millisecond. Returns (frames sent, wall time).
    pub(super) fn paced(&self, rate: u64, secs: f64) -> anyhow::Result<(u64, Duration)> {
        let prog = self.prog.try_clone()?;
        let (frame, ifindex) = (self.frame.clone(), self.ifindex);
        let total = (rate as f64 * secs).round() as u64;
        in_ns(&self.ns, move || {
            let start = Instant::now();
            let deadline = start + Duration::from_secs_f64(secs * 3.0 + 5.0);
            let mut sent = 0u64;
            let mut tick = 0u64;
            while sent < total {
                ensure!(
                    Instant::now() < deadline,
                    "paced sending fell far behind ({sent} of {total})"
                );
                let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
                if due > sent {
                    let n = (due - sent).min(u64::from(u32::MAX / 2)) as u32;
                    raw::xdp_live_frames(prog.as_fd(), ifindex, &frame, n)
                        .context("BPF_PROG_TEST_RUN (live frames)")?;
                    sent += u64::from(n);
                }
                tick += 1;
                let next = start + Duration::from_micros(tick * 1000);
                let now = Instant::now();
                if next > now {
                    thread::sleep(next - now);
                }
            }
            Ok((sent, start.elapsed()))
        })
    }
}

/// A child process stopped by its PID on drop (SIGINT, then SIGKILL).
pub(super) struct Proc {
    pub(super) child: Child,
}

impl Proc {
    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGINT by PID, then waits (at most `secs`) for the process to exit.
    pub(super) fn interrupt_and_wait(&mut self, secs: u64) -> anyhow::Result<()> {
        // SAFETY: signalling the child we spawned, by its PID.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(20));
        }
        bail!("process {} did not exit after SIGINT", self.child.id())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
