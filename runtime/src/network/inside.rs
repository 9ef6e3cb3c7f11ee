//! Configuring the inside of a space's namespace in-process: loopback and
//! `eth0` up, its MAC, the address, the default route. A short-lived thread joins
//! the namespace (`setns` changes only the calling thread) and uses the
//! classic interface ioctls, which saves the `ip -n … -batch` process a
//! create would otherwise start (~5 ms on a small host).

use std::fs::File;
use std::mem::size_of;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use libc::{c_char, c_short, c_ulong, c_ushort, c_void, sockaddr, sockaddr_in};

use crate::error::{Error, Result};

use super::config::Ipv4Net;

/// `struct rtentry` of `<net/route.h>` (not in the libc crate for glibc).
#[repr(C)]
struct RtEntry {
    rt_pad1: c_ulong,
    rt_dst: sockaddr,
    rt_gateway: sockaddr,
    rt_genmask: sockaddr,
    rt_flags: c_ushort,
    rt_pad2: c_short,
    rt_pad3: c_ulong,
    rt_pad4: *mut c_void,
    rt_metric: c_short,
    rt_dev: *mut c_char,
    rt_mtu: c_ulong,
    rt_window: c_ulong,
    rt_irtt: c_ushort,
}

fn sockaddr_of(ip: Ipv4Addr) -> sockaddr {
    let sin = sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    const _: () = assert!(size_of::<sockaddr_in>() == size_of::<sockaddr>());
    // SAFETY: both are 16-byte plain C structs; sockaddr_in is the AF_INET
    // view of a sockaddr.
    unsafe { std::mem::transmute::<sockaddr_in, sockaddr>(sin) }
}

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is a plain C struct for which all zeroes is valid.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in r.ifr_name.iter_mut().zip(name.bytes().take(15)) {
        *d = s as c_char;
    }
    r
}

fn ioctl<T>(sock: &OwnedFd, req: c_ulong, arg: &mut T, what: &str) -> Result<()> {
    // SAFETY: `req` is an interface or routing ioctl whose argument is the
    // `T` it is called with here (ifreq or rtentry), valid for the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), req as _, arg as *mut T) };
    if rc < 0 {
        return Err(Error::Network(format!(
            "{what}: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

fn up(sock: &OwnedFd, dev: &str) -> Result<()> {
    let mut r = ifreq(dev);
    r.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as c_short;
    ioctl(sock, libc::SIOCSIFFLAGS, &mut r, &format!("set {dev} up"))
}

fn socket() -> Result<OwnedFd> {
    // SAFETY: plain socket(2); the descriptor is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Error::Network(format!(
            "socket: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: fd is a new descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sets the MAC of `eth0` (a veth takes it while up); returns whether it
/// had another one.
fn set_eth0_mac(sock: &OwnedFd, mac: [u8; 6]) -> Result<bool> {
    let mut r = ifreq("eth0");
    ioctl(sock, libc::SIOCGIFHWADDR, &mut r, "read the MAC of eth0")?;
    // SAFETY: ifru_hwaddr is the sockaddr member of the ifreq union, which
    // SIOCGIFHWADDR just filled.
    let hw = unsafe { &mut r.ifr_ifru.ifru_hwaddr };
    if hw.sa_data.iter().zip(mac).all(|(d, s)| *d == s as c_char) {
        return Ok(false);
    }
    hw.sa_family = libc::ARPHRD_ETHER;
    for (d, s) in hw.sa_data.iter_mut().zip(mac) {
        *d = s as c_char;
    }
    ioctl(sock, libc::SIOCSIFHWADDR, &mut r, "set the MAC of eth0")?;
    Ok(true)
}

fn configure(mac: [u8; 6], addr: Ipv4Addr, subnet: Ipv4Net, gateway: Ipv4Addr) -> Result<()> {
    let sock = socket()?;
    up(&sock, "lo")?;
    set_eth0_mac(&sock, mac)?;
    let mut r = ifreq("eth0");
    r.ifr_ifru.ifru_addr = sockaddr_of(addr);
    ioctl(&sock, libc::SIOCSIFADDR, &mut r, "set the address of eth0")?;
    r.ifr_ifru.ifru_netmask = sockaddr_of(Ipv4Addr::from(subnet.mask()));
    ioctl(
        &sock,
        libc::SIOCSIFNETMASK,
        &mut r,
        "set the netmask of eth0",
    )?;
    up(&sock, "eth0")?;
    let any = sockaddr_of(Ipv4Addr::UNSPECIFIED);
    let mut route = RtEntry {
        rt_pad1: 0,
        rt_dst: any,
        rt_gateway: sockaddr_of(gateway),
        rt_genmask: any,
        rt_flags: libc::RTF_UP | libc::RTF_GATEWAY,
        rt_pad2: 0,
        rt_pad3: 0,
        rt_pad4: std::ptr::null_mut(),
        rt_metric: 0,
        rt_dev: std::ptr::null_mut(),
        rt_mtu: 0,
        rt_window: 0,
        rt_irtt: 0,
    };
    ioctl(&sock, libc::SIOCADDRT, &mut route, "add the default route")
}

/// Runs `f` on a short-lived thread inside namespace `netns`.
pub(super) fn in_netns<T: Send>(netns: &Path, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let ns =
        File::open(netns).map_err(|e| Error::Network(format!("open {}: {e}", netns.display())))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| Error::Network(format!("join {}: {e}", netns.display())))?;
            f()
        })
        .join()
        .map_err(|_| Error::Network("namespace setup thread panicked".into()))?
    })
}

/// In namespace `netns`: lo and eth0 up, `mac` on eth0, `addr` on it with
/// the netmask of `subnet`, default route via `gateway`.
pub fn setup(
    netns: &Path,
    mac: [u8; 6],
    addr: Ipv4Addr,
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
) -> Result<()> {
    in_netns(netns, || configure(mac, addr, subnet, gateway))
}

/// In namespace `netns`: loopback up (the namespace of a `none` space,
/// which libcontainer makes with `lo` down).
pub fn loopback_up(netns: &Path) -> Result<()> {
    in_netns(netns, || up(&socket()?, "lo"))
}

/// In namespace `netns`: `mac` on eth0 (for namespaces made before MACs
/// were derived from addresses); returns whether it had another one.
pub fn set_mac(netns: &Path, mac: [u8; 6]) -> Result<bool> {
    in_netns(netns, || set_eth0_mac(&socket()?, mac))
}
