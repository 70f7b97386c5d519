//! gcp-storage-emulator (from PyPI), a Google Cloud Storage emulator, on 127.0.0.1.
//!
//! It speaks GCS's JSON API without credentials, as Google's libraries do when
//! `STORAGE_EMULATOR_HOST` points at it. Buckets are created and objects listed through that API
//! from a short Python script.

use std::net::TcpStream;
use std::process::{Command, Output};
use std::time::Duration;

use crate::azurite::{parse_listing_line, Blob};
use crate::{free_port, run_ok, venv_bin, wait_until, ChildGuard};

/// A GCS emulator on a free port of 127.0.0.1, keeping everything in memory, stopped when
/// dropped.
pub struct GcsServer {
    port: u16,
    _dir: tempfile::TempDir,
    child: ChildGuard,
}

impl GcsServer {
    /// Starts the emulator and waits until it accepts connections.
    pub fn start() -> GcsServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let log = dir.path().join("gcs.log");
        let mut child = ChildGuard::spawn(
            Command::new(venv_bin("gcp-storage-emulator")).args([
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--in-memory",
                "--quiet",
            ]),
            &log,
        );
        let up = wait_until(Duration::from_secs(30), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
                || matches!(child.0.try_wait(), Ok(Some(_)))
        });
        assert!(
            up && matches!(child.0.try_wait(), Ok(None)),
            "gcp-storage-emulator did not start on port {port}:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        GcsServer {
            port,
            _dir: dir,
            child,
        }
    }

    /// `127.0.0.1:PORT`, the value of `STORAGE_EMULATOR_HOST` for clients of this emulator.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.host())
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// The environment a client (Litestream, walship) needs to use this emulator.
    pub fn env(&self) -> [(&'static str, String); 1] {
        [("STORAGE_EMULATOR_HOST", self.host())]
    }

    /// Creates a bucket.
    pub fn create_bucket(&self, bucket: &str) {
        self.python(&format!(
            "status, body = call('POST', '/storage/v1/b?project=walship-test', \
             json.dumps({{'name': {bucket:?}}}).encode())\n\
             assert status == 200, (status, body)"
        ));
    }

    /// The objects of a bucket under a prefix, sorted by name, with their custom metadata.
    pub fn list(&self, bucket: &str, prefix: &str) -> Vec<Blob> {
        let out = self.python(&format!(
            "query = {{'prefix': {prefix:?}}}\n\
             while True:\n\
             \x20   path = '/storage/v1/b/{bucket}/o?' + urllib.parse.urlencode(query)\n\
             \x20   status, body = call('GET', path, None)\n\
             \x20   assert status == 200, (status, body)\n\
             \x20   page = json.loads(body)\n\
             \x20   for item in page.get('items', []):\n\
             \x20       meta = [f'{{k}}={{v}}' for k, v in (item.get('metadata') or {{}}).items()]\n\
             \x20       print('\\t'.join([item['name']] + meta))\n\
             \x20   if not page.get('nextPageToken'): break\n\
             \x20   query['pageToken'] = page['nextPageToken']"
        ));
        let mut objects: Vec<Blob> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(parse_listing_line)
            .collect();
        objects.sort_by(|a, b| a.name.cmp(&b.name));
        objects
    }

    fn python(&self, body: &str) -> Output {
        let script = format!(
            "import json, urllib.error, urllib.parse, urllib.request\n\
             def call(method, path, data):\n\
             \x20   request = urllib.request.Request({endpoint:?} + path, data=data, method=method,\n\
             \x20       headers={{'Content-Type': 'application/json'}})\n\
             \x20   try:\n\
             \x20       with urllib.request.urlopen(request) as response:\n\
             \x20           return response.status, response.read()\n\
             \x20   except urllib.error.HTTPError as e:\n\
             \x20       return e.code, e.read()\n\
             {body}\n",
            endpoint = self.endpoint(),
        );
        run_ok(Command::new(venv_bin("python")).arg("-c").arg(script))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_created_and_listed() {
        let server = GcsServer::start();
        server.create_bucket("box");
        assert!(server.list("box", "").is_empty());
    }
}
