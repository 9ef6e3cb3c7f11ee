//! CLI tests against two real `clawdspaced` daemons on loopback ports
//! (root only: the daemons run real containers; skipped otherwise).

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{serial, strip_ansi, wait_until, Cluster};
use serde_json::Value;

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
#[ignore = "needs root"]
fn discovery_list_and_a_stopped_server() {
    let _serial = serial();
    let Some(mut c) = Cluster::start(2) else {
        return;
    };
    let (n0, n1) = (c.name(0), c.name(1));
    let r = c.run(&["servers", "--refresh"]);
    r.expect_code(0);
    let mut entries = [
        format!("{n0}={}", c.daemons[0].url()),
        format!("{n1}={}", c.daemons[1].url()),
    ];
    entries.sort();
    assert_eq!(c.home.cache(), format!("{} {} ", entries[0], entries[1]));
    assert_eq!(r.stdout.matches(" online ").count(), 2, "{}", r.stdout);

    c.run(&["create", "one", "-m", "256m", "-s", &n0])
        .expect_code(0);
    c.run(&[
        "create", "two", "--server", &n1, "--memory", "256m", "--cpus", "0.5",
    ])
    .expect_code(0);
    assert_eq!(c.daemons[0].spaces(), vec!["one"]);
    assert_eq!(c.daemons[1].spaces(), vec!["two"]);
    let r = c.run(&["list"]);
    r.expect_code(0);
    let one = format!("{:<20} {:<12} {:<12} 1cpu, 0.2GB", "one", n0, "running");
    let two = format!("{:<20} {:<12} {:<12} 0.5cpu, 0.2GB", "two", n1, "running");
    assert!(r.stdout.contains(&one), "{}", r.stdout);
    assert!(r.stdout.contains(&two), "{}", r.stdout);
    let r = c.run(&["ls", "--json"]);
    let v: Value = serde_json::from_str(&r.stdout).expect("list --json");
    assert_eq!(v["spaces"].as_array().map(Vec::len), Some(2));

    // No GPU on this machine: --gpu fails and creates nothing.
    let r = c.run(&["create", "gpuspace", "--gpu"]);
    r.expect_code(1);
    assert!(
        r.stderr.contains("Error: No server with GPU found"),
        "{}",
        r.stderr
    );
    assert_eq!(c.daemons[0].spaces().len() + c.daemons[1].spaces().len(), 2);

    // A wrong key: the error names where the key came from.
    let mut wrong = c.home.cmd(&["exec", "one", "true"]);
    wrong.env("CLAWDSPACE_KEY", "not-the-key");
    let out = wrong.output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = strip_ansi(&String::from_utf8_lossy(&out.stderr));
    assert!(err.contains("refused the API key"), "{err}");
    assert!(err.contains("environment variable CLAWDSPACE_KEY"), "{err}");

    // One server down: list warns and still lists the other; exec works.
    c.daemons[1].stop();
    let r = c.run(&["list"]);
    r.expect_code(0);
    assert!(r.stdout.contains(&one), "{}", r.stdout);
    assert!(!r.stdout.contains("two "), "{}", r.stdout);
    assert!(r.stderr.contains("Warning: server"), "{}", r.stderr);
    assert!(r.stderr.contains(&c.daemons[1].url()), "{}", r.stderr);
    let r = c.run(&["exec", "one", "echo", "still", "here"]);
    r.expect_code(0);
    assert_eq!(r.stdout, "still here\n");
    let r = c.run(&["exec", "two", "true"]);
    r.expect_code(1);
    assert!(
        r.stderr.contains("Space 'two' not found on any server"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains(&c.daemons[1].url()), "{}", r.stderr);
    let r = c.run(&["servers"]);
    r.expect_code(0);
    assert!(r.stdout.contains(" offline"), "{}", r.stdout);
    // Back up: its space is there again.
    c.daemons[1].start();
    let r = c.run(&["list"]);
    r.expect_code(0);
    assert!(r.stdout.contains(&two), "{}", r.stdout);
}

#[test]
#[ignore = "needs root"]
fn space_lifecycle_and_exec() {
    let _serial = serial();
    let Some(c) = Cluster::start(2) else {
        return;
    };
    let r = c.run(&["create", "life", "--memory", "256m"]);
    r.expect_code(0);
    assert!(r.stdout.contains("Auto-selected server "), "{}", r.stdout);
    assert!(r.stdout.contains("✓ Created space: life"), "{}", r.stdout);
    let on = if c.daemons[0].spaces().contains(&"life".to_string()) {
        0
    } else {
        1
    };
    assert_eq!(c.daemons[on].spaces(), vec!["life"]);
    let server = c.name(on);
    let r = c.run(&["create", "life", "-s", &server, "-m", "256m"]);
    r.expect_code(1);
    assert!(
        r.stderr.contains("Error: Space already exists"),
        "{}",
        r.stderr
    );

    for stream in [true, false] {
        let pre: &[&str] = if stream {
            &["exec"]
        } else {
            &["exec", "--no-stream"]
        };
        let args = |rest: &[&str]| -> Vec<String> {
            pre.iter().chain(rest).map(|s| s.to_string()).collect()
        };
        let run = |rest: &[&str]| c.run(&refs(&args(rest)));
        let r = run(&["life", "echo out; echo err >&2; exit 3"]);
        r.expect_code(3);
        assert_eq!(r.stdout, "out\n", "stream={stream}");
        assert_eq!(r.stderr, "err\n", "stream={stream}");
        run(&["life", "exit 42"]).expect_code(42);
        let r = run(&["life", "true"]);
        r.expect_code(0);
        assert_eq!(r.stdout, "");
        // Quotes, backslashes, tabs and newlines reach `sh -c` intact.
        let r = run(&[
            "life",
            "printf '%s|' \"it's\" 'a \"b\"' 'c\\d' 'e\tf' 'g\nh'; echo",
        ]);
        r.expect_code(0);
        assert_eq!(
            r.stdout, "it's|a \"b\"|c\\d|e\tf|g\nh|\n",
            "stream={stream}"
        );
        // Arguments are joined with single spaces, as the original did.
        let r = run(&["life", "echo", "a", "b  c", "$HOME"]);
        r.expect_code(0);
        assert_eq!(r.stdout, "a b c /home/sandbox\n", "stream={stream}");
        // Large output on both streams at once.
        let r = run(&[
            "life",
            "head -c 400000 /dev/zero | tr '\\0' a; head -c 300000 /dev/zero | tr '\\0' b >&2",
        ]);
        r.expect_code(0);
        assert_eq!(r.stdout.trim_end().len(), 400_000, "stream={stream}");
        assert!(r.stdout.trim_end().bytes().all(|b| b == b'a'));
        assert_eq!(r.stderr.trim_end().len(), 300_000, "stream={stream}");
        // stdin is at end of file unless -i.
        let r = c.run_stdin(&refs(&args(&["life", "cat; echo done"])), "ignored\n");
        r.expect_code(0);
        assert_eq!(r.stdout, "done\n", "stream={stream}");
    }
    let r = c.run_stdin(&["exec", "-i", "life", "tr a-z A-Z"], "hello\nworld\n");
    r.expect_code(0);
    assert_eq!(r.stdout, "HELLO\nWORLD\n");
    let r = c.run_stdin(
        &["x", "--stdin", "--no-stream", "life", "wc -l"],
        "1\n2\n3\n",
    );
    r.expect_code(0);
    assert_eq!(r.stdout.trim(), "3");
    // Streaming: the first line arrives before the command ends.
    let mut child = c
        .home
        .cmd(&["exec", "life", "echo first; sleep 3; echo second"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let t = Instant::now();
    let mut out = child.stdout.take().expect("stdout");
    let mut buf = [0u8; 64];
    let n = out.read(&mut buf).expect("read");
    assert_eq!(&buf[..n], b"first\n");
    assert!(
        t.elapsed() < Duration::from_millis(2500),
        "not streamed: {:?}",
        t.elapsed()
    );
    assert!(child.wait().expect("wait").success());

    let r = c.run(&["stop", "life"]);
    r.expect_code(0);
    assert_eq!(r.stdout, format!("✓ Paused: life (on {server})\n"));
    assert_eq!(c.daemons[on].status("life").as_deref(), Some("paused"));
    let r = c.run(&["list"]);
    assert!(
        r.stdout
            .contains(&format!("{:<20} {:<12} paused", "life", server)),
        "{}",
        r.stdout
    );
    // exec wakes a paused space (streamed and plain).
    let r = c.run(&["exec", "life", "echo", "awake"]);
    r.expect_code(0);
    assert_eq!(r.stdout, "awake\n");
    assert_eq!(c.daemons[on].status("life").as_deref(), Some("running"));
    c.run(&["stop", "life"]).expect_code(0);
    let r = c.run(&["exec", "--no-stream", "life", "echo", "awake"]);
    r.expect_code(0);
    assert_eq!(r.stdout, "awake\n");
    c.run(&["stop", "life"]).expect_code(0);
    assert_eq!(c.daemons[on].status("life").as_deref(), Some("paused"));
    let r = c.run(&["start", "life"]);
    r.expect_code(0);
    assert_eq!(r.stdout, format!("✓ Started: life (on {server})\n"));
    assert_eq!(c.daemons[on].status("life").as_deref(), Some("running"));

    let r = c.run(&["system", "-s", &server]);
    r.expect_code(0);
    assert!(r.stdout.contains(&format!("System Status ({server}):")));
    assert!(r.stdout.contains("  Containers: 1 running"), "{}", r.stdout);

    // destroy asks; anything but y/Y (or end of file) cancels.
    let prompt = format!("Destroy space 'life' on {server}? [y/N] ");
    let r = c.run_stdin(&["destroy", "life"], "n\n");
    r.expect_code(0);
    assert_eq!(r.stdout, format!("{prompt}Cancelled.\n"));
    let r = c.run(&["destroy", "life"]);
    r.expect_code(0);
    assert_eq!(r.stdout, format!("{prompt}Cancelled.\n"));
    assert_eq!(c.daemons[on].spaces(), vec!["life"]);
    let r = c.run_stdin(&["destroy", "life"], "y\n");
    r.expect_code(0);
    assert_eq!(
        r.stdout,
        format!(
            "{prompt}✓ Destroyed: life (was on {server})\n  Its /workspace volume was kept \
             for a new space named 'life' (destroy --volume deletes it with the space).\n"
        )
    );
    assert!(c.daemons[on].spaces().is_empty());
    let r = c.run(&["destroy", "life", "-f"]);
    r.expect_code(1);
    assert!(
        r.stderr.contains("Error: Space 'life' not found"),
        "{}",
        r.stderr
    );

    // -f / --force, before or after the name.
    for (i, args) in [["destroy", "-f", "d1"], ["destroy", "d2", "--force"]]
        .iter()
        .enumerate()
    {
        let name = format!("d{}", i + 1);
        c.run(&["create", &name, "-s", &server, "-m", "256m"])
            .expect_code(0);
        let r = c.run(&args[..]);
        r.expect_code(0);
        assert!(
            r.stdout
                .starts_with(&format!("✓ Destroyed: {name} (was on {server})\n")),
            "{}",
            r.stdout
        );
    }
    assert!(c.daemons[on].spaces().is_empty());
}

/// A pseudo-terminal driving `clawdspace shell`.
struct Pty {
    master: File,
    output: Arc<Mutex<Vec<u8>>>,
}

impl Pty {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap_or_else(|e| e.into_inner())).to_string()
    }

    fn wait_for(&self, needle: &str, from: usize) -> usize {
        let ok = wait_until(Duration::from_secs(20), || {
            self.text()[from..].contains(needle)
        });
        let text = self.text();
        assert!(
            ok,
            "{needle:?} never appeared; terminal output:\n{}",
            &text[from..]
        );
        from + text[from..].find(needle).unwrap_or(0) + needle.len()
    }

    fn type_line(&mut self, line: &str) {
        self.master.write_all(line.as_bytes()).expect("type");
        self.master.write_all(b"\r").expect("type");
    }

    fn resize(&self, rows: u16, cols: u16) {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a `winsize` from a valid pointer; the fd
        // is our pty master.
        let r = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        assert_eq!(r, 0, "TIOCSWINSZ");
    }
}

#[test]
#[ignore = "needs root"]
fn shell_through_a_pseudo_terminal() {
    let _serial = serial();
    let Some(c) = Cluster::start(2) else {
        return;
    };
    c.run(&["create", "tty", "-m", "256m", "-s", &c.name(1)])
        .expect_code(0);
    let size = nix::pty::Winsize {
        ws_row: 30,
        ws_col: 100,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).expect("openpty");
    let mut cmd: Command = c.home.cmd(&["shell", "tty"]);
    cmd.env("TERM", "xterm")
        .stdin(Stdio::from(pty.slave.try_clone().expect("dup")))
        .stdout(Stdio::from(pty.slave.try_clone().expect("dup")))
        .stderr(Stdio::from(pty.slave));
    let mut child = cmd.spawn().expect("spawn shell");
    // The Command holds copies of the slave: drop them so that the master
    // sees end of file when the CLI exits.
    drop(cmd);
    let master = File::from(pty.master);
    let output: Arc<Mutex<Vec<u8>>> = Arc::default();
    {
        let mut reader = master.try_clone().expect("dup master");
        let output = output.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                output
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(&buf[..n]);
            }
        });
    }
    let mut term = Pty { master, output };
    let at = term.wait_for("$ ", 0);
    term.type_line("echo MARK$((6*7)); stty size; id -un; echo TERM=$TERM");
    let at = term.wait_for("MARK42", at);
    let at = term.wait_for("30 100", at);
    let at = term.wait_for("sandbox", at);
    let at = term.wait_for("TERM=xterm", at);
    // A window size change reaches the remote terminal.
    term.resize(40, 120);
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGWINCH).expect("SIGWINCH");
    std::thread::sleep(Duration::from_millis(500));
    term.type_line("stty size");
    let at = term.wait_for("40 120", at);
    // Ctrl-C goes to the remote shell, not to the CLI.
    term.master.write_all(b"sleep 30\r").expect("type");
    std::thread::sleep(Duration::from_millis(500));
    term.master.write_all(&[3]).expect("ctrl-c");
    term.type_line("echo after-interrupt");
    let _ = term.wait_for("after-interrupt\r\n", at);
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "CLI died on Ctrl-C"
    );
    term.type_line("exit 7");
    let ok = wait_until(Duration::from_secs(20), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    assert!(ok, "shell did not end:\n{}", term.text());
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(7), "output:\n{}", term.text());
}
