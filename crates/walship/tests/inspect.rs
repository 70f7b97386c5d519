//! `walship ltx` and `walship databases`: what a replica holds (with the pages of each file,
//! from its page index) and what a config replicates.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ltx::{Decoder, Encoder, EncoderOptions, Header, Txid, TRAILER_SIZE};
use serde_json::Value;
use testkit::{wait_until, ChildGuard, Proxy, S3Server};
use walship::config::Config;
use walship::replica::client::SNAPSHOT_LEVEL;
use walship::replica::client_for;

mod support;

use support::workload::{app, walship};

#[test]
fn ltx_lists_a_replicas_files_and_databases_lists_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = app(&db);
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    let log = dir.path().join("walship.log");
    let mut ws = ChildGuard::spawn(walship().arg("replicate").arg(&db).arg(&url), &log);
    for i in 1..=3 {
        conn.execute("INSERT INTO rows(id, tx, pad) VALUES (?1, 0, 'x')", [i])
            .unwrap();
        std::thread::sleep(Duration::from_millis(1200));
    }
    let ltx_json = || -> Value {
        let out = walship().args(["ltx", "-json", &url]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert!(wait_until(Duration::from_secs(20), || {
        ltx_json()["files"].as_array().unwrap().len() >= 3
    }));
    assert!(ws.terminate(Duration::from_secs(30)));

    let doc = ltx_json();
    let files = doc["files"].as_array().unwrap();
    let on_disk = std::fs::read_dir(replica.join("ltx/0")).unwrap().count();
    let l0: Vec<&Value> = files.iter().filter(|f| f["level"] == 0).collect();
    assert_eq!(l0.len(), on_disk);
    assert_eq!(l0[0]["min_txid"], "0000000000000001");
    assert!(l0.iter().all(|f| f["size"].as_u64().unwrap() > 0));
    for f in &l0 {
        let name = format!(
            "{}-{}.ltx",
            f["min_txid"].as_str().unwrap(),
            f["max_txid"].as_str().unwrap()
        );
        let decoded = decoded_pages(&replica.join("ltx/0").join(name));
        assert_eq!(f["page_count"], decoded, "{f}");
    }
    assert_eq!(doc["type"], "file");
    assert!(doc["earliest"].as_str().unwrap() <= doc["latest"].as_str().unwrap());

    let table = walship()
        .args(["ltx", "-level", "0", &url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert_eq!(text.lines().count(), 1 + on_disk, "{text}");
    assert!(
        text.contains("0000000000000001  0000000000000001"),
        "{text}"
    );

    let bad = walship()
        .args(["ltx", "-level", "12", &url])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("give 0 to 9"));

    let config = dir.path().join("walship.yml");
    std::fs::write(
        &config,
        format!(
            "dbs:\n  - path: {}\n    replicas:\n      - url: {url}\n      - url: s3://bucket/app?endpoint=http://127.0.0.1:9&region=x\n        access-key-id: AKIDVISIBLE\n        secret-access-key: hushhush\n",
            db.display()
        ),
    )
    .unwrap();
    let out = walship()
        .args(["databases", "-config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&db.display().to_string()) && text.contains(&url),
        "{text}"
    );
    assert!(text.contains("s3://bucket/app"), "{text}");
    assert!(
        !text.contains("hushhush") && !text.contains("AKIDVISIBLE"),
        "{text}"
    );
}

/// An LTX file of `pages` pages of `page_size` bytes that do not compress, at `path`.
fn write_ltx(path: &Path, page_size: u32, min: u64, max: u64, pages: &[u32]) {
    let commit = pages.iter().copied().max().unwrap();
    let header = Header::new(page_size, commit, Txid(min), Txid(max), 1_700_000_000_000);
    let file = std::fs::File::create(path).unwrap();
    let mut enc = Encoder::new(file, header, EncoderOptions::default()).unwrap();
    let mut state = (min << 32 | max) | 1;
    let mut page = vec![0u8; page_size as usize];
    for &pgno in pages {
        for byte in page.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *byte = state as u8;
        }
        enc.write_page(pgno, &page).unwrap();
    }
    enc.finish().unwrap();
}

/// The pages a full decode of the LTX file at `path` reads.
fn decoded_pages(path: &Path) -> usize {
    let mut dec = Decoder::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut page = vec![0u8; dec.header().page_size as usize];
    let mut n = 0;
    while dec.read_page(&mut page).unwrap().is_some() {
        n += 1;
    }
    dec.finish().unwrap();
    n
}

/// Removes the page index from the file at `path` (and its length), as files of the formats
/// before LTX v3 have none: header, pages, terminator, trailer.
fn strip_page_index(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    let tail = bytes.len() - TRAILER_SIZE;
    let index_len = u64::from_be_bytes(bytes[tail - 8..tail].try_into().unwrap()) as usize;
    let mut stripped = bytes[..tail - 8 - index_len].to_vec();
    stripped.extend_from_slice(&bytes[tail..]);
    std::fs::write(path, stripped).unwrap();
}

/// `walship ltx -json URL`'s files, or its failure.
fn ltx_files(url: &str, args: &[&str], env: &HashMap<String, String>) -> Vec<Value> {
    let out = walship()
        .arg("ltx")
        .args(args)
        .arg("-json")
        .arg(url)
        .envs(env)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["files"].as_array().unwrap().clone()
}

#[test]
fn ltx_page_counts_come_from_each_files_page_index() {
    let dir = tempfile::tempdir().unwrap();
    // (level, min, max, pages): a snapshot whose page index (about 48 KiB) is larger than the
    // first read of a file's end; small files; and one without a page index.
    let specs: [(u32, u64, u64, Vec<u32>); 5] = [
        (SNAPSHOT_LEVEL, 1, 1, (1..=6000).collect()),
        (0, 2, 2, vec![1, 7, 4000]),
        (0, 3, 3, vec![2]),
        (1, 2, 3, vec![1, 2, 7, 4000]),
        (0, 4, 4, vec![3, 5]),
    ];
    let mut expected: HashMap<(u64, String), Option<usize>> = HashMap::new();
    let mut local = Vec::new();
    for (level, min, max, pages) in &specs {
        let path = dir.path().join(format!("{level}-{min}-{max}.ltx"));
        write_ltx(&path, 512, *min, *max, pages);
        let count = if *min == 4 {
            strip_page_index(&path);
            None
        } else {
            let n = decoded_pages(&path);
            assert_eq!(n, pages.len());
            Some(n)
        };
        expected.insert((u64::from(*level), format!("{min:016x}")), count);
        local.push((*level, path));
    }

    let s3 = S3Server::start();
    s3.create_bucket("pages");
    let env: HashMap<String, String> = s3
        .credential_env()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let upstream: SocketAddr = s3.endpoint()["http://".len()..].parse().unwrap();
    let proxy = Proxy::start(upstream);
    let file_url = format!("file://{}", dir.path().join("replica").display());
    let s3_url = format!(
        "s3://pages/app.db?endpoint={}&forcePathStyle=true&region=us-east-1",
        proxy.endpoint()
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for url in [&file_url, &s3_url] {
        let config = Config::from_args("app.db", &[url], &env).unwrap();
        let client = client_for(&config.dbs[0].replicas[0], &env).unwrap();
        for (level, path) in &local {
            runtime.block_on(client.put_file(*level, path)).unwrap();
        }
    }

    for url in [&file_url, &s3_url] {
        proxy.reset_counts();
        let files = ltx_files(url, &[], &env);
        assert_eq!(files.len(), specs.len());
        for f in &files {
            let key = (
                f["level"].as_u64().unwrap(),
                f["min_txid"].as_str().unwrap().to_string(),
            );
            match expected[&key] {
                Some(n) => {
                    assert_eq!(f["page_count"], n, "{url}: {f}");
                    assert!(f.get("page_count_error").is_none(), "{f}");
                }
                None => {
                    assert!(f["page_count"].is_null(), "{url}: {f}");
                    let why = f["page_count_error"].as_str().unwrap();
                    assert!(why.contains("no readable page index"), "{why}");
                }
            }
        }
    }
    // Ranged reads on S3: the snapshot's header, its end, then the rest of its index; each
    // small file in one read.
    let gets: Vec<String> = proxy
        .requests()
        .into_iter()
        .filter(|(method, path)| method == "GET" && path.ends_with(".ltx"))
        .map(|(_, path)| path)
        .collect();
    let snapshot_gets = gets.iter().filter(|p| p.contains("/0009/")).count();
    assert_eq!(snapshot_gets, 3, "{gets:?}");
    assert_eq!(gets.len(), 3 + specs.len() - 1, "{gets:?}");

    // The table: a pages column, `-` where unknown, and why on stderr.
    let out = walship().args(["ltx", &file_url]).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["level", "min_txid", "max_txid", "size", "pages", "created"]
    );
    let pages_of = |min: &str| -> String {
        let line = table
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(min))
            .unwrap_or_else(|| panic!("{min} not in {table}"));
        line.split_whitespace().nth(4).unwrap().to_string()
    };
    assert_eq!(pages_of("0000000000000001"), "6000", "{table}");
    assert_eq!(pages_of("0000000000000004"), "-", "{table}");
    assert!(
        stderr.contains("no page count for LTX file level 0 TXIDs 0000000000000004"),
        "{stderr}"
    );

    // -no-page-count lists only, as Litestream does.
    proxy.reset_counts();
    let files = ltx_files(&s3_url, &["-no-page-count"], &env);
    assert!(files.iter().all(|f| f.get("page_count").is_none()));
    assert!(
        proxy
            .requests()
            .iter()
            .all(|(_, path)| !path.ends_with(".ltx")),
        "{:?}",
        proxy.requests()
    );
}
