//! Test-only probe that the runtime's tests compile (static, see
//! `tests/common/probe.rs`) and run inside spaces: it makes one syscall and
//! prints `ok`, or `errno=N`. It is never built into the daemon.
//!
//! Usage: `probe <what> [pid]`, or `probe frame <iface> <hex>…` to send
//! each hex string as a raw Ethernet frame (an AF_PACKET socket, as a
//! space with CAP_NET_RAW could).

use std::ffi::{c_char, c_int, c_long, c_void};
use std::os::fd::AsRawFd;

extern "C" {
    fn syscall(n: c_long, ...) -> c_long;
    fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int;
    fn sendto(
        fd: c_int,
        buf: *const c_void,
        len: usize,
        flags: c_int,
        addr: *const c_void,
        addrlen: u32,
    ) -> isize;
    fn if_nametoindex(name: *const c_char) -> u32;
    fn waitpid(pid: c_int, status: *mut c_int, options: c_int) -> c_int;
    fn _exit(code: c_int) -> !;
}

#[cfg(target_arch = "x86_64")]
mod nr {
    pub const KEYCTL: i64 = 250;
    pub const ADD_KEY: i64 = 248;
    pub const BPF: i64 = 321;
    pub const PERF_EVENT_OPEN: i64 = 298;
    pub const INIT_MODULE: i64 = 175;
    pub const FINIT_MODULE: i64 = 313;
    pub const PTRACE: i64 = 101;
    pub const CLONE: i64 = 56;
    pub const CLONE3: i64 = 435;
    pub const SOCKET: i64 = 41;
    pub const IO_URING_SETUP: i64 = 425;
    pub const CHROOT: i64 = 161;
    pub const PERSONALITY: i64 = 135;
}
#[cfg(target_arch = "aarch64")]
mod nr {
    pub const KEYCTL: i64 = 219;
    pub const ADD_KEY: i64 = 217;
    pub const BPF: i64 = 280;
    pub const PERF_EVENT_OPEN: i64 = 241;
    pub const INIT_MODULE: i64 = 105;
    pub const FINIT_MODULE: i64 = 273;
    pub const PTRACE: i64 = 117;
    pub const CLONE: i64 = 220;
    pub const CLONE3: i64 = 435;
    pub const SOCKET: i64 = 198;
    pub const IO_URING_SETUP: i64 = 425;
    pub const CHROOT: i64 = 51;
    pub const PERSONALITY: i64 = 92;
}

const SIGCHLD: i64 = 17;
const CLONE_NEWUSER: i64 = 0x1000_0000;
const PTRACE_ATTACH: i64 = 16;
const PTRACE_DETACH: i64 = 17;
const WALL: c_int = 0x4000_0000;

fn report(ret: c_long) {
    if ret < 0 {
        let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        println!("errno={e}");
    } else {
        println!("ok");
    }
}

/// `struct sockaddr_ll` of `<linux/if_packet.h>`.
#[repr(C)]
struct SockaddrLl {
    family: u16,
    protocol: u16,
    ifindex: i32,
    hatype: u16,
    pkttype: u8,
    halen: u8,
    addr: [u8; 8],
}

/// Sends each of `frames` (hex: destination MAC, source MAC, ethertype,
/// payload) on interface `iface` through an AF_PACKET raw socket.
fn send_frames(iface: &str, frames: &[String]) -> c_long {
    const AF_PACKET: c_int = 17;
    const SOCK_RAW: c_int = 3;
    const ETH_P_ALL: u16 = 0x0003;
    let name = std::ffi::CString::new(iface).expect("interface name");
    // SAFETY: a C string that lives for the call.
    let ifindex = unsafe { if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return -1;
    }
    // SAFETY: plain socket(2).
    let fd = unsafe { socket(AF_PACKET, SOCK_RAW, c_int::from(ETH_P_ALL.to_be())) };
    if fd < 0 {
        return -1;
    }
    for hex in frames {
        let frame: Vec<u8> = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex frame"))
            .collect();
        let mut to = SockaddrLl {
            family: AF_PACKET as u16,
            protocol: ETH_P_ALL.to_be(),
            ifindex: ifindex as i32,
            hatype: 0,
            pkttype: 0,
            halen: 6,
            addr: [0; 8],
        };
        to.addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: the frame and the address live for the call; the length
        // is the address's size.
        let n = unsafe {
            sendto(
                fd,
                frame.as_ptr() as *const c_void,
                frame.len(),
                0,
                &to as *const SockaddrLl as *const c_void,
                std::mem::size_of::<SockaddrLl>() as u32,
            )
        };
        if n < 0 {
            return -1;
        }
    }
    0
}

/// clone(2) with `flags` like fork: the child exits at once.
fn clone(flags: i64) -> c_long {
    // SAFETY: a fork-like clone (no new stack); the child only calls _exit.
    let pid = unsafe { syscall(nr::CLONE, flags, 0usize, 0usize, 0usize, 0usize) };
    if pid == 0 {
        // SAFETY: ends the child without running anything of the parent's.
        unsafe { _exit(0) }
    }
    if pid > 0 {
        let mut st = 0;
        // SAFETY: waits for the child just made.
        unsafe { waitpid(pid as c_int, &mut st, 0) };
    }
    pid
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let what = args.get(1).map(String::as_str).unwrap_or("");
    let pid: i64 = args.get(2).and_then(|p| p.parse().ok()).unwrap_or(1);
    let zeros = [0u8; 256];
    let z = zeros.as_ptr() as *const c_void;
    let empty = c"".as_ptr() as *const c_char;
    // SAFETY: each syscall gets valid pointers (a zeroed buffer, C strings,
    // an open fd) or plain integers.
    let ret = unsafe {
        match what {
            "keyctl" => syscall(nr::KEYCTL, 0i64, -3i64, 1i64),
            "add_key" => syscall(
                nr::ADD_KEY,
                c"user".as_ptr(),
                c"probe".as_ptr(),
                c"v".as_ptr(),
                1usize,
                -2i64,
            ),
            "bpf" => syscall(nr::BPF, 0i64, z, 128u32),
            "perf_event_open" => {
                let mut attr = [0u8; 128];
                attr[4..8].copy_from_slice(&128u32.to_ne_bytes());
                syscall(nr::PERF_EVENT_OPEN, attr.as_ptr(), 0i64, -1i64, -1i64, 0i64)
            }
            "init_module" => syscall(nr::INIT_MODULE, z, 64usize, empty),
            "finit_module" => {
                let f = std::fs::File::open("/proc/self/exe").expect("open self");
                syscall(nr::FINIT_MODULE, f.as_raw_fd() as i64, empty, 0i64)
            }
            "ptrace" => {
                let r = syscall(nr::PTRACE, PTRACE_ATTACH, pid, 0usize, 0usize);
                if r == 0 {
                    // Detach once the tracee stopped, then let it go on.
                    let mut st = 0;
                    waitpid(pid as c_int, &mut st, WALL);
                    syscall(nr::PTRACE, PTRACE_DETACH, pid, 0usize, 0usize);
                }
                r
            }
            "fork" => clone(SIGCHLD),
            "clone_newuser" => clone(CLONE_NEWUSER | SIGCHLD),
            // A size below the first version's: EINVAL from the kernel.
            "clone3" => syscall(nr::CLONE3, z, 0usize),
            "vsock" => syscall(nr::SOCKET, 40i64, 1i64, 0i64),
            "raw_socket" => syscall(nr::SOCKET, 2i64, 3i64, 1i64),
            "io_uring" => syscall(nr::IO_URING_SETUP, 1u32, z),
            "chroot" => syscall(nr::CHROOT, c"/".as_ptr()),
            "personality_query" => syscall(nr::PERSONALITY, 0xffff_ffffu64),
            "personality_no_aslr" => syscall(nr::PERSONALITY, 0x0040000u64),
            "frame" => send_frames(
                args.get(2).map(String::as_str).unwrap_or("eth0"),
                args.get(3..).unwrap_or(&[]),
            ),
            _ => {
                eprintln!("probe: unknown check {what:?}");
                std::process::exit(2)
            }
        }
    };
    report(ret);
}
