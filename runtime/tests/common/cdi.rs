//! A test CDI vendor standing in for `nvidia.com/gpu` on a machine without
//! a GPU (shared by the runtime's and the API's GPU tests).

use std::fs;
use std::path::{Path, PathBuf};

/// The CDI kind of the test GPUs.
pub const KIND: &str = "clawdspace.test/gpu";

/// Writes the test vendor's CDI specs into `dir/cdi` and returns that
/// directory. GPU "0" is `/dev/null` at `/dev/fakegpu0` (env `FAKEGPU_0`),
/// GPU "1" is `/dev/fuse` (not in the default device allow list) at
/// `/dev/fakegpu1` (env `FAKEGPU_1`); every GPU space also gets
/// `FAKEGPU_DRIVER=1.0`, a read-only "driver" bind mount at
/// `/usr/local/fakegpu` and a createContainer hook that appends the
/// container state to `dir/hook.log`. A second kind,
/// `clawdspace.test/broken`, has a hook that fails.
pub fn write_test_vendor(dir: &Path) -> PathBuf {
    let cdi = dir.join("cdi");
    let driver = dir.join("driver");
    fs::create_dir_all(&cdi).expect("cdi dir");
    fs::create_dir_all(&driver).expect("driver dir");
    fs::write(driver.join("version"), "fake-driver 1.0\n").expect("driver file");
    let log = dir.join("hook.log");
    let spec = format!(
        r#"cdiVersion: "0.6.0"
kind: "{KIND}"
devices:
  - name: "0"
    containerEdits:
      deviceNodes:
        - path: /dev/fakegpu0
          hostPath: /dev/null
      env: ["FAKEGPU_0=yes"]
  - name: "1"
    containerEdits:
      deviceNodes:
        - path: /dev/fakegpu1
          hostPath: /dev/fuse
      env: ["FAKEGPU_1=yes"]
containerEdits:
  env: ["FAKEGPU_DRIVER=1.0"]
  mounts:
    - hostPath: {driver}
      containerPath: /usr/local/fakegpu
      options: ["ro", "nosuid", "nodev", "bind"]
  hooks:
    - hookName: createContainer
      path: /bin/sh
      args: ["sh", "-c", "cat >> {log}; echo >> {log}"]
"#,
        driver = driver.display(),
        log = log.display()
    );
    fs::write(cdi.join("clawdspace-test.yaml"), spec).expect("write spec");
    let broken = r#"cdiVersion: "0.6.0"
kind: "clawdspace.test/broken"
devices:
  - name: "0"
    containerEdits:
      hooks:
        - hookName: createContainer
          path: /bin/false
"#;
    fs::write(cdi.join("broken.yaml"), broken).expect("write broken spec");
    cdi
}
