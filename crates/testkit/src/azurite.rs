//! Azurite, Microsoft's Azure Blob Storage emulator (from npm), on 127.0.0.1.
//!
//! Containers are created and blobs listed with the Blob REST API signed by the well-known
//! development account's shared key, from a short Python script: no Azure SDK is needed.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use crate::{free_port, run_ok, venv_bin, wait_until, workspace_root, ChildGuard};

/// The development storage account every Azurite has.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
/// The development account's well-known shared key.
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A program installed by `make npm`: `$WALSHIP_TEST_NPM_BIN`, or `tools/npm/node_modules/.bin`
/// at the workspace root; `make npm` runs first if it is missing.
pub fn npm_bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("WALSHIP_TEST_NPM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("tools/npm/node_modules/.bin"));
    let path = dir.join(name);
    crate::provision::ensure(&path, "npm");
    path
}

/// One blob as the emulator lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// The blob's full name.
    pub name: String,
    /// Its user metadata.
    pub metadata: BTreeMap<String, String>,
}

/// An Azurite blob service on a free port of 127.0.0.1, stopped when dropped.
pub struct AzuriteServer {
    port: u16,
    _dir: tempfile::TempDir,
    child: ChildGuard,
}

impl AzuriteServer {
    /// Starts the blob service and waits until it accepts connections.
    pub fn start() -> AzuriteServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let log = dir.path().join("azurite.log");
        let mut child = ChildGuard::spawn(
            Command::new(npm_bin("azurite-blob"))
                .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
                .arg("--location")
                .arg(dir.path().join("data"))
                .args([
                    "--silent",
                    "--skipApiVersionCheck",
                    "--loose",
                    "--disableTelemetry",
                ]),
            &log,
        );
        let up = wait_until(Duration::from_secs(30), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
                || matches!(child.0.try_wait(), Ok(Some(_)))
        });
        assert!(
            up && matches!(child.0.try_wait(), Ok(None)),
            "azurite-blob did not start on port {port}:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        AzuriteServer {
            port,
            _dir: dir,
            child,
        }
    }

    /// The service URL of the development account, `http://127.0.0.1:PORT/devstoreaccount1`
    /// (Litestream's and walship's `endpoint`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{AZURITE_ACCOUNT}", self.port)
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// Creates a container.
    pub fn create_container(&self, container: &str) {
        self.python(&format!(
            "status, _ = call('PUT', '/{container}', {{'restype': 'container'}})\n\
             assert status == 201, status"
        ));
    }

    /// The blobs of a container under a prefix, sorted by name, with their metadata.
    pub fn list(&self, container: &str, prefix: &str) -> Vec<Blob> {
        let out = self.python(&format!(
            "import xml.etree.ElementTree as ET\n\
             query = {{'restype': 'container', 'comp': 'list', 'prefix': {prefix:?},\n\
             \x20   'include': 'metadata'}}\n\
             while True:\n\
             \x20   status, body = call('GET', '/{container}', query)\n\
             \x20   assert status == 200, (status, body)\n\
             \x20   root = ET.fromstring(body)\n\
             \x20   for blob in root.iter('Blob'):\n\
             \x20       meta = [f'{{m.tag}}={{m.text or \"\"}}' for m in blob.find('Metadata') or []]\n\
             \x20       print('\\t'.join([blob.findtext('Name')] + meta))\n\
             \x20   marker = root.findtext('NextMarker')\n\
             \x20   if not marker: break\n\
             \x20   query['marker'] = marker"
        ));
        let mut blobs: Vec<Blob> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(parse_listing_line)
            .collect();
        blobs.sort_by(|a, b| a.name.cmp(&b.name));
        blobs
    }

    /// Runs `body` after a `call(method, path, query) -> (status, body)` helper that sends a
    /// request signed with the development account's shared key.
    fn python(&self, body: &str) -> Output {
        let script = format!(
            "import base64, email.utils, hashlib, hmac, urllib.error, urllib.parse, urllib.request\n\
             ENDPOINT = {endpoint:?}\n\
             ACCOUNT = {AZURITE_ACCOUNT:?}\n\
             KEY = base64.b64decode({AZURITE_KEY:?})\n\
             def call(method, path, query):\n\
             \x20   headers = {{'x-ms-date': email.utils.formatdate(usegmt=True),\n\
             \x20       'x-ms-version': '2021-08-06'}}\n\
             \x20   canonical_headers = ''.join(f'{{k}}:{{v}}\\n' for k, v in sorted(headers.items()))\n\
             \x20   resource = '/' + ACCOUNT + urllib.parse.urlparse(ENDPOINT).path + path\n\
             \x20   resource += ''.join(f'\\n{{k.lower()}}:{{v}}' for k, v in sorted(query.items()))\n\
             \x20   data = b'' if method == 'PUT' else None\n\
             \x20   content_type = 'application/octet-stream' if method == 'PUT' else ''\n\
             \x20   if content_type: headers['Content-Type'] = content_type\n\
             \x20   to_sign = f'{{method}}\\n\\n\\n\\n\\n{{content_type}}\\n\\n\\n\\n\\n\\n\\n' + canonical_headers + resource\n\
             \x20   mac = hmac.new(KEY, to_sign.encode(), hashlib.sha256).digest()\n\
             \x20   headers['Authorization'] = f'SharedKey {{ACCOUNT}}:' + base64.b64encode(mac).decode()\n\
             \x20   url = ENDPOINT + urllib.parse.quote(path) + '?' + urllib.parse.urlencode(query)\n\
             \x20   request = urllib.request.Request(url, data=data, method=method, headers=headers)\n\
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

/// Reads a listing line as the scripts print them: the name, then `key=value` for each
/// metadata entry, separated by tabs.
pub(crate) fn parse_listing_line(line: &str) -> Blob {
    let mut fields = line.split('\t');
    let name = fields.next().unwrap_or_default().to_string();
    let metadata = fields
        .filter_map(|f| f.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Blob { name, metadata }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_are_created_and_listed() {
        let server = AzuriteServer::start();
        server.create_container("box");
        assert!(server.list("box", "").is_empty());
    }

    #[test]
    fn listing_lines_parse() {
        let blob = parse_listing_line("a/b.ltx\tlitestreamtimestamp=2023-11-14T22:13:20.123Z");
        assert_eq!(blob.name, "a/b.ltx");
        assert_eq!(
            blob.metadata.get("litestreamtimestamp").map(String::as_str),
            Some("2023-11-14T22:13:20.123Z")
        );
    }
}
