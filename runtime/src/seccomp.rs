//! The seccomp profile of every space: the policy of Docker's default
//! profile (moby/profiles `default.json`), as the `linux.seccomp` object of
//! the OCI spec that libcontainer loads before the space's init and every
//! exec start. A syscall not allowed here fails with `EPERM`.
//!
//! Docker gates some rules on capabilities; here they are decided from the
//! capabilities a space's processes hold (none for `sandbox`, Docker's
//! default set for root), so a root space may `chroot` (CAP_SYS_CHROOT), and
//! no space may mount, unshare, `setns`, load kernel modules, use `bpf`,
//! `perf_event_open`, keyrings or `clone` with namespace flags.

use std::collections::HashSet;
use std::sync::OnceLock;

use serde_json::{json, Value};

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

/// A condition on one argument (OCI `LinuxSeccompArg`).
#[derive(Clone, Copy)]
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
const ARCHES: (&[&str], &[&str]) = (
    &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    &["arch_prctl", "modify_ldt"],
);
#[cfg(target_arch = "aarch64")]
const ARCHES: (&[&str], &[&str]) = (
    &["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
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
const ARCHES: (&[&str], &[&str]) = (&["SCMP_ARCH_NATIVE"], &[]);

/// Whether the host's libseccomp knows `name` (libcontainer skips unknown
/// names with a warning, printed on the exec's stderr).
fn known(name: &str) -> bool {
    static UNKNOWN: OnceLock<HashSet<&'static str>> = OnceLock::new();
    let unknown = UNKNOWN.get_or_init(|| {
        ALLOWED
            .iter()
            .chain(ARCHES.1)
            .chain(RULES.iter().flat_map(|r| r.names))
            .copied()
            .filter(|n| libseccomp::ScmpSyscall::from_name(n).is_err())
            .collect()
    });
    !unknown.contains(name)
}

fn arg_json(index: u32, cond: Cond) -> Value {
    match cond {
        Cond::Eq(v) => json!({"index": index, "value": v, "op": "SCMP_CMP_EQ"}),
        Cond::Lt(v) => json!({"index": index, "value": v, "op": "SCMP_CMP_LT"}),
        Cond::Gt(v) => json!({"index": index, "value": v, "op": "SCMP_CMP_GT"}),
        // libcontainer 0.7 takes `valueTwo` as the mask and `value` as the
        // expected masked argument (runc reads them the other way round).
        Cond::NoBits(mask) => {
            json!({"index": index, "value": 0, "valueTwo": mask, "op": "SCMP_CMP_MASKED_EQ"})
        }
    }
}

/// The `linux.seccomp` object for a space whose processes hold `caps`.
pub fn profile(caps: &[String]) -> Value {
    profile_with(caps, known)
}

fn profile_with(caps: &[String], known: impl Fn(&str) -> bool) -> Value {
    let has = |c: &str| caps.iter().any(|x| x == c);
    let mut allowed: Vec<&str> = ALLOWED.iter().chain(ARCHES.1).copied().collect();
    let mut syscalls = Vec::new();
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
            continue;
        }
        let names: Vec<&str> = rule.names.iter().copied().filter(|n| known(n)).collect();
        if names.is_empty() {
            continue;
        }
        let mut s = json!({
            "names": names,
            "action": if rule.errno.is_some() { "SCMP_ACT_ERRNO" } else { "SCMP_ACT_ALLOW" },
        });
        if let Some(e) = rule.errno {
            s["errnoRet"] = e.into();
        }
        if !rule.args.is_empty() {
            s["args"] = rule.args.iter().map(|&(i, c)| arg_json(i, c)).collect();
        }
        syscalls.push(s);
    }
    allowed.retain(|n| known(n));
    syscalls.insert(0, json!({"names": allowed, "action": "SCMP_ACT_ALLOW"}));
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": ARCHES.0,
        "syscalls": syscalls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::capabilities_for;

    fn rules_of(p: &Value, name: &str) -> Vec<Value> {
        p["syscalls"]
            .as_array()
            .expect("syscalls")
            .iter()
            .filter(|s| {
                s["names"]
                    .as_array()
                    .expect("names")
                    .iter()
                    .any(|n| n == name)
            })
            .cloned()
            .collect()
    }

    fn allowed(p: &Value, name: &str) -> bool {
        rules_of(p, name)
            .iter()
            .any(|s| s["action"] == "SCMP_ACT_ALLOW" && s.get("args").is_none())
    }

    #[test]
    fn denies_by_default_with_eperm_on_the_host_arches() {
        let p = profile_with(&[], |_| true);
        assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(p["defaultErrnoRet"], 1);
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            p["architectures"],
            json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
        );
        for ok in [
            "read",
            "execve",
            "setsid",
            "wait4",
            "rt_sigtimedwait",
            "ptrace",
            "chown",
        ] {
            assert!(allowed(&p, ok), "{ok} allowed");
        }
    }

    #[test]
    fn sandbox_gets_no_capability_gated_syscall() {
        let p = profile_with(&capabilities_for(1000), |_| true);
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
            assert!(!allowed(&p, denied), "{denied} denied");
        }
    }

    #[test]
    fn root_gets_only_what_dockers_caps_allow() {
        let p = profile_with(&capabilities_for(0), |_| true);
        assert!(allowed(&p, "chroot"), "CAP_SYS_CHROOT allows chroot");
        for denied in [
            "mount",
            "unshare",
            "setns",
            "init_module",
            "bpf",
            "keyctl",
            "kexec_load",
        ] {
            assert!(!allowed(&p, denied), "{denied} denied");
        }
        let admin = profile_with(&["CAP_SYS_ADMIN".into()], |_| true);
        assert!(allowed(&admin, "mount") && allowed(&admin, "clone"));
        assert!(rules_of(&admin, "clone3")
            .iter()
            .all(|r| r.get("errnoRet").is_none()));
    }

    #[test]
    fn clone_needs_no_namespace_flags_and_clone3_is_enosys() {
        let p = profile_with(&[], |_| true);
        let clone = rules_of(&p, "clone");
        assert_eq!(clone.len(), 1);
        let arg = &clone[0]["args"][0];
        assert_eq!(arg["op"], "SCMP_CMP_MASKED_EQ");
        assert_eq!(arg["valueTwo"], 0x7E02_0000u64, "Docker's namespace mask");
        assert_eq!(arg["value"], 0);
        let clone3 = rules_of(&p, "clone3");
        assert_eq!(clone3[0]["errnoRet"], libc::ENOSYS);
    }

    #[test]
    fn socket_allows_every_family_but_alg_and_vsock() {
        let p = profile_with(&[], |_| true);
        let ok = |family: u64| {
            rules_of(&p, "socket").iter().any(|r| {
                let a = &r["args"][0];
                let v = a["value"].as_u64().expect("value");
                match a["op"].as_str() {
                    Some("SCMP_CMP_LT") => family < v,
                    Some("SCMP_CMP_EQ") => family == v,
                    Some("SCMP_CMP_GT") => family > v,
                    _ => false,
                }
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
    fn names_the_host_libseccomp_does_not_know_are_left_out() {
        let p = profile_with(&[], |n| n != "mseal");
        assert!(!allowed(&p, "mseal") && allowed(&p, "read"));
        // The real resolver knows the basics.
        assert!(known("read") && known("clone3"));
    }

    #[test]
    fn the_profile_is_a_valid_oci_seccomp_object() {
        let p = profile(&capabilities_for(0));
        let s: libcontainer::oci_spec::runtime::LinuxSeccomp =
            serde_json::from_value(p).expect("LinuxSeccomp");
        assert!(s.syscalls().as_ref().is_some_and(|v| v.len() > 5));
    }
}
