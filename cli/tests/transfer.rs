//! The CLI's create extras (--env, --env-file, --github-token-stdin,
//! --repo), `destroy --volume`, and `cp` both ways (files, directories,
//! stdin and stdout) against a real daemon. Needs root.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::process::Command;

use common::{serial, Cluster};

/// Host `sha256sum` of a file.
fn sha256(path: &std::path::Path) -> String {
    let o = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
#[ignore = "needs root"]
fn create_extras_and_destroy_keeping_or_removing_the_volume() {
    let _serial = serial();
    let Some(c) = Cluster::start(1) else {
        return;
    };
    let n0 = c.name(0);
    let envfile = c.base.join("local.env");
    fs::write(&envfile, "SECRET=s3\n").expect("env file");
    let r = c.run_stdin(
        &[
            "create",
            "e",
            "-m",
            "256m",
            "-s",
            &n0,
            "--network",
            "none",
            "--env",
            "A=1",
            "-e",
            "B=two words",
            "--env-file",
            envfile.to_str().expect("utf-8"),
            "--github-token-stdin",
        ],
        "tok-123\n",
    );
    r.expect_code(0);
    let r = c.run(&[
        "exec",
        "e",
        "echo \"$A|$B|$GITHUB_TOKEN\"; cat /workspace/.env; stat -c %a /workspace/.env",
    ]);
    r.expect_code(0);
    assert_eq!(r.stdout, "1|two words|tok-123\nSECRET=s3\n600\n");
    // A custom path for the file.
    c.run(&[
        "create",
        "p",
        "-m",
        "256m",
        "--network",
        "none",
        "--env-file",
        envfile.to_str().expect("utf-8"),
        "--env-file-path",
        "/workspace/conf/app.env",
    ])
    .expect_code(0);
    let r = c.run(&["exec", "p", "cat /workspace/conf/app.env"]);
    assert_eq!(r.stdout, "SECRET=s3\n");
    // Refusals say why, and leave no space.
    for (args, what) in [
        (vec!["--repo", "http://example.com/r.git"], "only https://"),
        (
            vec!["--repo", "https://127.0.0.1:1/r.git"],
            "git is not installed",
        ),
        (vec!["--env", "1BAD=x"], "Invalid env name"),
        (vec!["--env", "UNSET_HERE_42"], "not set here"),
    ] {
        let mut a = vec!["create", "bad", "-m", "256m", "--network", "none"];
        a.extend(args.iter().copied());
        let r = c.run(&a);
        r.expect_code(1);
        assert!(r.stderr.contains(what), "{args:?}: {}", r.stderr);
    }
    let r = c.run(&["create", "bad", "--branch", "main"]);
    assert_ne!(r.code, 0, "--branch needs --repo");
    assert!(!c.daemons[0].spaces().contains(&"bad".to_string()));

    // The volume is kept unless --volume, and comes back with the name.
    c.run(&["exec", "e", "echo kept > /workspace/k"])
        .expect_code(0);
    let r = c.run(&["destroy", "-f", "e"]);
    r.expect_code(0);
    assert!(r.stdout.contains("volume was kept"), "{}", r.stdout);
    c.run(&["create", "e", "-m", "256m", "--network", "none"])
        .expect_code(0);
    assert_eq!(c.run(&["exec", "e", "cat /workspace/k"]).stdout, "kept\n");
    let r = c.run(&["destroy", "-f", "--volume", "e"]);
    r.expect_code(0);
    assert!(r.stdout.contains("volume was removed"), "{}", r.stdout);
    c.run(&["create", "e", "-m", "256m", "--network", "none"])
        .expect_code(0);
    let r = c.run(&["exec", "e", "test -e /workspace/k"]);
    assert_eq!(r.code, 1, "a new, empty volume");
}

#[test]
#[ignore = "needs root"]
fn cp_copies_files_directories_and_stdio_both_ways() {
    let _serial = serial();
    let Some(c) = Cluster::start(1) else {
        return;
    };
    c.run(&["create", "c", "-m", "256m", "--network", "none"])
        .expect_code(0);
    let local = c.base.join("local");
    fs::create_dir_all(&local).expect("local dir");
    let s = |p: &std::path::Path| p.to_str().expect("utf-8").to_string();

    // A file of 3 MiB (not a multiple of any chunk size), up and down.
    let big = local.join("big.bin");
    let data: Vec<u8> = (0..3 * 1024 * 1024 + 7)
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    fs::write(&big, &data).expect("big file");
    fs::set_permissions(&big, fs::Permissions::from_mode(0o640)).expect("chmod");
    let r = c.run(&["cp", &s(&big), "c:/workspace/"]);
    r.expect_code(0);
    let r = c.run(&[
        "exec",
        "c",
        "sha256sum /workspace/big.bin; stat -c '%a %u' /workspace/big.bin",
    ]);
    assert_eq!(
        r.stdout,
        format!("{}  /workspace/big.bin\n640 1000\n", sha256(&big))
    );
    let back = local.join("back.bin");
    c.run(&["cp", "c:big.bin", &s(&back)]).expect_code(0);
    assert!(
        fs::read(&back).expect("downloaded") == data,
        "same bytes back"
    );
    // Into an existing local directory: under the remote name.
    let into = local.join("into");
    fs::create_dir_all(&into).expect("into");
    c.run(&["cp", "c:/workspace/big.bin", &s(&into)])
        .expect_code(0);
    assert_eq!(sha256(&into.join("big.bin")), sha256(&big));

    // A directory tree: nested dirs, a name with spaces, a symlink, modes.
    let tree = local.join("tree");
    fs::create_dir_all(tree.join("sub/deeper")).expect("tree");
    fs::write(tree.join("a file.txt"), "spaces\n").expect("file");
    fs::write(tree.join("sub/deeper/x"), "x\n").expect("file");
    fs::write(tree.join("run.sh"), "#!/bin/sh\n").expect("file");
    fs::set_permissions(tree.join("run.sh"), fs::Permissions::from_mode(0o755)).expect("chmod");
    symlink("sub/deeper/x", tree.join("link")).expect("symlink");
    c.run(&["cp", &s(&tree), "c:/workspace/"]).expect_code(0);
    let r = c.run(&[
        "exec",
        "c",
        "cd /workspace/tree && cat 'a file.txt' sub/deeper/x && readlink link && stat -c %a run.sh && stat -c %U sub/deeper/x",
    ]);
    assert_eq!(
        r.stdout, "spaces\nx\nsub/deeper/x\n755\nsandbox\n",
        "{}",
        r.stderr
    );
    // And back, into a directory that exists (as tree) and one that does not.
    let down = local.join("down");
    fs::create_dir_all(&down).expect("down");
    c.run(&["cp", "c:/workspace/tree", &s(&down)])
        .expect_code(0);
    let got = down.join("tree");
    assert_eq!(
        fs::read_to_string(got.join("a file.txt")).expect("file"),
        "spaces\n"
    );
    assert_eq!(
        fs::read_to_string(got.join("sub/deeper/x")).expect("file"),
        "x\n"
    );
    assert_eq!(
        fs::read_link(got.join("link")).expect("link"),
        std::path::PathBuf::from("sub/deeper/x")
    );
    let mode = fs::metadata(got.join("run.sh"))
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    let fresh = local.join("fresh");
    c.run(&["cp", "c:/workspace/tree/sub", &s(&fresh)])
        .expect_code(0);
    assert_eq!(
        fs::read_to_string(fresh.join("deeper/x")).expect("file"),
        "x\n"
    );

    // stdin to a file (parents made), a file to stdout, a dir as tar.
    c.run_stdin(&["cp", "-", "c:/workspace/new/dir/s.txt"], "from stdin\n")
        .expect_code(0);
    let r = c.run(&["cp", "c:/workspace/new/dir/s.txt", "-"]);
    r.expect_code(0);
    assert_eq!(r.stdout, "from stdin\n", "only the file's bytes on stdout");
    let out = c
        .home
        .cmd(&["cp", "c:/workspace/tree/sub", "-"])
        .output()
        .expect("cp to stdout");
    assert!(out.status.success());
    let mut names: Vec<String> = tar::Archive::new(&out.stdout[..])
        .entries()
        .expect("tar")
        .map(|e| {
            e.expect("entry")
                .path()
                .expect("path")
                .display()
                .to_string()
        })
        .collect();
    names.sort();
    assert!(names.iter().any(|n| n.ends_with("deeper/x")), "{names:?}");

    // Mistakes.
    let r = c.run(&["cp", "c:/workspace/none", &s(&local)]);
    r.expect_code(1);
    assert!(r.stderr.contains("no such file"), "{}", r.stderr);
    let r = c.run(&["cp", &s(&big), &s(&local.join("x"))]);
    r.expect_code(1);
    assert!(
        r.stderr.contains("one side of cp must be a space"),
        "{}",
        r.stderr
    );
    let r = c.run(&["cp", &s(&big), "nosuch:/workspace/x"]);
    r.expect_code(1);
    assert!(r.stderr.contains("not found"), "{}", r.stderr);
}
