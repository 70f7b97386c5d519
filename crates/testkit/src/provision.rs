//! Installs the test tools a test needs when they are missing, so a test passes however it is
//! started (`cargo test -p ltx` on a fresh checkout as well as `make test`).
//!
//! The Makefile stays the one place that knows how each tool is installed: a missing tool runs
//! its `make` target. Test processes run in parallel (nextest starts one per test), so the
//! installs are serialised by an exclusive lock on the Makefile itself, and each process runs a
//! target at most once.

use std::collections::HashSet;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use crate::{venv, workspace_root};

/// The `make` targets this process has already run.
static DONE: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);

/// Returns `path` once it is a file, running `make <target>` first if it is not; panics with
/// make's output if the install fails or does not produce `path`.
pub(crate) fn ensure(path: &Path, target: &'static str) {
    if path.is_file() {
        return;
    }
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    let done = done.get_or_insert_with(HashSet::new);
    if !done.contains(target) {
        run_make(target);
        done.insert(target);
    }
    assert!(
        path.is_file(),
        "{} is still missing after `make {target}` in {}",
        path.display(),
        workspace_root().display()
    );
}

/// Runs `make <target>` at the workspace root, holding the install lock.
fn run_make(target: &str) {
    let root = workspace_root();
    let makefile = root.join("Makefile");
    let lock = File::open(&makefile)
        .unwrap_or_else(|e| panic!("cannot open {} to lock it: {e}", makefile.display()));
    // `File::lock` is newer than the workspace's MSRV; flock is what it calls on Linux. The
    // lock goes with the file when it is dropped at the end of this function.
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        panic!(
            "cannot lock {}: {}",
            makefile.display(),
            std::io::Error::last_os_error()
        );
    }
    eprintln!("testkit: installing test tools with `make {target}` (a fresh checkout lacks them)");
    let out = Command::new("make")
        .arg("-C")
        .arg(&root)
        .arg(format!("VENV={}", venv().display()))
        .arg(target)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `make {target}` (is make installed?): {e}"));
    assert!(
        out.status.success(),
        "`make {target}` failed with {}; the test needs what it installs\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
