//! The replica client's conformance suite, written once and run against every backend: a local
//! directory, a real S3 server (moto), a GCS emulator (gcp-storage-emulator), an Azure Blob
//! emulator (Azurite), all from the test harness, and an in-memory store. Then the
//! compatibility proof: Litestream 0.5.17 restores, byte for byte and by timestamp, snapshots
//! that walship uploaded.

mod support;

use std::collections::BTreeSet;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::TryStreamExt;
use ltx::database::encode_snapshot;
use ltx::{Encoder, EncoderOptions, Header, Txid};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{Attribute, GetOptions, ObjectStore, ObjectStoreExt, PutPayload};
use tempfile::TempDir;
use testkit::db::{fill_sample, integrity_check};
use testkit::{litestream, run_ok, AzuriteServer, GcsServer, S3Server};
use walship::replica::client::{
    AbsOptions, GcsOptions, KeyScheme, Layout, LtxKey, ReplicaClient, ReplicaError,
    ReplicaErrorKind, S3Options, AZURE_TIMESTAMP_METADATA_KEY, DEFAULT_PART_SIZE, SNAPSHOT_LEVEL,
    TIMESTAMP_METADATA_KEY,
};
use walship::replica::timestamp;
use walship::Error;

use support::faulty::{Fault, FaultyStore, Op};

/// The creation time (LTX header timestamp) of every test file ...
const CREATED_MS: i64 = 1_700_000_000_123;
/// ... and how Litestream writes it in S3 metadata (Go's RFC3339Nano, UTC).
const CREATED_TEXT: &str = "2023-11-14T22:13:20.123Z";
const PAGE_SIZE: u32 = 4096;
const BUCKET: &str = "conformance";

#[tokio::test]
async fn file_backend_conforms() {
    conformance(&Backend::File(tempfile::tempdir().unwrap())).await;
}

#[tokio::test]
async fn s3_backend_conforms() {
    let server = S3Server::start();
    server.create_bucket(BUCKET);
    conformance(&Backend::S3(server)).await;
}

#[tokio::test]
async fn gcs_backend_conforms() {
    let server = GcsServer::start();
    server.create_bucket(BUCKET);
    conformance(&Backend::Gcs(server)).await;
}

#[tokio::test]
async fn abs_backend_conforms() {
    let server = AzuriteServer::start();
    server.create_container(BUCKET);
    conformance(&Backend::Abs(server)).await;
}

#[tokio::test]
async fn memory_backend_conforms() {
    conformance(&Backend::Memory(Arc::new(InMemory::new()))).await;
}

/// Every check, each on a replica of its own.
async fn conformance(backend: &Backend) {
    round_trip_at_several_levels(backend).await;
    keys_are_litestream_keys(backend).await;
    timestamps_are_preserved(backend).await;
    foreign_objects_are_ignored(backend).await;
    delete_removes_only_the_named_files(backend).await;
    max_txid_and_empty_levels(backend).await;
    missing_files_are_not_found(backend).await;
    large_files_go_up_in_parts(backend).await;
    failures_are_clear_errors(backend).await;
}

async fn round_trip_at_several_levels(backend: &Backend) {
    let fx = backend.fixture("roundtrip");
    // Out of TXID order, to show that listings sort.
    let files = [
        (0, 3, 4),
        (0, 1, 1),
        (0, 2, 2),
        (1, 1, 4),
        (SNAPSHOT_LEVEL, 1, 4),
    ];
    let mut sizes = Vec::new();
    for (level, min, max) in files {
        let (path, content) = fx.ltx(min, max, 3);
        let info = fx.client.put_file(level, &path).await.unwrap();
        assert_eq!(info.key, key(level, min, max));
        assert_eq!(info.size, content.len() as u64);
        assert_eq!(info.created_at, created());
        sizes.push((info.key, info.size));

        assert!(fx.download(info.key).await == content, "{}", fx.name());
        let dest = fx.scratch.path().join("downloaded.ltx");
        let size = fx.client.get_to_file(info.key, &dest).await.unwrap();
        assert_eq!(size, content.len() as u64);
        assert!(std::fs::read(&dest).unwrap() == content, "{}", fx.name());
    }
    assert_eq!(
        fx.ranges(0).await,
        [(1, 1), (2, 2), (3, 4)],
        "{}",
        fx.name()
    );
    assert_eq!(fx.ranges(1).await, [(1, 4)]);
    assert_eq!(fx.ranges(SNAPSHOT_LEVEL).await, [(1, 4)]);
    for info in fx.client.list(0).await.unwrap() {
        assert!(sizes.contains(&(info.key, info.size)), "{info:?}");
    }
}

async fn keys_are_litestream_keys(backend: &Backend) {
    let fx = backend.fixture("keys");
    for (level, min, max) in [(0, 1, 1), (1, 1, 2), (SNAPSHOT_LEVEL, 1, 0x4d2)] {
        let (path, _) = fx.ltx(min, max, 1);
        fx.client.put_file(level, &path).await.unwrap();
    }
    let want: BTreeSet<String> = match backend {
        // Litestream's layout for every backend but S3 (and OSS): `ltx/<level>/`.
        Backend::File(_) | Backend::Gcs(_) | Backend::Abs(_) => [
            "ltx/0/0000000000000001-0000000000000001.ltx",
            "ltx/1/0000000000000001-0000000000000002.ltx",
            "ltx/9/0000000000000001-00000000000004d2.ltx",
        ],
        Backend::S3(_) | Backend::Memory(_) => [
            "0000/0000000000000001-0000000000000001.ltx",
            "0001/0000000000000001-0000000000000002.ltx",
            "0009/0000000000000001-00000000000004d2.ltx",
        ],
    }
    .into_iter()
    .map(String::from)
    .collect();
    // Also proves that no temporary file is left behind.
    assert_eq!(fx.raw_keys().await, want, "{}", fx.name());
}

async fn timestamps_are_preserved(backend: &Backend) {
    let fx = backend.fixture("timestamps");
    let (path, _) = fx.ltx(1, 1, 1);
    let uploaded = SystemTime::now();
    let info = fx.client.put_file(0, &path).await.unwrap();
    assert_eq!(fx.client.created_at(info.key).await.unwrap(), created());
    fx.assert_stored_timestamp(&fx.rel_key(info.key)).await;

    // Listings are one request per level: the stores give LastModified there, as Litestream's
    // S3 client uses it (its gs and abs clients read the metadata in listings; walship reads it
    // when it needs the precise time, in `created_at`).
    let listed = fx.client.list(0).await.unwrap()[0].created_at;
    match backend {
        Backend::File(_) => assert_eq!(listed, created()),
        Backend::S3(_) | Backend::Gcs(_) | Backend::Abs(_) | Backend::Memory(_) => {
            let skew = Duration::from_secs(120);
            assert!(
                listed > uploaded - skew && listed < uploaded + skew,
                "{listed:?}"
            );
        }
    }
}

async fn foreign_objects_are_ignored(backend: &Backend) {
    let fx = backend.fixture("foreign");
    let (path, _) = fx.ltx(1, 1, 1);
    fx.client.put_file(0, &path).await.unwrap();
    let dir = fx.rel_level_dir(0);
    for foreign in [
        format!("{dir}/notes.txt"),
        format!("{dir}/0000000000000002-0000000000000002.ltx.tmp"),
        format!("{dir}/0000000000000003-0000000000000003.LTX"),
        format!("{dir}/000000000000004-0000000000000004.ltx"),
        format!("{dir}/sub/0000000000000005-0000000000000005.ltx"),
        "0000000000000006-0000000000000006.ltx".to_string(),
    ] {
        fx.put_raw(&foreign, b"not ltx").await;
    }
    assert_eq!(fx.ranges(0).await, [(1, 1)], "{}", fx.name());
    assert_eq!(fx.client.max_txid(0).await.unwrap(), Some(Txid(1)));
}

async fn delete_removes_only_the_named_files(backend: &Backend) {
    let fx = backend.fixture("delete");
    let files = [(0, 1, 1), (0, 2, 2), (0, 3, 3), (SNAPSHOT_LEVEL, 1, 3)];
    for (level, min, max) in files {
        let (path, _) = fx.ltx(min, max, 1);
        fx.client.put_file(level, &path).await.unwrap();
    }
    // A key that is already gone counts as deleted.
    let doomed = [key(0, 1, 1), key(0, 2, 2), key(0, 7, 7)];
    fx.client.delete(&doomed).await.unwrap();
    fx.client.delete(&[]).await.unwrap();
    assert_eq!(fx.ranges(0).await, [(3, 3)], "{}", fx.name());
    assert_eq!(fx.ranges(SNAPSHOT_LEVEL).await, [(1, 3)]);
    let want: BTreeSet<String> = [key(0, 3, 3), key(SNAPSHOT_LEVEL, 1, 3)]
        .into_iter()
        .map(|k| fx.rel_key(k))
        .collect();
    assert_eq!(fx.raw_keys().await, want);
}

async fn max_txid_and_empty_levels(backend: &Backend) {
    let fx = backend.fixture("levels");
    // Nothing has been written under this replica yet, not even its directory.
    assert!(fx.client.list(5).await.unwrap().is_empty(), "{}", fx.name());
    assert_eq!(fx.client.max_txid(5).await.unwrap(), None);
    for (min, max) in [(6, 6), (1, 5)] {
        let (path, _) = fx.ltx(min, max, 1);
        fx.client.put_file(2, &path).await.unwrap();
    }
    assert_eq!(fx.client.max_txid(2).await.unwrap(), Some(Txid(6)));
    assert_eq!(fx.client.max_txid(3).await.unwrap(), None);
    assert!(fx.client.list(3).await.unwrap().is_empty());
}

async fn missing_files_are_not_found(backend: &Backend) {
    let fx = backend.fixture("missing");
    let absent = key(0, 1, 1);
    let location = fx.rel_key(absent);
    let err = fx.client.get(absent).await.err().expect("no such file");
    expect_replica_error(&err, ReplicaErrorKind::NotFound, "download", &location);
    let err = fx.client.created_at(absent).await.unwrap_err();
    expect_replica_error(
        &err,
        ReplicaErrorKind::NotFound,
        "read the timestamp of",
        &location,
    );
    let dest = fx.scratch.path().join("absent.ltx");
    let err = fx.client.get_to_file(absent, &dest).await.unwrap_err();
    expect_replica_error(&err, ReplicaErrorKind::NotFound, "download", &location);
    assert!(!dest.exists());
}

async fn large_files_go_up_in_parts(backend: &Backend) {
    let fx = backend.fixture("multipart");
    let (path, content) = fx.ltx(1, 9, multipart_pages());
    assert!(content.len() > 2 * DEFAULT_PART_SIZE);
    let info = fx.client.put_file(SNAPSHOT_LEVEL, &path).await.unwrap();
    assert_eq!(info.size, content.len() as u64);
    assert!(fx.download(info.key).await == content, "{}", fx.name());
    assert_eq!(fx.client.created_at(info.key).await.unwrap(), created());
    if let Backend::S3(_) = backend {
        // S3 gives multipart objects an ETag of the form "<md5 of part md5s>-<parts>".
        let meta = fx
            .client
            .store()
            .head(&fx.full_key(info.key))
            .await
            .unwrap();
        let etag = meta.e_tag.unwrap_or_default();
        assert!(etag.trim_matches('"').ends_with("-3"), "{etag}");
    }
}

async fn failures_are_clear_errors(backend: &Backend) {
    let fx = backend.fixture("faults");
    let (path, _) = fx.ltx(1, 1, 1);
    match backend {
        Backend::File(_) => {
            // A replica root that is a file cannot hold level directories.
            std::fs::write(&fx.root, b"in the way").unwrap();
            let err = fx.client.put_file(0, &path).await.unwrap_err();
            let location = format!("{}/ltx/0/0000000000000001-0000000000000001.ltx", fx.root);
            let text = expect_replica_error(&err, ReplicaErrorKind::Other, "upload", &location);
            assert!(text.contains("Not a directory"), "{text}");
        }
        Backend::S3(_) | Backend::Gcs(_) | Backend::Abs(_) | Backend::Memory(_) => {
            store_failures_are_clear_errors(&fx, &path).await
        }
    }
}

/// Faults injected under a store-backed client, one operation at a time.
async fn store_failures_are_clear_errors(fx: &Fixture<'_>, path: &FsPath) {
    let faulty = Arc::new(FaultyStore::new(fx.client.store().clone()));
    let client = fx.client.wrap("faulty", faulty.clone());
    let first = key(0, 1, 1);
    let location = fx.full_key(first).to_string();

    faulty.fail(Op::Put, Fault::Generic);
    let err = client.put_file(0, path).await.unwrap_err();
    let text = expect_replica_error(&err, ReplicaErrorKind::Other, "upload", &location);
    assert!(
        text.starts_with("replica \"faulty\": cannot upload "),
        "{text}"
    );
    assert!(text.contains("injected Put failure"), "{text}");

    faulty.fail(Op::Put, Fault::PermissionDenied);
    let err = client.put_file(0, path).await.unwrap_err();
    let text = expect_replica_error(&err, ReplicaErrorKind::AccessDenied, "upload", &location);
    assert!(
        text.ends_with("hint: check the replica's credentials"),
        "{text}"
    );

    faulty.fail(Op::Put, Fault::ConnectionRefused);
    let err = client.put_file(0, path).await.unwrap_err();
    let text = expect_replica_error(&err, ReplicaErrorKind::Unreachable, "upload", &location);
    assert!(text.ends_with("hint: is the endpoint reachable?"), "{text}");

    // A multipart upload that fails after its first part leaves no object behind.
    faulty.fail_after(Op::Put, Fault::Generic, 2);
    let (big, _) = fx.ltx(2, 2, multipart_pages());
    let err = client.put_file(0, &big).await.unwrap_err();
    expect_replica_error(&err, ReplicaErrorKind::Other, "upload", "0000000000000002");
    faulty.reset();
    assert!(client.list(0).await.unwrap().is_empty());

    let calls = faulty.calls(Op::Put);
    client.put_file(0, path).await.unwrap();
    assert_eq!(faulty.calls(Op::Put), calls + 1, "a small file is one PUT");
    assert_eq!(fx.ranges(0).await, [(1, 1)]);

    faulty.fail(Op::List, Fault::Generic);
    let err = client.list(0).await.unwrap_err();
    expect_replica_error(&err, ReplicaErrorKind::Other, "list", &fx.rel_level_dir(0));
    faulty.fail(Op::Get, Fault::Generic);
    let err = client.created_at(first).await.unwrap_err();
    expect_replica_error(
        &err,
        ReplicaErrorKind::Other,
        "read the timestamp of",
        &location,
    );
    let err = client.get(first).await.err().expect("download fails");
    expect_replica_error(&err, ReplicaErrorKind::Other, "download", &location);
    faulty.fail(Op::Delete, Fault::Generic);
    let err = client.delete(&[first]).await.unwrap_err();
    expect_replica_error(&err, ReplicaErrorKind::Other, "delete", &location);
    faulty.reset();
    client.delete(&[first]).await.unwrap();
    assert!(client.list(0).await.unwrap().is_empty());
}

#[tokio::test]
async fn s3_errors_say_what_is_wrong_and_what_to_do() {
    let server = S3Server::start();
    let scratch = tempfile::tempdir().unwrap();
    let path = scratch.path().join("l0.ltx");
    write_ltx(&path, 1, 1, 1);

    let client = ReplicaClient::s3("backup", &s3_options(&server, "no-such-bucket", "app.db"));
    let client = client.unwrap();
    let err = client.put_file(0, &path).await.unwrap_err();
    let location = "s3://no-such-bucket/app.db/0000/0000000000000001-0000000000000001.ltx";
    let text = expect_replica_error(&err, ReplicaErrorKind::BucketMissing, "upload", location);
    assert_eq!(
        text,
        format!(
            "replica \"backup\": cannot upload {location}: NoSuchBucket: The specified bucket \
             does not exist; hint: create the bucket or fix `bucket`"
        )
    );
    let err = client.list(0).await.unwrap_err();
    let level_dir = "s3://no-such-bucket/app.db/0000";
    expect_replica_error(&err, ReplicaErrorKind::BucketMissing, "list", level_dir);

    // Nothing listens on this port: the failure must come in seconds, with the endpoint named.
    let port = testkit::free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut opts = s3_options(&server, BUCKET, "app.db");
    opts.endpoint = Some(endpoint.clone());
    let client = ReplicaClient::s3("backup", &opts).unwrap();
    let started = Instant::now();
    let err = client.put_file(0, &path).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let location = "s3://conformance/app.db/0000/0000000000000001-0000000000000001.ltx";
    let text = expect_replica_error(&err, ReplicaErrorKind::Unreachable, "upload", location);
    assert!(text.contains("Connection refused"), "{text}");
    let hint = format!("hint: is the endpoint {endpoint} reachable?");
    assert!(text.ends_with(&hint), "{text}");
}

#[tokio::test]
async fn gcs_errors_say_what_is_wrong_and_what_to_do() {
    let server = GcsServer::start();
    server.create_bucket(BUCKET);
    let scratch = tempfile::tempdir().unwrap();
    let path = scratch.path().join("l0.ltx");
    write_ltx(&path, 1, 1, 1);

    let opts = gcs_options(&server, "no-such-bucket", "app.db");
    let client = ReplicaClient::gcs("backup", &opts).unwrap();
    let err = client.put_file(0, &path).await.unwrap_err();
    let location = "gs://no-such-bucket/app.db/ltx/0/0000000000000001-0000000000000001.ltx";
    let text = expect_replica_error(&err, ReplicaErrorKind::BucketMissing, "upload", location);
    assert_eq!(
        text,
        format!(
            "replica \"backup\": cannot upload {location}: the bucket does not exist (HTTP 404); \
             hint: create the bucket or fix the bucket in the replica URL"
        )
    );
    let err = client.list(0).await.unwrap_err();
    let level_dir = "gs://no-such-bucket/app.db/ltx/0";
    expect_replica_error(&err, ReplicaErrorKind::BucketMissing, "list", level_dir);

    // No emulator listens there: the failure names it and how it was found.
    let mut opts = gcs_options(&server, BUCKET, "app.db");
    let host = format!("127.0.0.1:{}", testkit::free_port());
    opts.emulator_host = Some(host.clone());
    let client = ReplicaClient::gcs("backup", &opts).unwrap();
    let started = Instant::now();
    let err = client.put_file(0, &path).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(20));
    let location = "gs://conformance/app.db/ltx/0/0000000000000001-0000000000000001.ltx";
    let text = expect_replica_error(&err, ReplicaErrorKind::Unreachable, "upload", location);
    let hint = format!("hint: is the emulator at http://{host} (STORAGE_EMULATOR_HOST) running?");
    assert!(text.ends_with(&hint), "{text}");
}

#[tokio::test]
async fn abs_errors_say_what_is_wrong_and_what_to_do() {
    let server = AzuriteServer::start();
    server.create_container(BUCKET);
    let scratch = tempfile::tempdir().unwrap();
    let path = scratch.path().join("l0.ltx");
    write_ltx(&path, 1, 1, 1);
    let location = "0000000000000001-0000000000000001.ltx";

    let opts = abs_options(&server, "no-such-container", "app.db");
    let client = ReplicaClient::abs("backup", &opts).unwrap();
    let err = client.put_file(0, &path).await.unwrap_err();
    let text = expect_replica_error(&err, ReplicaErrorKind::BucketMissing, "upload", location);
    assert!(
        text.starts_with(
            "replica \"backup\": cannot upload abs://devstoreaccount1@no-such-container/app.db/\
             ltx/0/0000000000000001-0000000000000001.ltx: ContainerNotFound"
        ),
        "{text}"
    );
    assert!(
        text.ends_with(
            "ContainerNotFound: The specified container does not exist.; hint: create the \
             container or fix `bucket` (the container name in abs://ACCOUNT@CONTAINER/PATH)"
        ),
        "{text}"
    );

    // A well-formed key of another account.
    let mut opts = abs_options(&server, BUCKET, "app.db");
    opts.account_key = Some("d3Jvbmcta2V5LWZvci10aGUtdGVzdA==".into());
    let client = ReplicaClient::abs("backup", &opts).unwrap();
    let err = client.put_file(0, &path).await.unwrap_err();
    let text = expect_replica_error(&err, ReplicaErrorKind::AccessDenied, "upload", location);
    assert!(
        text.contains(": AuthorizationFailure: Server failed to authenticate"),
        "{text}"
    );
    assert!(
        text.ends_with(
            "; hint: check account-name and account-key (or LITESTREAM_AZURE_ACCOUNT_KEY), or \
             sas-token (LITESTREAM_AZURE_SAS_TOKEN)"
        ),
        "{text}"
    );

    // A key that is not base64 at all is refused before any request.
    opts.account_key = Some("not a key!".into());
    let err = ReplicaClient::abs("backup", &opts).unwrap_err();
    let text = expect_replica_error(&err, ReplicaErrorKind::InvalidConfig, "open", "abs://");
    assert!(text.contains("account-key"), "{text}");

    let mut opts = abs_options(&server, BUCKET, "app.db");
    let endpoint = format!("http://127.0.0.1:{}/devstoreaccount1", testkit::free_port());
    opts.endpoint = Some(endpoint.clone());
    let client = ReplicaClient::abs("backup", &opts).unwrap();
    let err = client.put_file(0, &path).await.unwrap_err();
    let text = expect_replica_error(&err, ReplicaErrorKind::Unreachable, "upload", location);
    assert!(
        text.ends_with(&format!("hint: is the endpoint {endpoint} reachable?")),
        "{text}"
    );
}

#[tokio::test]
async fn litestream_restores_what_we_upload_to_s3() {
    let server = S3Server::start();
    server.create_bucket(BUCKET);
    let client = ReplicaClient::s3("compat", &s3_options(&server, BUCKET, "app.db")).unwrap();
    let history = History::new();
    // Separate uploads by more than a second, so that their LastModified times differ.
    let mut uploaded = Vec::new();
    for (level, path) in history.files() {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        uploaded.push(client.put_file(level, &path).await.unwrap().key);
    }
    let restore = Restore {
        url: server.replica_url(BUCKET, "app.db"),
        env: server
            .credential_env()
            .iter()
            .map(|(name, value)| (*name, value.to_string()))
            .collect(),
    };
    assert_eq!(restore.latest(&history), Some(2));

    // Litestream accepts a target only between the oldest and newest LastModified, but picks
    // files by our `litestream-timestamp` metadata (hours earlier). At the newest LastModified,
    // the metadata puts all three files before the target: the newest state. Had Litestream used
    // LastModified, the last file (not strictly before the target) would be left out.
    let newest = client.list(0).await.unwrap().last().unwrap().created_at;
    let target = timestamp::format_rfc3339_nano(newest);
    assert_eq!(restore.at(&history, &target), Ok(Some(2)));
    assert_eq!(uploaded.len(), 3);
}

#[tokio::test]
async fn litestream_restores_what_we_upload_to_gcs() {
    let server = GcsServer::start();
    server.create_bucket(BUCKET);
    let client = ReplicaClient::gcs("compat", &gcs_options(&server, BUCKET, "app.db")).unwrap();
    let history = History::new();
    for (level, path) in history.files() {
        client.put_file(level, &path).await.unwrap();
    }
    let host = server.host();
    let restore = Restore {
        url: format!("gs://{BUCKET}/app.db"),
        env: vec![("STORAGE_EMULATOR_HOST", host)],
    };
    assert_eq!(restore.latest(&history), Some(2));

    // Litestream's gs client takes creation times from our `litestream-timestamp` metadata in
    // its listings: a millisecond either side of the middle file decides.
    let middle = history.created[1];
    let at = |t: SystemTime| restore.at(&history, &timestamp::format_rfc3339_nano(t));
    assert_eq!(at(middle - Duration::from_millis(1)), Ok(Some(0)));
    assert_eq!(at(middle + Duration::from_millis(1)), Ok(Some(1)));
}

#[tokio::test]
async fn litestream_restores_what_we_upload_to_a_file_replica() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("replica");
    let client = ReplicaClient::file("compat", &root).unwrap();
    let history = History::new();
    for (level, path) in history.files() {
        client.put_file(level, &path).await.unwrap();
    }
    let restore = Restore {
        url: format!("file://{}", root.display()),
        env: Vec::new(),
    };
    assert_eq!(restore.latest(&history), Some(2));

    // The file mtimes are the creation times: a millisecond either side of the middle file.
    let middle = history.created[1];
    let at = |t: SystemTime| restore.at(&history, &timestamp::format_rfc3339_nano(t));
    assert_eq!(at(middle - Duration::from_millis(1)), Ok(Some(0)));
    assert_eq!(at(middle + Duration::from_millis(1)), Ok(Some(1)));
}

/// Three states of a real database as Litestream would replicate them: a snapshot (level 9,
/// TXIDs 1-0x2a) of the first, then one full L0 file for each later state, created an hour
/// apart, three hours ago.
struct History {
    dir: TempDir,
    states: [Vec<u8>; 3],
    created: [SystemTime; 3],
}

impl History {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("source.db");
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.pragma_update(None, "page_size", PAGE_SIZE).unwrap();
        let now = SystemTime::now();
        let created = [3, 2, 1].map(|hours| now - Duration::from_secs(hours * 3600));
        let mut states: [Vec<u8>; 3] = Default::default();
        for (i, state) in states.iter_mut().enumerate() {
            fill_sample(&conn, 11 + i as u64, 500);
            *state = std::fs::read(&db).unwrap();
        }
        drop(conn);

        let snapshot = std::fs::File::create(dir.path().join("snapshot.ltx")).unwrap();
        let (file, _, _) = encode_snapshot(
            std::io::Cursor::new(&states[0]),
            snapshot,
            Txid(0x2a),
            unix_ms(created[0]),
            EncoderOptions::default(),
        )
        .unwrap();
        file.sync_all().unwrap();
        for (i, txid) in [(1, 0x2b), (2, 0x2c)] {
            let path = dir.path().join(format!("{txid:x}.ltx"));
            write_full_l0(&path, &states[i], txid, unix_ms(created[i]));
        }
        History {
            dir,
            states,
            created,
        }
    }

    /// Which state `image` is, byte for byte.
    fn state_of(&self, image: &[u8]) -> Option<usize> {
        self.states.iter().position(|state| state == image)
    }

    /// The files to upload, oldest first, with their levels.
    fn files(&self) -> [(u32, PathBuf); 3] {
        [
            (SNAPSHOT_LEVEL, self.dir.path().join("snapshot.ltx")),
            (0, self.dir.path().join("2b.ltx")),
            (0, self.dir.path().join("2c.ltx")),
        ]
    }
}

/// `litestream restore` of one replica.
struct Restore {
    url: String,
    env: Vec<(&'static str, String)>,
}

impl Restore {
    /// Which state of the history the latest restore is (checked with `integrity_check`).
    fn latest(&self, history: &History) -> Option<usize> {
        let out = history.dir.path().join("latest.db");
        run_ok(&mut self.command(&out, None));
        assert_eq!(integrity_check(&out), "ok");
        history.state_of(&std::fs::read(&out).unwrap())
    }

    /// Which state of the history a restore as of `timestamp` is, or Litestream's complaint.
    fn at(&self, history: &History, timestamp: &str) -> Result<Option<usize>, String> {
        let out = history.dir.path().join(format!("at-{timestamp}.db"));
        let done = self.command(&out, Some(timestamp)).output().unwrap();
        if !done.status.success() {
            return Err(String::from_utf8_lossy(&done.stderr).into_owned());
        }
        Ok(history.state_of(&std::fs::read(&out).unwrap()))
    }

    fn command(&self, out: &FsPath, timestamp: Option<&str>) -> std::process::Command {
        let mut cmd = litestream();
        cmd.envs(self.env.iter().map(|(name, value)| (name, value)))
            .args(["restore", "-o"])
            .arg(out);
        if let Some(t) = timestamp {
            cmd.args(["-timestamp", t]);
        }
        cmd.arg(&self.url);
        cmd
    }
}

/// Writes an L0 file holding every page of a database image (what a capture after a gap in
/// observation writes).
fn write_full_l0(path: &FsPath, image: &[u8], txid: u64, timestamp_ms: i64) {
    let commit = (image.len() / PAGE_SIZE as usize) as u32;
    let header = Header::new(PAGE_SIZE, commit, Txid(txid), Txid(txid), timestamp_ms);
    let file = std::fs::File::create(path).unwrap();
    let mut encoder = Encoder::new(file, header, EncoderOptions::default()).unwrap();
    for (pgno, page) in (1..).zip(image.chunks(PAGE_SIZE as usize)) {
        if pgno != header.lock_pgno() {
            encoder.write_page(pgno, page).unwrap();
        }
    }
    let (file, _) = encoder.finish().unwrap();
    file.sync_all().unwrap();
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// A kind of storage the suite runs against.
enum Backend {
    File(TempDir),
    S3(S3Server),
    Gcs(GcsServer),
    Abs(AzuriteServer),
    Memory(Arc<InMemory>),
}

impl Backend {
    /// A replica of its own for one check, named after it.
    fn fixture(&self, case: &str) -> Fixture<'_> {
        let name = format!("{case}-replica");
        let prefix = format!("{case}/app.db");
        let (client, root) = match self {
            Backend::File(dir) => {
                let root = dir.path().join(case);
                let client = ReplicaClient::file(&name, &root).unwrap();
                (client, root.display().to_string())
            }
            Backend::S3(server) => {
                let opts = s3_options(server, BUCKET, &prefix);
                (ReplicaClient::s3(&name, &opts).unwrap(), prefix)
            }
            Backend::Gcs(server) => {
                let opts = gcs_options(server, BUCKET, &prefix);
                (ReplicaClient::gcs(&name, &opts).unwrap(), prefix)
            }
            Backend::Abs(server) => {
                let opts = abs_options(server, BUCKET, &prefix);
                (ReplicaClient::abs(&name, &opts).unwrap(), prefix)
            }
            Backend::Memory(store) => {
                let layout = Layout::new(KeyScheme::S3, &prefix).unwrap();
                let client = ReplicaClient::from_store(&name, store.clone(), layout);
                (client, prefix)
            }
        };
        Fixture {
            backend: self,
            client,
            root,
            scratch: tempfile::tempdir().unwrap(),
        }
    }
}

/// One check's replica: a fresh directory (file) or key prefix (the object stores).
struct Fixture<'a> {
    backend: &'a Backend,
    client: ReplicaClient,
    /// The directory path or key prefix everything of this replica lives under.
    root: String,
    /// Local files of the check.
    scratch: TempDir,
}

impl Fixture<'_> {
    fn name(&self) -> String {
        let kind = match self.backend {
            Backend::File(_) => "file",
            Backend::S3(_) => "s3",
            Backend::Gcs(_) => "gs",
            Backend::Abs(_) => "abs",
            Backend::Memory(_) => "memory",
        };
        format!("{kind} backend, replica {}", self.client.name())
    }

    /// A local LTX file of `pages` random pages covering `min..=max`, and its bytes.
    fn ltx(&self, min: u64, max: u64, pages: u32) -> (PathBuf, Vec<u8>) {
        let path = self.scratch.path().join(format!("{min}-{max}.ltx"));
        let content = write_ltx(&path, min, max, pages);
        (path, content)
    }

    /// Where Litestream keeps a level's files, relative to the replica root.
    fn rel_level_dir(&self, level: u32) -> String {
        match self.backend {
            Backend::File(_) | Backend::Gcs(_) | Backend::Abs(_) => format!("ltx/{level}"),
            Backend::S3(_) | Backend::Memory(_) => format!("{level:04x}"),
        }
    }

    fn rel_key(&self, k: LtxKey) -> String {
        let dir = self.rel_level_dir(k.level);
        format!("{dir}/{:016x}-{:016x}.ltx", k.min_txid.0, k.max_txid.0)
    }

    /// The key in the client's store (for the file backend, the absolute path without its `/`).
    fn full_key(&self, k: LtxKey) -> Path {
        Path::parse(format!("{}/{}", self.root, self.rel_key(k))).unwrap()
    }

    /// Every object under the replica root, relative to it, as the storage itself lists them.
    async fn raw_keys(&self) -> BTreeSet<String> {
        match self.backend {
            Backend::File(_) => files_under(FsPath::new(&self.root)),
            Backend::S3(server) => {
                let prefix = format!("{}/", self.root);
                server
                    .list(BUCKET, &prefix)
                    .into_iter()
                    .map(|k| k[prefix.len()..].to_string())
                    .collect()
            }
            Backend::Gcs(_) | Backend::Abs(_) => {
                let prefix = format!("{}/", self.root);
                self.emulator_listing(&prefix)
                    .into_iter()
                    .map(|blob| blob.name[prefix.len()..].to_string())
                    .collect()
            }
            Backend::Memory(store) => {
                let prefix = Path::parse(&self.root).unwrap();
                let metas: Vec<_> = store.list(Some(&prefix)).try_collect().await.unwrap();
                metas
                    .iter()
                    .map(|m| m.location.as_ref()[self.root.len() + 1..].to_string())
                    .collect()
            }
        }
    }

    /// Writes an object behind the client's back.
    async fn put_raw(&self, rel: &str, content: &'static [u8]) {
        match self.backend {
            Backend::File(_) => {
                let path = FsPath::new(&self.root).join(rel);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, content).unwrap();
            }
            Backend::S3(_) | Backend::Gcs(_) | Backend::Abs(_) | Backend::Memory(_) => {
                let location = Path::parse(format!("{}/{rel}", self.root)).unwrap();
                let payload = PutPayload::from_static(content);
                self.client.store().put(&location, payload).await.unwrap();
            }
        }
    }

    /// Checks the creation time where Litestream reads it: metadata text on the object stores
    /// (`litestream-timestamp`, `litestreamtimestamp` on Azure), mtime on file.
    async fn assert_stored_timestamp(&self, rel: &str) {
        let key = match self.backend {
            Backend::Abs(_) => AZURE_TIMESTAMP_METADATA_KEY,
            _ => TIMESTAMP_METADATA_KEY,
        };
        if let Backend::Gcs(_) | Backend::Abs(_) = self.backend {
            // As the emulator's own listing (what Litestream's gs and abs clients read) has it.
            let name = format!("{}/{rel}", self.root);
            let listed = self.emulator_listing(&name);
            let stored = listed[0].metadata.get(key).map(String::as_str);
            assert_eq!(stored, Some(CREATED_TEXT), "{}", self.name());
        }
        match self.backend {
            Backend::File(_) => {
                let meta = std::fs::metadata(FsPath::new(&self.root).join(rel)).unwrap();
                assert_eq!(meta.modified().unwrap(), created());
            }
            Backend::S3(_) | Backend::Gcs(_) | Backend::Abs(_) | Backend::Memory(_) => {
                let location = Path::parse(format!("{}/{rel}", self.root)).unwrap();
                let head = self
                    .client
                    .store()
                    .get_opts(&location, GetOptions::default().with_head(true))
                    .await
                    .unwrap();
                let stored = head
                    .attributes
                    .get(&Attribute::Metadata(key.into()))
                    .map(|v| v.to_string());
                assert_eq!(stored.as_deref(), Some(CREATED_TEXT), "{}", self.name());
            }
        }
    }

    /// The objects under `prefix` as the GCS or Azure emulator itself lists them.
    fn emulator_listing(&self, prefix: &str) -> Vec<testkit::Blob> {
        match self.backend {
            Backend::Gcs(server) => server.list(BUCKET, prefix),
            Backend::Abs(server) => server.list(BUCKET, prefix),
            _ => unreachable!("only the emulators list this way"),
        }
    }

    /// The `(min, max)` TXID ranges listed at `level`, in listing order.
    async fn ranges(&self, level: u32) -> Vec<(u64, u64)> {
        let files = self.client.list(level).await.unwrap();
        files
            .iter()
            .map(|f| (f.key.min_txid.0, f.key.max_txid.0))
            .collect()
    }

    async fn download(&self, k: LtxKey) -> Vec<u8> {
        let chunks = self.client.get(k).await.unwrap();
        chunks
            .try_fold(Vec::new(), |mut all, chunk| async move {
                all.extend_from_slice(&chunk);
                Ok(all)
            })
            .await
            .unwrap()
    }
}

/// Asserts what a replica error says and returns its text.
fn expect_replica_error(err: &Error, kind: ReplicaErrorKind, op: &str, location: &str) -> String {
    let Error::Replica(replica_error) = err else {
        panic!("not a replica error: {err}");
    };
    let ReplicaError {
        replica,
        op: actual_op,
        location: actual_location,
        kind: actual_kind,
        ..
    } = replica_error.as_ref();
    let text = err.to_string();
    assert_eq!(*actual_kind, kind, "{text}");
    assert_eq!(actual_op.to_string(), op, "{text}");
    assert!(actual_location.contains(location), "{text}");
    assert!(
        text.starts_with(&format!("replica {replica:?}: cannot {op} ")),
        "{text}"
    );
    text
}

fn s3_options(server: &S3Server, bucket: &str, prefix: &str) -> S3Options {
    let mut opts = S3Options::new(bucket, prefix);
    opts.region = testkit::S3_REGION.into();
    opts.endpoint = Some(server.endpoint());
    opts.force_path_style = true;
    opts.access_key_id = Some(testkit::S3_ACCESS_KEY_ID.into());
    opts.secret_access_key = Some(testkit::S3_SECRET_ACCESS_KEY.into());
    // As walship does in production: these machines set AWS_CA_BUNDLE, and it must not hurt.
    opts.ca_bundle = std::env::var_os("AWS_CA_BUNDLE").map(PathBuf::from);
    opts
}

fn gcs_options(server: &GcsServer, bucket: &str, prefix: &str) -> GcsOptions {
    let mut opts = GcsOptions::new(bucket, prefix);
    opts.emulator_host = Some(server.host());
    opts.ca_bundle = std::env::var_os("AWS_CA_BUNDLE").map(PathBuf::from);
    opts
}

fn abs_options(server: &AzuriteServer, container: &str, prefix: &str) -> AbsOptions {
    let mut opts = AbsOptions::new(container, prefix);
    opts.account_name = Some(testkit::AZURITE_ACCOUNT.into());
    opts.account_key = Some(testkit::AZURITE_KEY.into());
    opts.endpoint = Some(server.endpoint());
    opts
}

fn key(level: u32, min: u64, max: u64) -> LtxKey {
    LtxKey::new(level, Txid(min), Txid(max))
}

fn created() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(CREATED_MS as u64)
}

/// Pages enough for an LTX file of a little over two parts, so three parts go up.
fn multipart_pages() -> u32 {
    (2 * DEFAULT_PART_SIZE + DEFAULT_PART_SIZE / 5) as u32 / PAGE_SIZE
}

/// Writes an LTX file of incompressible pages `1..=pages` covering `min..=max`.
fn write_ltx(path: &FsPath, min: u64, max: u64, pages: u32) -> Vec<u8> {
    let header = Header::new(PAGE_SIZE, pages, Txid(min), Txid(max), CREATED_MS);
    let mut encoder = Encoder::new(Vec::new(), header, EncoderOptions::default()).unwrap();
    let mut state = (min << 32 | max) | 1;
    let mut page = vec![0u8; PAGE_SIZE as usize];
    for pgno in 1..=pages {
        for byte in page.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *byte = state as u8;
        }
        encoder.write_page(pgno, &page).unwrap();
    }
    let (content, _) = encoder.finish().unwrap();
    std::fs::write(path, &content).unwrap();
    content
}

/// The files under `root`, relative to it, with `/` separators.
fn files_under(root: &FsPath) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let rel = path.strip_prefix(root).unwrap();
                found.insert(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    found
}
