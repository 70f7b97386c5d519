//! Conversions between SQLite database files and LTX snapshots.

use std::io::{Read, Seek, SeekFrom, Write};

use crate::{
    is_valid_page_size, Decoder, Encoder, EncoderOptions, Error, Header, Result, Trailer, Txid,
};

/// Reads the page size from a SQLite database header (bytes 16-17; 1 means 65536).
pub fn page_size_of(db_header: &[u8]) -> Option<u32> {
    let raw = u16::from_be_bytes(db_header.get(16..18)?.try_into().ok()?);
    let size = if raw == 1 { 65536 } else { u32::from(raw) };
    is_valid_page_size(size).then_some(size)
}

/// Writes a database file image as a snapshot LTX (TXIDs 1..=`txid`), streaming page by page.
///
/// The caller must keep the database from changing while it is read (hold a read transaction,
/// or copy a quiescent file).
pub fn encode_snapshot<R: Read + Seek, W: Write>(
    mut db: R,
    w: W,
    txid: Txid,
    timestamp_ms: i64,
    opts: EncoderOptions,
) -> Result<(W, Header, Trailer)> {
    let len = db.seek(SeekFrom::End(0))?;
    db.seek(SeekFrom::Start(0))?;
    let mut first = [0u8; 100];
    if len < 100 {
        return Err(Error::InvalidInput(format!(
            "a {len}-byte file is not a SQLite database"
        )));
    }
    db.read_exact(&mut first)?;
    if &first[0..16] != b"SQLite format 3\0" {
        return Err(Error::InvalidInput(
            "not a SQLite database: bad header string".into(),
        ));
    }
    let page_size = page_size_of(&first)
        .ok_or_else(|| Error::InvalidInput("SQLite header holds an invalid page size".into()))?;
    if len % u64::from(page_size) != 0 {
        return Err(Error::InvalidInput(format!(
            "database is {len} bytes, not a whole number of {page_size}-byte pages"
        )));
    }
    let commit = u32::try_from(len / u64::from(page_size))
        .map_err(|_| Error::InvalidInput("database has more than 2^32 pages".into()))?;
    let header = Header::new(page_size, commit, Txid(1), txid, timestamp_ms);
    let mut enc = Encoder::new(w, header, opts)?;
    db.seek(SeekFrom::Start(0))?;
    let mut page = vec![0u8; page_size as usize];
    let lock = header.lock_pgno();
    for pgno in 1..=commit {
        db.read_exact(&mut page)?;
        if pgno != lock {
            enc.write_page(pgno, &page)?;
        }
    }
    let (w, trailer) = enc.finish()?;
    Ok((w, header, trailer))
}

/// Writes the database held by a snapshot LTX to `w`: pages 1..=commit, lock page zeroed.
///
/// Returns only after the whole file is verified; on error, what was written is not a database.
pub fn decode_snapshot<R: Read, W: Write>(ltx: R, mut w: W) -> Result<(W, Header)> {
    let mut dec = Decoder::new(ltx)?;
    let header = *dec.header();
    if !header.is_snapshot() {
        return Err(Error::InvalidInput(format!(
            "file {}-{} is not a snapshot: it does not start at TXID 1",
            header.min_txid, header.max_txid
        )));
    }
    let mut page = vec![0u8; header.page_size as usize];
    let lock = header.lock_pgno();
    for pgno in 1..=header.commit {
        if pgno == lock {
            page.fill(0);
        } else {
            // The decoder enforces that snapshot pages are contiguous, so this is `pgno`.
            dec.read_page(&mut page)?;
        }
        w.write_all(&page)?;
    }
    dec.finish()?;
    Ok((w, header))
}
