//! Helpers shared by the end-to-end tests: running the binary, a guard that takes a local cluster down even when
//! an assertion fails, and waiting for a run's processes to be gone.
// Each test crate uses a different subset of these.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_streamshield");

/// Runs `streamshield ARGS`, echoing its output into the test log.
pub fn streamshield(args: &[&str]) -> Output {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("run streamshield");
    eprintln!(
        "$ streamshield {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

/// Takes the run at its directory down when dropped, whether the test passed or panicked.
pub struct Cluster(pub PathBuf);

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(BIN)
            .args(["local", "down", "--dir"])
            .arg(&self.0)
            .output();
    }
}

/// True once no process names `dir` in its command line (within `within`).
pub fn wait_no_process_naming(dir: &Path, within: Duration) -> bool {
    let start = Instant::now();
    loop {
        let left = streamshield::local::processes_naming(dir);
        if left.is_empty() {
            return true;
        }
        if start.elapsed() > within {
            eprintln!("left behind: {left:?}");
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
