//! `walship replicate` to Google Cloud Storage and Azure Blob Storage end to end: the walship
//! binary replicates a database under writes to the emulators the test harness runs
//! (gcp-storage-emulator, Azurite), then `walship restore` and Litestream 0.5.17's restore each
//! bring back the last committed state, page for page.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use testkit::db::{checkpointed_image, first_different_page};
use testkit::{litestream, AzuriteServer, ChildGuard, GcsServer, AZURITE_ACCOUNT, AZURITE_KEY};

mod support;

use support::workload::{app, assert_commit_boundary, walship, write_for, Commit};

/// Runs `replicate` while a writer commits for a few seconds, then stops it with SIGTERM (its
/// final sync takes the last commits); returns the commits.
fn replicate_while_writing(mut replicate: Command, db: &Path, log: &Path) -> Vec<Commit> {
    drop(app(db));
    let mut child = ChildGuard::spawn(&mut replicate, log);
    std::thread::sleep(Duration::from_millis(500));
    let commits = write_for(db, 3.0);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.terminate(Duration::from_secs(30)),
        "walship did not stop on SIGTERM"
    );
    let status = child.0.wait().unwrap();
    assert!(
        status.success(),
        "walship exited with {status}\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    commits
}

/// Asserts that `restore` succeeded and wrote exactly the database's last state to `out`.
fn assert_restored(what: &str, restore: Output, out: &Path, db: &Path, commits: &[Commit]) {
    assert!(
        restore.status.success(),
        "{what} failed:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&restore.stdout),
        String::from_utf8_lossy(&restore.stderr)
    );
    let last = commits.last().unwrap().1;
    assert_eq!(assert_commit_boundary(out, commits, what), last, "{what}");
    let want = checkpointed_image(db);
    let got = std::fs::read(out).unwrap();
    assert_eq!(first_different_page(&want, &got, 4096), None, "{what}");
}

#[test]
fn replicas_on_gcs_restore_with_walship_and_litestream() {
    let server = GcsServer::start();
    server.create_bucket("backups");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = "gs://backups/app.db";

    let mut replicate = walship();
    replicate
        .arg("replicate")
        .arg(&db)
        .arg(url)
        .envs(server.env());
    let commits = replicate_while_writing(replicate, &db, &dir.path().join("walship.log"));

    // Litestream's layout for gs: `<path>/ltx/<level>/`, with the creation time in metadata.
    let objects = server.list("backups", "app.db/");
    assert!(!objects.is_empty());
    for object in &objects {
        assert!(in_ltx_level(&object.name), "{object:?}");
        assert!(
            object.metadata.contains_key("litestream-timestamp"),
            "{object:?}"
        );
    }

    let out = dir.path().join("walship-restored.db");
    let restore = walship()
        .args(["restore", "-o"])
        .arg(&out)
        .arg(url)
        .envs(server.env())
        .output()
        .unwrap();
    assert_restored("walship restore", restore, &out, &db, &commits);

    // Google's Go library, which Litestream uses, talks to an emulator named by
    // STORAGE_EMULATOR_HOST without credentials, as walship does.
    let out = dir.path().join("litestream-restored.db");
    let restore = litestream()
        .args(["restore", "-o"])
        .arg(&out)
        .arg(url)
        .envs(server.env())
        .output()
        .unwrap();
    assert_restored("litestream restore", restore, &out, &db, &commits);
}

/// A config file replicating `db` to a container of `server`, as both tools read it.
fn abs_config(dir: &Path, db: &Path, server: &AzuriteServer) -> PathBuf {
    let config = dir.join("walship.yml");
    std::fs::write(
        &config,
        format!(
            "dbs:\n\
             \x20 - path: {db}\n\
             \x20   replica:\n\
             \x20     type: abs\n\
             \x20     account-name: {AZURITE_ACCOUNT}\n\
             \x20     bucket: backups\n\
             \x20     path: app.db\n\
             \x20     endpoint: {endpoint}\n",
            db = db.display(),
            endpoint = server.endpoint(),
        ),
    )
    .unwrap();
    config
}

#[test]
fn replicas_on_azure_restore_with_walship_and_litestream() {
    let server = AzuriteServer::start();
    server.create_container("backups");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let config = abs_config(dir.path(), &db, &server);
    // The key comes from the environment, as Litestream reads it.
    let key = [("LITESTREAM_AZURE_ACCOUNT_KEY", AZURITE_KEY)];

    let mut replicate = walship();
    replicate
        .arg("replicate")
        .arg("-config")
        .arg(&config)
        .envs(key);
    let commits = replicate_while_writing(replicate, &db, &dir.path().join("walship.log"));

    // Litestream's layout for abs: `<path>/ltx/<level>/`, the creation time in metadata named
    // without a hyphen (Azure's rule).
    let blobs = server.list("backups", "app.db/");
    assert!(!blobs.is_empty());
    for blob in &blobs {
        assert!(in_ltx_level(&blob.name), "{blob:?}");
        assert!(
            blob.metadata.contains_key("litestreamtimestamp"),
            "{blob:?}"
        );
    }

    let out = dir.path().join("walship-restored.db");
    let restore = walship()
        .args(["restore", "-config"])
        .arg(&config)
        .arg("-o")
        .arg(&out)
        .arg(&db)
        .envs(key)
        .output()
        .unwrap();
    assert_restored("walship restore", restore, &out, &db, &commits);

    let out = dir.path().join("litestream-restored.db");
    let restore = litestream()
        .args(["restore", "-config"])
        .arg(&config)
        .arg("-o")
        .arg(&out)
        .arg(&db)
        .envs(key)
        .output()
        .unwrap();
    assert_restored("litestream restore", restore, &out, &db, &commits);
}

/// Whether `name` is an LTX file under `app.db/ltx/<level>/`, Litestream's layout for gs and
/// abs (compaction may have written levels above 0 if the run crossed an interval boundary).
fn in_ltx_level(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("app.db/ltx/") else {
        return false;
    };
    let Some((level, file)) = rest.split_once('/') else {
        return false;
    };
    level.parse::<u8>().is_ok_and(|l| l <= 9) && file.len() == 37 && file.ends_with(".ltx")
}
