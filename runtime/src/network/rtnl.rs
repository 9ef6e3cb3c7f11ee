//! Links, addresses and neighbours of the host over rtnetlink, in-process:
//! no `ip` program is needed on the host, and no process is started per
//! operation. A small synchronous client (`netlink-sys` socket, messages
//! from `netlink-packet-route`): every operation here runs on the blocking
//! threads the network code already runs on, so an async runtime and its
//! connection task would buy nothing. A socket works in the network
//! namespace of the thread that opened it.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth, LinkAttribute,
    LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{NeighbourAttribute, NeighbourMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket};

use crate::error::{Error, Result};

/// The veth to make for a space: its host end, on which bridge, and its
/// peer, made directly inside the space's namespace.
pub struct Veth<'a> {
    /// Name of the host end.
    pub host: &'a str,
    /// The bridge the host end becomes an isolated port of.
    pub bridge: &'a str,
    /// Name of the peer (inside the namespace).
    pub peer: &'a str,
    /// MAC of the peer.
    pub peer_mac: [u8; 6],
    /// The namespace the peer is made in.
    pub peer_netns: BorrowedFd<'a>,
}

/// An rtnetlink socket of the calling thread's network namespace.
pub struct Rtnl {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

fn err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Network(format!("{what}: {e}"))
}

type IoResult<T> = std::io::Result<T>;

/// The index of link `name` in the calling thread's namespace.
pub fn index(name: &str) -> Result<u32> {
    let what = format!("find link {name}");
    let c = std::ffi::CString::new(name).map_err(|e| err(&what, e))?;
    // SAFETY: `c` is a NUL-terminated string valid for the call.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(err(&what, std::io::Error::last_os_error())),
        i => Ok(i),
    }
}

fn link(index: u32, name: Option<&str>) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    if let Some(n) = name {
        m.attributes.push(LinkAttribute::IfName(n.to_string()));
    }
    m
}

fn set_up(m: &mut LinkMessage) {
    m.header.flags = LinkFlags::Up;
    m.header.change_mask = LinkFlags::Up;
}

fn isolated_port() -> LinkAttribute {
    LinkAttribute::LinkInfo(vec![
        LinkInfo::PortKind(InfoPortKind::Bridge),
        LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::Isolated(
            true,
        )])),
    ])
}

impl Rtnl {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<Rtnl> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(|e| err("netlink socket", e))?;
        sock.bind_auto().map_err(|e| err("netlink bind", e))?;
        super::nfnl::set_timeout(&sock)?;
        Ok(Rtnl {
            sock,
            seq: 0,
            buf: vec![0; 64 * 1024],
        })
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> IoResult<u32> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut m = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        m.finalize();
        let mut bytes = vec![0; m.buffer_len()];
        m.serialize(&mut bytes);
        self.sock.send(&bytes, 0)?;
        Ok(self.seq)
    }

    /// Reads the answers to request `seq`, handing each inner message to
    /// `each`, until its acknowledgement (or, for a dump, its end).
    fn answers(&mut self, seq: u32, mut each: impl FnMut(RouteNetlinkMessage)) -> IoResult<()> {
        loop {
            let n = self.sock.recv(&mut &mut self.buf[..], 0)?;
            let mut at = 0;
            while at < n {
                let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[at..n])
                    .map_err(std::io::Error::other)?;
                let len = m.header.length as usize;
                if len == 0 {
                    break;
                }
                at += len.next_multiple_of(4);
                if m.header.sequence_number != seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(()),
                            Some(_) => Err(e.to_io()),
                        }
                    }
                    NetlinkPayload::Done(_) => return Ok(()),
                    NetlinkPayload::InnerMessage(i) => each(i),
                    _ => {}
                }
            }
        }
    }

    /// Sends `msg` and waits for the kernel's acknowledgement.
    fn ack(&mut self, msg: RouteNetlinkMessage, flags: u16) -> IoResult<()> {
        let seq = self.send(msg, flags | NLM_F_ACK)?;
        self.answers(seq, |_| {})
    }

    /// [`Rtnl::ack`], failing with `what`.
    fn request(&mut self, msg: RouteNetlinkMessage, flags: u16, what: &str) -> Result<()> {
        self.ack(msg, flags).map_err(|e| err(what, e))
    }

    /// Makes bridge `name`, up, with `addr/prefix`.
    pub fn add_bridge(
        &mut self,
        name: &str,
        mac: [u8; 6],
        addr: Ipv4Addr,
        prefix: u8,
    ) -> Result<()> {
        let what = format!("add bridge {name}");
        let mut m = link(0, Some(name));
        // A MAC of its own, set: the kernel then never gives the bridge
        // the lowest MAC of its ports, which changed at each new port and
        // cut the spaces that had the old one as their gateway's off.
        m.attributes.push(LinkAttribute::Address(mac.to_vec()));
        m.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        set_up(&mut m);
        self.request(
            RouteNetlinkMessage::NewLink(m),
            NLM_F_CREATE | NLM_F_EXCL,
            &what,
        )?;
        let mut a = AddressMessage::default();
        a.header.family = AddressFamily::Inet;
        a.header.prefix_len = prefix;
        a.header.index = index(name)?;
        a.attributes.push(AddressAttribute::Local(IpAddr::V4(addr)));
        a.attributes
            .push(AddressAttribute::Address(IpAddr::V4(addr)));
        self.request(
            RouteNetlinkMessage::NewAddress(a),
            NLM_F_CREATE | NLM_F_EXCL,
            &format!("add {addr}/{prefix} to {name}"),
        )
    }

    /// Sets the MAC of link `name`.
    pub fn set_mac(&mut self, name: &str, mac: [u8; 6]) -> Result<()> {
        let mut m = link(index(name)?, None);
        m.attributes.push(LinkAttribute::Address(mac.to_vec()));
        self.request(
            RouteNetlinkMessage::SetLink(m),
            0,
            &format!("set the MAC of {name}"),
        )
    }

    /// Makes `v`: the peer inside its namespace with its MAC, the host end
    /// up as an isolated port of the bridge.
    pub fn add_veth(&mut self, v: &Veth) -> Result<()> {
        let what = format!("add veth {}", v.host);
        let mut peer = link(0, Some(v.peer));
        peer.attributes
            .push(LinkAttribute::Address(v.peer_mac.to_vec()));
        peer.attributes
            .push(LinkAttribute::NetNsFd(v.peer_netns.as_raw_fd()));
        let mut m = link(0, Some(v.host));
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]));
        self.request(
            RouteNetlinkMessage::NewLink(m),
            NLM_F_CREATE | NLM_F_EXCL,
            &what,
        )?;
        // No IPv6 on the host end (a bridge port needs no address), set
        // before it is up: each link-local address is a route in the
        // host's IPv6 table, which the kernel walks whenever any link goes
        // down (a destroy), and each up link runs DAD and router
        // solicitations. A host without IPv6 has no such switch.
        let v6 = Path::new("/proc/sys/net/ipv6/conf").join(v.host);
        if v6.exists() {
            super::host::sysctl(&format!("ipv6/conf/{}/disable_ipv6", v.host), "1")?;
        }
        self.attach(v.host, v.bridge)
    }

    /// Makes existing link `name` an isolated port of `bridge` (ports
    /// reach the bridge, the gateway, but not each other) and sets it up.
    pub fn attach(&mut self, name: &str, bridge: &str) -> Result<()> {
        let what = format!("attach {name} to {bridge}");
        let mut t = crate::timing::Phases::new("attach");
        let mut m = link(index(name)?, None);
        m.attributes.push(LinkAttribute::Controller(index(bridge)?));
        t.mark("index");
        set_up(&mut m);
        self.request(RouteNetlinkMessage::SetLink(m), 0, &what)?;
        t.mark("master_up");
        // Port options apply once it is a port: a second message, and a
        // NEWLINK one (SETLINK ignores IFLA_LINKINFO), as `ip link set …
        // type bridge_slave` sends.
        let mut m = link(index(name)?, None);
        m.attributes.push(isolated_port());
        self.request(RouteNetlinkMessage::NewLink(m), 0, &what)
    }

    /// Deletes link `name` (with a veth, its peer goes too).
    pub fn del_link(&mut self, name: &str) -> Result<()> {
        let m = link(index(name)?, None);
        self.request(
            RouteNetlinkMessage::DelLink(m),
            0,
            &format!("delete link {name}"),
        )
    }

    /// Removes every IPv4 neighbour entry of link `name`.
    pub fn flush_neighbours(&mut self, name: &str) -> Result<()> {
        let what = format!("flush the neighbours of {name}");
        let ifindex = index(name)?;
        let mut q = NeighbourMessage::default();
        q.header.family = AddressFamily::Inet;
        let mut found = Vec::new();
        self.send(RouteNetlinkMessage::GetNeighbour(q), NLM_F_DUMP)
            .and_then(|seq| {
                self.answers(seq, |m| {
                    if let RouteNetlinkMessage::NewNeighbour(n) = m {
                        if n.header.ifindex == ifindex {
                            found.push(n);
                        }
                    }
                })
            })
            .map_err(|e| err(&what, e))?;
        for n in found {
            let mut d = NeighbourMessage::default();
            d.header = n.header;
            d.attributes = n
                .attributes
                .into_iter()
                .filter(|a| matches!(a, NeighbourAttribute::Destination(_)))
                .collect();
            match self.ack(RouteNetlinkMessage::DelNeighbour(d), 0) {
                // Gone meanwhile (expired).
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                r => r.map_err(|e| err(&what, e))?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::os::fd::AsFd;

    use super::*;

    /// Runs `f` on a thread in a new, empty network namespace (gone with
    /// the thread, and with it all `f` made); `ip`/`nft` started from that
    /// thread see it. Skipped (false) unless root.
    pub fn in_private_netns(f: impl FnOnce() + Send) -> bool {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return false;
        }
        std::thread::scope(|s| {
            s.spawn(|| {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare");
                f()
            })
            .join()
            .expect("test thread")
        });
        true
    }

    /// The stdout of `ip args…` (in the calling thread's namespace).
    pub fn ip(args: &str) -> String {
        let o = std::process::Command::new("ip")
            .args(args.split_whitespace())
            .output()
            .expect("ip");
        assert!(o.status.success(), "ip {args}");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    #[test]
    fn bridge_isolated_veth_port_neighbours_and_delete() {
        in_private_netns(|| {
            let mut nl = Rtnl::open().expect("open");
            let br_mac = [0x02, 0x63, 10, 9, 0, 1];
            nl.add_bridge("tbr", br_mac, Ipv4Addr::new(10, 9, 0, 1), 24)
                .expect("bridge");
            let br = ip("-d addr show tbr");
            assert!(
                br.contains("bridge") && br.contains("inet 10.9.0.1/24"),
                "{br}"
            );
            assert!(br.contains(",UP"), "{br}");
            let ns = std::fs::File::open("/proc/thread-self/ns/net").expect("ns");
            let mac = [0x02, 0x63, 10, 9, 0, 2];
            nl.add_veth(&Veth {
                host: "tv0",
                bridge: "tbr",
                peer: "tv1",
                peer_mac: mac,
                peer_netns: ns.as_fd(),
            })
            .expect("veth");
            let port = ip("-d link show tv0");
            assert!(
                port.contains("master tbr") && port.contains("isolated on"),
                "{port}"
            );
            assert!(ip("link show tv1").contains("02:63:0a:09:00:02"));
            assert_eq!(ip("-6 addr show dev tv0").trim(), "", "no IPv6 on the port");
            let v6 = std::fs::read_to_string("/proc/sys/net/ipv6/conf/tv0/disable_ipv6");
            assert_eq!(v6.expect("sysctl").trim(), "1");
            // A port with a lower MAC does not change the bridge's.
            ip("link set tv0 address 02:00:00:00:00:01");
            assert!(
                ip("link show tbr").contains("02:63:0a:09:00:01"),
                "{}",
                ip("link show tbr")
            );
            nl.set_mac("tbr", [0x02, 0x63, 10, 9, 0, 9]).expect("set");
            assert!(ip("link show tbr").contains("02:63:0a:09:00:09"));
            assert!(nl
                .add_bridge("tbr", br_mac, Ipv4Addr::new(10, 9, 0, 1), 24)
                .is_err());
            for n in ["10.9.0.5", "10.9.0.6"] {
                ip(&format!("neigh add {n} lladdr 02:00:00:00:00:05 dev tbr"));
            }
            ip("neigh add 10.9.0.7 lladdr 02:00:00:00:00:07 dev tv1");
            nl.flush_neighbours("tbr").expect("flush");
            assert_eq!(ip("-4 neigh show dev tbr").trim(), "");
            assert!(
                ip("-4 neigh show dev tv1").contains("10.9.0.7"),
                "other links keep theirs"
            );
            nl.del_link("tv0").expect("delete");
            assert!(index("tv1").is_err(), "the peer goes with it");
            assert!(nl.del_link("tv0").is_err());
        });
    }
}
