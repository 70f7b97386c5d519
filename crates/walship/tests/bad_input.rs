//! Bad input on disk: a corrupted file in walship's local store is never uploaded and is named
//! with the fix; truncated, corrupted and foreign files in a replica give restores that name
//! the file, never a wrong database, and foreign objects are ignored.

use std::path::Path;
use std::time::Duration;

use testkit::{wait_until, ChildGuard, Fault, S3Server};

mod support;

use support::http;
use support::workload::{app, assert_commit_boundary, walship, write_config, write_for};

fn flip_byte(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x5A], at).unwrap();
}

fn restore(url: &str, out: &Path) -> std::process::Output {
    let _ = std::fs::remove_file(out);
    walship()
        .args(["restore", "-o"])
        .arg(out)
        .arg(url)
        .output()
        .unwrap()
}

#[test]
fn a_corrupt_file_in_the_local_store_is_never_uploaded_and_is_named() {
    let s3 = S3Server::start();
    s3.create_bucket("bad");
    let proxy = s3.proxy();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    drop(app(&db));
    let addr = format!("127.0.0.1:{}", testkit::free_port());
    let url = s3.replica_url_through(&proxy, "bad", "app.db");
    let config = write_config(
        dir.path(),
        &format!("addr: {addr}\n"),
        &db,
        "monitor-interval: 100ms",
        &[&url],
    );
    let log = dir.path().join("walship.log");
    let mut ws = ChildGuard::spawn(
        walship()
            .args(["replicate", "-config"])
            .arg(&config)
            .envs(s3.credential_env()),
        &log,
    );
    let l0 = dir.path().join(".app.db-litestream/ltx/0");
    let l0_files = || {
        let mut files: Vec<_> = std::fs::read_dir(&l0)
            .map(|rd| rd.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        files.sort();
        files
    };
    // With an empty local store walship waits for the replica's answer before its first
    // capture; once it has one, the replica becomes unreachable while files pile up.
    assert!(wait_until(Duration::from_secs(30), || !l0_files().is_empty()));
    proxy.set_fault(Fault::Refuse);
    let before = l0_files().len();
    write_for(&db, 2.0);
    let files = l0_files();
    assert!(files.len() >= before + 3, "{files:?}");
    // A disk error in the pages of a file written while the replica was unreachable, with
    // files after it.
    let victim = &files[before + 1];
    let len = std::fs::metadata(victim).unwrap().len();
    flip_byte(victim, 100 + (len - 100) / 2);

    proxy.set_fault(Fault::PassThrough);
    let name = victim.file_name().unwrap().to_string_lossy().into_owned();
    let named = wait_until(Duration::from_secs(30), || {
        http::get(&addr, "/status").is_some_and(|(_, body)| {
            body.contains(&name)
                && body.contains("corrupt")
                && body.contains("Remove the local store")
        })
    });
    assert!(
        named,
        "the status never named the corrupt file:\n{}",
        http::get(&addr, "/status").map(|r| r.1).unwrap_or_default()
    );
    let keys = s3.list("bad", "app.db/");
    assert!(
        keys.iter().all(|k| !k.ends_with(&name)),
        "the corrupt file reached the replica: {keys:?}"
    );
    let before_victim = files[before]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        keys.iter().any(|k| k.ends_with(&before_victim)),
        "the file before it ({before_victim}) was not uploaded once S3 answered: {keys:?}"
    );
    assert!(ws.terminate(Duration::from_secs(30)));
}

#[test]
fn truncated_corrupt_and_foreign_files_in_a_replica_are_named_or_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    drop(app(&db));
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    let log = dir.path().join("walship.log");
    // No compaction during the test: an L1 file covering the damaged L0 file would let the
    // restores below go around it (the default 30 s boundary fell inside some runs).
    let config = write_config(dir.path(), "levels:\n  - interval: 1h\n", &db, "", &[&url]);
    let mut ws = ChildGuard::spawn(
        walship()
            .args(["replicate", "-config"])
            .arg(&config)
            .env("LOG_LEVEL", "debug"),
        &log,
    );
    let commits = write_for(&db, 2.0);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(ws.terminate(Duration::from_secs(30)));
    let out = dir.path().join("out.db");

    // Foreign objects beside the LTX files are ignored.
    let l0 = replica.join("ltx/0");
    std::fs::write(l0.join("README.txt"), "not an LTX file").unwrap();
    std::fs::write(l0.join("notes.ltx"), "nor this").unwrap();
    std::fs::write(replica.join("ltx/stray"), "nor this").unwrap();
    let res = restore(&url, &out);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert_eq!(
        assert_commit_boundary(&out, &commits, "with foreign files"),
        commits.last().unwrap().1
    );

    let mut files: Vec<_> = std::fs::read_dir(&l0)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "ltx") && p.file_name().unwrap() != "notes.ltx"
        })
        .collect();
    files.sort();
    let middle = files[files.len() / 2].clone();
    let name = middle.file_name().unwrap().to_string_lossy().into_owned();
    let saved = std::fs::read(&middle).unwrap();

    // A truncated middle file.
    std::fs::write(&middle, &saved[..saved.len() / 2]).unwrap();
    let res = restore(&url, &out);
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success() && err.contains(&name), "{err}");
    assert!(!out.exists(), "a failed restore left an output");

    // Garbage under the name of the next LTX file.
    std::fs::write(&middle, &saved).unwrap();
    let last = files
        .last()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let next = u64::from_str_radix(&last[17..33], 16).unwrap() + 1;
    let garbage_name = format!("{next:016x}-{next:016x}.ltx");
    std::fs::write(l0.join(&garbage_name), vec![0x42u8; 4096]).unwrap();
    let res = restore(&url, &out);
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        !res.status.success() && err.contains(&garbage_name),
        "{err}"
    );
    assert!(!out.exists(), "a failed restore left an output");
}
