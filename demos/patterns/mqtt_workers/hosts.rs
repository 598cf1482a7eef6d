//! mqtt_workers/hosts.rs — `--hosts N`: more than one machine, on one machine. Each
//! group of workers runs in a network namespace of its own, a "host" joined to the
//! broker's namespace by a bridge of veth pairs.
//!
//! Demonstrates: a network namespace lives as long as a process is in it, so each is held
//! by a child of the master that made it with unshare(CLONE_NEWNET) and does nothing
//! else; the broker and the desk enter the first with setns(2), each worker its host's.
//! They die with the master (their parent-death signal), and their namespaces, links and
//! addresses with them: nothing is named in /run/netns, nothing is left on any exit path.
//! Run:     sudo cargo run -p mqtt_workers -- --hosts 2
//! Observe: `host` events; `nsenter --net=/proc/<holder>/ns/net ip addr` shows 10.77.0.1x.
//! Book:    book/src/patterns/mqtt_workers.md

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;

use anyhow::Context;
use nix::sched::{CloneFlags, setns, unshare};
use nix::unistd::{ForkResult, Pid, fork, getpid, pipe};
use proclab::fdio::{read_exact, write_all};
use proclab::narrate::event;
use proclab::{child, narrate};

use crate::broker::free_loopback_port;
use crate::options::Args;

/// The broker's address on the bridge, and its port there.
const BROKER_ON_THE_BRIDGE: (Ipv4Addr, u16) = (Ipv4Addr::new(10, 77, 0, 1), 1883);

/// Where the broker listens, and who connects where.
pub struct Network {
    pub listen: SocketAddr,
    external: Option<(String, u16)>,
    pub hosts: Option<Hosts>,
}

/// The pids that hold the namespaces: [0] the broker's, then one per host.
#[derive(Clone)]
pub struct Hosts {
    holders: Vec<Pid>,
}

impl Network {
    pub fn new(args: &Args) -> anyhow::Result<Network> {
        let external = args.broker.clone();
        let Some(count) = args.hosts else {
            let listen = free_loopback_port()?;
            return Ok(Network {
                listen,
                external,
                hosts: None,
            });
        };
        check_privilege()?;
        let holders = (0..=count)
            .map(|_| hold_a_namespace())
            .collect::<anyhow::Result<_>>()?;
        let hosts = Hosts { holders };
        hosts.build_the_bridge()?;
        let listen = SocketAddr::from((Ipv4Addr::UNSPECIFIED, BROKER_ON_THE_BRIDGE.1));
        Ok(Network {
            listen,
            external,
            hosts: Some(hosts),
        })
    }

    /// Where the workers connect: the bridge address, an external broker, or loopback.
    pub fn workers_connect_to(&self) -> (String, u16) {
        match (&self.external, &self.hosts) {
            (Some(broker), _) => broker.clone(),
            (None, Some(_)) => (BROKER_ON_THE_BRIDGE.0.to_string(), BROKER_ON_THE_BRIDGE.1),
            (None, None) => (Ipv4Addr::LOCALHOST.to_string(), self.listen.port()),
        }
    }

    /// Where the desk connects: in the broker's own namespace, its loopback.
    pub fn desk_connects_to(&self) -> (String, u16) {
        match &self.external {
            Some(broker) => broker.clone(),
            None => (Ipv4Addr::LOCALHOST.to_string(), self.listen.port()),
        }
    }
}

// ANCHOR: hold
/// Forks a child that makes a new network namespace and holds it (it only waits to be
/// killed): the namespace and everything in it vanish with the child.
fn hold_a_namespace() -> anyhow::Result<Pid> {
    let (ready_read, ready_write) = pipe().context("pipe")?;
    let master = getpid();
    // SAFETY: single-threaded here; the child calls unshare, writes one byte, then only
    // sleeps until its parent-death signal or the master's SIGKILL ends it.
    match unsafe { fork() }.context("fork")? {
        ForkResult::Child => child::run_then_exit(master, || {
            narrate::set_role("netns");
            unshare(CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
            write_all(&ready_write, b"!")?; // the namespace exists
            loop {
                nix::unistd::pause();
            }
        }),
        ForkResult::Parent { child } => {
            drop(ready_write);
            anyhow::ensure!(
                read_exact(&ready_read, &mut [0])?,
                "netns holder {child} died"
            );
            Ok(child)
        }
    }
}
// ANCHOR_END: hold

impl Hosts {
    // ANCHOR: bridge
    /// In the broker's namespace: a bridge with 10.77.0.1; per host, a veth pair whose
    /// one end is on the bridge and the other, `eth0` with 10.77.0.1x, in the host.
    fn build_the_bridge(&self) -> anyhow::Result<()> {
        let broker = self.holders[0];
        in_namespace(broker, "ip link set lo up")?;
        in_namespace(broker, "ip link add br0 type bridge")?;
        in_namespace(broker, "ip addr add 10.77.0.1/24 dev br0")?;
        in_namespace(broker, "ip link set br0 up")?;
        for (host, &holder) in self.holders.iter().enumerate().skip(1) {
            let pair = format!("ip link add h{host} type veth peer name eth0 netns {holder}");
            in_namespace(broker, &pair)?; // one end here, the other in the host
            in_namespace(broker, &format!("ip link set h{host} master br0 up"))?;
            in_namespace(holder, "ip link set lo up")?;
            let address = format!("10.77.0.{}", 10 + host);
            in_namespace(holder, &format!("ip addr add {address}/24 dev eth0"))?;
            in_namespace(holder, "ip link set eth0 up")?;
            event("host")
                .field("host", host)
                .field("holder", holder.as_raw())
                .field("address", &address)
                .say(format!(
                    "host {host}: netns of {holder}, eth0 {address}, veth h{host} on br0"
                ));
        }
        Ok(())
    }
    // ANCHOR_END: bridge

    /// In a worker's child: enter the namespace of the host of `slot`.
    pub fn enter(&self, slot: usize) -> anyhow::Result<()> {
        let host = 1 + slot % (self.holders.len() - 1);
        enter(self.holders[host])
    }

    /// In the broker's or the desk's child: enter the broker's namespace.
    pub fn enter_broker(&self) -> anyhow::Result<()> {
        enter(self.holders[0])
    }

    /// The holders, for the master to kill and reap at the end.
    pub fn holders(&self) -> &[Pid] {
        &self.holders
    }
}

/// setns(2) into the network namespace that process `holder` is in.
fn enter(holder: Pid) -> anyhow::Result<()> {
    let path = format!("/proc/{holder}/ns/net");
    let namespace = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
    setns(namespace, CloneFlags::CLONE_NEWNET).with_context(|| format!("setns({path})"))
}

/// Runs `command` (an `ip` command) in the network namespace of `holder`, with nsenter(1).
fn in_namespace(holder: Pid, command: &str) -> anyhow::Result<()> {
    let status = Command::new("nsenter")
        .arg(format!("--net=/proc/{holder}/ns/net"))
        .args(command.split(' '))
        .status()
        .context("nsenter (util-linux)")?;
    anyhow::ensure!(
        status.success(),
        "nsenter --net=/proc/{holder}/ns/net {command}: {status}"
    );
    Ok(())
}

/// --hosts needs CAP_SYS_ADMIN (unshare, setns) and CAP_NET_ADMIN (links, addresses).
fn check_privilege() -> anyhow::Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").context("/proc/self/status")?;
    let effective = status.lines().find_map(|line| line.strip_prefix("CapEff:"));
    let effective = effective.and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok());
    let needed = (1 << 21) | (1 << 12); // CAP_SYS_ADMIN, CAP_NET_ADMIN: capabilities(7)
    anyhow::ensure!(
        effective.unwrap_or(0) & needed == needed,
        "--hosts needs CAP_SYS_ADMIN and CAP_NET_ADMIN to make network namespaces: \
         run it as root, or without --hosts"
    );
    Ok(())
}
