//! Sample SQLite databases and ways to read what they hold.

use std::path::Path;

use rusqlite::{params, Connection};

/// Creates (or extends) a database at `path` with `rows` rows of varied content: short and long
/// text, random blobs that do not compress, and an index, so pages of every kind exist.
pub fn fill_sample(conn: &Connection, seed: u64, rows: u32) {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS items(id INTEGER PRIMARY KEY, name TEXT, body TEXT, blob BLOB);
         CREATE INDEX IF NOT EXISTS items_name ON items(name);",
    )
    .expect("create sample schema");
    let mut s = seed | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let tx = conn.unchecked_transaction().expect("begin");
    {
        let mut stmt = tx
            .prepare("INSERT INTO items(name, body, blob) VALUES (?1, ?2, ?3)")
            .expect("prepare insert");
        for _ in 0..rows {
            let n = next();
            let name = format!("item-{:x}", n % 100_000);
            let body = "lorem ipsum dolor sit amet ".repeat((n % 40) as usize);
            let blob: Vec<u8> = (0..(n % 700)).map(|_| next() as u8).collect();
            stmt.execute(params![name, body, blob]).expect("insert");
        }
    }
    tx.commit().expect("commit");
}

/// Opens a connection in WAL mode, as an application replicated by Litestream would.
pub fn open_wal(path: &Path) -> Connection {
    let conn = Connection::open(path).expect("open database");
    conn.pragma_update(None, "journal_mode", "wal")
        .expect("WAL mode");
    conn
}

/// The bytes of the database as a reader would see it: the file with its WAL checkpointed in,
/// taken from a copy so the original (and whoever holds it open) is not disturbed.
pub fn checkpointed_image(path: &Path) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = dir.path().join("copy.db");
    std::fs::copy(path, &copy).expect("copy database");
    let wal = path.with_extension(format!(
        "{}-wal",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    if wal.exists() {
        std::fs::copy(&wal, dir.path().join("copy.db-wal")).expect("copy WAL");
    }
    {
        let conn = Connection::open(&copy).expect("open copy");
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .expect("checkpoint copy");
    }
    std::fs::read(&copy).expect("read copy")
}

/// The index of the first page at which two database images differ, if any.
pub fn first_different_page(a: &[u8], b: &[u8], page_size: usize) -> Option<usize> {
    if a.len() != b.len() {
        return Some(a.len().min(b.len()) / page_size + 1);
    }
    a.chunks(page_size)
        .zip(b.chunks(page_size))
        .position(|(x, y)| x != y)
        .map(|i| i + 1)
}

/// Runs `PRAGMA integrity_check` and returns its answer ("ok" when sound).
pub fn integrity_check(path: &Path) -> String {
    let conn = Connection::open(path).expect("open database");
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check")
}
