//! The seccomp filter of every space: the policy of Docker's default
//! profile (moby/profiles `default.json`). A syscall not allowed here fails
//! with `EPERM`.
//!
//! The filter is compiled to BPF once per capability set (libseccomp takes
//! ~10 ms for the three x86 architectures) and written into the space's
//! bundle ([`FILTER_FILE`]); it is loaded with one `prctl` right before
//! `execve`, by the space's executor for the init and by
//! [`crate::sandbox::join`] for every exec. It is not put into the OCI
//! spec's `linux.seccomp`: libcontainer 0.7 would compile it again for
//! every init.
//!
//! Docker gates some rules on capabilities; here they are decided from the
//! capabilities a space's processes hold (none for `sandbox`, Docker's
//! default set for root), so a root space may `chroot` (CAP_SYS_CHROOT), and
//! no space may mount, unshare, `setns`, load kernel modules, use `bpf`,
//! `perf_event_open`, keyrings or `clone` with namespace flags.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};

use crate::error::{Error, Result};

/// The file in a space's bundle that holds its compiled filter.
pub const FILTER_FILE: &str = "seccomp.bpf";

/// Syscalls every space may make, whatever its capabilities. Docker allows
/// `ptrace` and `process_vm_*` on kernels ≥ 4.8 (its pid namespace confines
/// them to the space), so they are here too.
const ALLOWED: &[&str] = &[
    "_llseek",
    "_newselect",
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "get_robust_list",
    "get_thread_area",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "getxattrat",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "io_setup",
    "io_submit",
    "ioctl",
    "ioprio_get",
    "ioprio_set",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listmount",
    "listxattr",
    "listxattrat",
    "llistxattr",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "mseal",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "process_vm_readv",
    "process_vm_writev",
    "pselect6",
    "pselect6_time64",
    "ptrace",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "removexattrat",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "riscv_hwprobe",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "set_robust_list",
    "set_thread_area",
    "set_tid_address",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "setsid",
    "setsockopt",
    "setuid",
    "setuid32",
    "setxattr",
    "setxattrat",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statmount",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "uretprobe",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// `errno` of the default action.
const EPERM: u32 = libc::EPERM as u32;

/// The namespace flags of clone(2): a `clone` with any of them needs
/// CAP_SYS_ADMIN.
const CLONE_NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u64;

/// When a rule applies, given the space's capabilities.
#[derive(Clone, Copy)]
enum When {
    Always,
    With(&'static str),
    Without(&'static str),
}

/// A condition on one argument.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Cond {
    Eq(u64),
    Lt(u64),
    Gt(u64),
    /// The argument has none of these bits set.
    NoBits(u64),
}

struct Rule {
    names: &'static [&'static str],
    /// `None` allows; `Some(e)` fails with errno `e`.
    errno: Option<u32>,
    when: When,
    /// Allowed only when every condition holds (on argument `.0`).
    args: &'static [(u32, Cond)],
}

const fn allow(names: &'static [&'static str], when: When) -> Rule {
    Rule {
        names,
        errno: None,
        when,
        args: &[],
    }
}

const fn allow_if(names: &'static [&'static str], arg: &'static [(u32, Cond)]) -> Rule {
    Rule {
        names,
        errno: None,
        when: When::Always,
        args: arg,
    }
}

/// Docker's conditional rules, for the architectures spaces run on.
const RULES: &[Rule] = &[
    // Every socket family but AF_ALG (38) and AF_VSOCK (40).
    allow_if(&["socket"], &[(0, Cond::Lt(libc::AF_ALG as u64))]),
    allow_if(&["socket"], &[(0, Cond::Eq(libc::AF_NFC as u64))]),
    allow_if(&["socket"], &[(0, Cond::Gt(libc::AF_VSOCK as u64))]),
    // personality(2): Linux, 32-bit Linux, UNAME26 of both, and the query.
    allow_if(&["personality"], &[(0, Cond::Eq(0))]),
    allow_if(&["personality"], &[(0, Cond::Eq(0x0008))]),
    allow_if(&["personality"], &[(0, Cond::Eq(0x0002_0000))]),
    allow_if(&["personality"], &[(0, Cond::Eq(0x0002_0008))]),
    allow_if(&["personality"], &[(0, Cond::Eq(0xffff_ffff))]),
    // clone without namespace flags; clone3 (whose flags live in memory
    // seccomp cannot read) answers ENOSYS so that libc falls back to clone.
    Rule {
        names: &["clone"],
        errno: None,
        when: When::Without("CAP_SYS_ADMIN"),
        args: &[(0, Cond::NoBits(CLONE_NAMESPACE_FLAGS))],
    },
    Rule {
        names: &["clone3"],
        errno: Some(libc::ENOSYS as u32),
        when: When::Without("CAP_SYS_ADMIN"),
        args: &[],
    },
    allow(
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "lsm_get_self_attr",
            "lsm_list_modules",
            "lsm_set_self_attr",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
        When::With("CAP_SYS_ADMIN"),
    ),
    allow(&["open_by_handle_at"], When::With("CAP_DAC_READ_SEARCH")),
    allow(&["reboot"], When::With("CAP_SYS_BOOT")),
    allow(&["chroot"], When::With("CAP_SYS_CHROOT")),
    allow(
        &["delete_module", "init_module", "finit_module"],
        When::With("CAP_SYS_MODULE"),
    ),
    allow(&["acct"], When::With("CAP_SYS_PACCT")),
    allow(
        &["kcmp", "pidfd_getfd", "process_madvise"],
        When::With("CAP_SYS_PTRACE"),
    ),
    allow(&["iopl", "ioperm"], When::With("CAP_SYS_RAWIO")),
    allow(
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
        When::With("CAP_SYS_TIME"),
    ),
    allow(&["vhangup"], When::With("CAP_SYS_TTY_CONFIG")),
    allow(
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
        When::With("CAP_SYS_NICE"),
    ),
    allow(&["syslog"], When::With("CAP_SYSLOG")),
    allow(&["bpf"], When::With("CAP_BPF")),
    allow(&["perf_event_open"], When::With("CAP_PERFMON")),
];

/// Architectures of the filter and syscalls only they have.
#[cfg(target_arch = "x86_64")]
const ARCHES: (&[ScmpArch], &[&str]) = (
    &[ScmpArch::X8664, ScmpArch::X86, ScmpArch::X32],
    &["arch_prctl", "modify_ldt"],
);
#[cfg(target_arch = "aarch64")]
const ARCHES: (&[ScmpArch], &[&str]) = (
    &[ScmpArch::Aarch64, ScmpArch::Arm],
    &[
        "arm_fadvise64_64",
        "arm_sync_file_range",
        "sync_file_range2",
        "breakpoint",
        "cacheflush",
        "set_tls",
    ],
);
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ARCHES: (&[ScmpArch], &[&str]) = (&[], &[]);

/// One rule of a space's filter.
#[derive(Debug, Clone, PartialEq)]
struct Syscalls {
    names: Vec<&'static str>,
    /// `None` allows; `Some(e)` fails with errno `e`.
    errno: Option<u32>,
    /// Allowed only when every condition holds (on argument `.0`).
    args: &'static [(u32, Cond)],
}

/// The rules of the filter for a space whose processes hold `caps`:
/// first one unconditional allow-list, then the conditional rules.
fn rules_for(caps: &[String]) -> Vec<Syscalls> {
    let has = |c: &str| caps.iter().any(|x| x == c);
    let mut allowed: Vec<&'static str> = ALLOWED.iter().chain(ARCHES.1).copied().collect();
    let mut rules = Vec::new();
    for rule in RULES {
        let applies = match rule.when {
            When::Always => true,
            When::With(c) => has(c),
            When::Without(c) => !has(c),
        };
        if !applies {
            continue;
        }
        if rule.errno.is_none() && rule.args.is_empty() {
            for n in rule.names {
                if !allowed.contains(n) {
                    allowed.push(n);
                }
            }
        } else {
            rules.push(Syscalls {
                names: rule.names.to_vec(),
                errno: rule.errno,
                args: rule.args,
            });
        }
    }
    rules.insert(
        0,
        Syscalls {
            names: allowed,
            errno: None,
            args: &[],
        },
    );
    rules
}

fn compare(index: u32, cond: Cond) -> ScmpArgCompare {
    match cond {
        Cond::Eq(v) => ScmpArgCompare::new(index, ScmpCompareOp::Equal, v),
        Cond::Lt(v) => ScmpArgCompare::new(index, ScmpCompareOp::Less, v),
        Cond::Gt(v) => ScmpArgCompare::new(index, ScmpCompareOp::Greater, v),
        Cond::NoBits(mask) => ScmpArgCompare::new(index, ScmpCompareOp::MaskedEqual(mask), 0),
    }
}

fn seccomp_err(what: &str) -> impl FnOnce(libseccomp::error::SeccompError) -> Error + '_ {
    move |e| Error::Container(format!("seccomp: {what}: {e}"))
}

/// Compiles the filter for `caps` with libseccomp into classic BPF, the
/// program `seccomp(2)` loads. Names the host's libseccomp does not know
/// are left out.
fn compile(caps: &[String]) -> Result<Vec<u8>> {
    let mut ctx =
        ScmpFilterContext::new(ScmpAction::Errno(EPERM as i32)).map_err(seccomp_err("new"))?;
    for &arch in ARCHES.0 {
        ctx.add_arch(arch).map_err(seccomp_err("add arch"))?;
    }
    ctx.set_ctl_optimize(2).map_err(seccomp_err("optimize"))?;
    for rule in rules_for(caps) {
        let action = match rule.errno {
            Some(e) => ScmpAction::Errno(e as i32),
            None => ScmpAction::Allow,
        };
        let cmps: Vec<ScmpArgCompare> = rule.args.iter().map(|&(i, c)| compare(i, c)).collect();
        for name in rule.names {
            let Ok(sc) = ScmpSyscall::from_name(name) else {
                continue;
            };
            ctx.add_rule_conditional(action, sc, &cmps)
                .map_err(seccomp_err(name))?;
        }
    }
    // SAFETY: memfd_create with a valid C string; the fd is owned below.
    let fd = unsafe { libc::memfd_create(c"seccomp".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(Error::io("memfd", std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just created and is owned by nothing else.
    let mut f = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    ctx.export_bpf(&f).map_err(seccomp_err("export"))?;
    let mut bpf = Vec::new();
    f.seek(SeekFrom::Start(0))
        .and_then(|_| f.read_to_end(&mut bpf))
        .map_err(|e| Error::io("read seccomp filter", e))?;
    Ok(bpf)
}

/// The compiled filter of a space whose processes hold `caps`. Compiling
/// costs ~10 ms (three architectures on x86_64), so each capability set is
/// compiled once per process; loading the result costs microseconds.
pub fn filter(caps: &[String]) -> Result<Arc<Vec<u8>>> {
    static CACHE: Mutex<BTreeMap<Vec<String>, Arc<Vec<u8>>>> = Mutex::new(BTreeMap::new());
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(f) = cache.get(caps) {
        return Ok(f.clone());
    }
    let f = Arc::new(compile(caps)?);
    cache.insert(caps.to_vec(), f.clone());
    Ok(f)
}

/// Loads a compiled filter into the calling thread's process (which must
/// have `no_new_privs` or CAP_SYS_ADMIN). Used in a space's processes just
/// before `execve`.
pub fn load(bpf: &[u8]) -> std::io::Result<()> {
    const INSN: usize = std::mem::size_of::<libc::sock_filter>();
    if bpf.is_empty() || !bpf.len().is_multiple_of(INSN) || bpf.len() / INSN > u16::MAX as usize {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    // Copy into properly aligned instructions.
    let insns: Vec<libc::sock_filter> = bpf
        .chunks_exact(INSN)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    let prog = libc::sock_fprog {
        len: insns.len() as u16,
        filter: insns.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points to `insns`, alive for the call; the kernel
    // copies the program.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const libc::sock_fprog,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::capabilities_for;

    fn rules_of(rules: &[Syscalls], name: &str) -> Vec<Syscalls> {
        rules
            .iter()
            .filter(|r| r.names.contains(&name))
            .cloned()
            .collect()
    }

    fn allowed(rules: &[Syscalls], name: &str) -> bool {
        rules_of(rules, name)
            .iter()
            .any(|r| r.errno.is_none() && r.args.is_empty())
    }

    #[test]
    fn allows_what_programs_need() {
        let r = rules_for(&[]);
        for ok in [
            "read",
            "execve",
            "setsid",
            "wait4",
            "rt_sigtimedwait",
            "ptrace",
            "chown",
            "close_range",
        ] {
            assert!(allowed(&r, ok), "{ok} allowed");
        }
        #[cfg(target_arch = "x86_64")]
        assert!(allowed(&r, "arch_prctl"));
    }

    #[test]
    fn sandbox_gets_no_capability_gated_syscall() {
        let r = rules_for(&capabilities_for(1000));
        for denied in [
            "mount",
            "umount2",
            "unshare",
            "setns",
            "init_module",
            "finit_module",
            "bpf",
            "perf_event_open",
            "keyctl",
            "add_key",
            "chroot",
            "reboot",
            "kexec_load",
            "open_by_handle_at",
            "syslog",
            "io_uring_setup",
            "clone3",
        ] {
            assert!(!allowed(&r, denied), "{denied} denied");
        }
    }

    #[test]
    fn root_gets_only_what_dockers_caps_allow() {
        let r = rules_for(&capabilities_for(0));
        assert!(allowed(&r, "chroot"), "CAP_SYS_CHROOT allows chroot");
        for denied in [
            "mount",
            "unshare",
            "setns",
            "init_module",
            "bpf",
            "keyctl",
            "kexec_load",
        ] {
            assert!(!allowed(&r, denied), "{denied} denied");
        }
        let admin = rules_for(&["CAP_SYS_ADMIN".into()]);
        assert!(allowed(&admin, "mount") && allowed(&admin, "clone"));
        assert!(rules_of(&admin, "clone3").iter().all(|r| r.errno.is_none()));
    }

    #[test]
    fn clone_needs_no_namespace_flags_and_clone3_is_enosys() {
        let r = rules_for(&[]);
        let clone = rules_of(&r, "clone");
        assert_eq!(clone.len(), 1);
        assert_eq!(clone[0].args, &[(0, Cond::NoBits(0x7E02_0000))]);
        let clone3 = rules_of(&r, "clone3");
        assert_eq!(clone3[0].errno, Some(libc::ENOSYS as u32));
    }

    #[test]
    fn socket_allows_every_family_but_alg_and_vsock() {
        let r = rules_of(&rules_for(&[]), "socket");
        let ok = |family: u64| {
            r.iter().any(|rule| match rule.args[0].1 {
                Cond::Lt(v) => family < v,
                Cond::Eq(v) => family == v,
                Cond::Gt(v) => family > v,
                Cond::NoBits(_) => false,
            })
        };
        for f in [
            libc::AF_UNIX,
            libc::AF_INET,
            libc::AF_INET6,
            libc::AF_NETLINK,
            libc::AF_PACKET,
        ] {
            assert!(ok(f as u64), "family {f}");
        }
        assert!(!ok(libc::AF_VSOCK as u64) && !ok(libc::AF_ALG as u64));
    }

    #[test]
    fn compiles_once_per_capability_set_into_loadable_bpf() {
        let a = filter(&capabilities_for(1000)).expect("compile");
        let b = filter(&capabilities_for(1000)).expect("cached");
        assert!(Arc::ptr_eq(&a, &b));
        let insns = a.len() / std::mem::size_of::<libc::sock_filter>();
        assert!(
            a.len().is_multiple_of(8) && insns > 100 && insns < 4096,
            "{insns}"
        );
        assert_ne!(*filter(&capabilities_for(0)).expect("root"), *a);
        assert!(load(&[1, 2, 3]).is_err());
    }
}
