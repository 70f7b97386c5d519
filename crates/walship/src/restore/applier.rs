//! Writing LTX files into a database file in place, one file at a time in TXID order: the one
//! applier behind a restore (into a new file beside the output) and follow mode (into the live
//! follower).
//!
//! Each page goes to `(pgno - 1) * page_size`; runs of consecutive pages go in one write. The
//! database is cut to the last file's size only at the end ([`Applier::truncate`]), as a merge
//! of the same files keeps pages of earlier files that a later one grows back over. A file's
//! checksum is verified once its pages are read: pages written before that are trusted only
//! when [`Applier::apply`] returns `Ok`, so a restore writes into a file nobody sees yet, and a
//! follower verifies its files before it applies them.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

use ltx::{page_checksum, Checksum, DatabaseChecksum, Decoder, Header, Txid};

use crate::replica::client::LtxKey;

/// Bytes of consecutive pages gathered into one write.
const RUN_BYTES: usize = 1 << 20;

/// Bytes written between two starts of writeback (see [`Applier::start_writeback`]).
const WRITEBACK_BYTES: u64 = 8 << 20;

/// Where a database stands: its page size, its size in pages, and the TXID it is at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DbState {
    /// Bytes per page.
    pub page_size: u32,
    /// Size in pages.
    pub commit: u32,
    /// The last transaction applied.
    pub txid: Txid,
}

/// Why a file could not be applied.
#[derive(Debug)]
pub(super) enum ApplyError {
    /// The LTX file is unreadable, corrupt, or does not continue the database.
    Input(ltx::Error),
    /// The database file could not be written or read.
    Output(io::Error),
}

/// Applies LTX files to one database file.
#[derive(Debug)]
pub(super) struct Applier {
    file: File,
    state: Option<DbState>,
    /// The database checksum the last file recorded, when it carries checksums.
    post_apply: Option<Checksum>,
    /// Pages gathered for the next write.
    run: Vec<u8>,
    /// Bytes written since writeback was last started.
    unstarted: u64,
}

impl Applier {
    /// An applier writing a new database into the empty `file`; its first file must hold the
    /// whole database.
    pub(super) fn new(file: File) -> Applier {
        Applier {
            file,
            state: None,
            post_apply: None,
            run: Vec::new(),
            unstarted: 0,
        }
    }

    /// An applier continuing the database in `file`, which is at `state`.
    pub(super) fn resume(file: File, state: DbState) -> Applier {
        Applier {
            state: Some(state),
            ..Applier::new(file)
        }
    }

    /// The database file.
    pub(super) fn file(&self) -> &File {
        &self.file
    }

    /// Where the database stands after the files applied so far; `None` before the first.
    pub(super) fn state(&self) -> Option<DbState> {
        self.state
    }

    /// Writes the pages of the LTX file read from `r`, listed as `key`, after `patch` has seen
    /// each one (page number, bytes), and verifies the file; returns its header.
    ///
    /// The file must continue the TXIDs applied so far. The first file, and a file whose page
    /// size differs from the database's (VACUUM after `PRAGMA page_size`), must hold every page
    /// of the database: the database is then started over from it.
    pub(super) fn apply<R: Read>(
        &mut self,
        r: R,
        key: LtxKey,
        mut patch: impl FnMut(u32, &mut [u8]),
    ) -> Result<Header, ApplyError> {
        let mut dec = Decoder::new(r).map_err(ApplyError::Input)?;
        let header = *dec.header();
        self.check_continues(&header, key)?;
        let whole = self.state.is_none_or(|s| s.page_size != header.page_size);
        if whole && self.state.is_some() {
            self.file.set_len(0).map_err(ApplyError::Output)?;
        }
        let page_size = header.page_size as usize;
        let capacity = (RUN_BYTES / page_size).max(1);
        self.run.resize(capacity * page_size, 0);
        // The run holds `held` pages from page `first` on.
        let (mut first, mut held, mut pages) = (0u32, 0usize, 0u32);
        loop {
            let slot = held * page_size..(held + 1) * page_size;
            let Some(pgno) = dec
                .read_page(&mut self.run[slot.clone()])
                .map_err(ApplyError::Input)?
            else {
                break;
            };
            patch(pgno, &mut self.run[slot.clone()]);
            pages += 1;
            if held > 0 && pgno != first + held as u32 {
                self.write_run(first, held, page_size)?;
                self.run.copy_within(slot, 0);
                held = 0;
            }
            if held == 0 {
                first = pgno;
            }
            held += 1;
            if held == capacity {
                self.write_run(first, held, page_size)?;
                held = 0;
            }
        }
        if held > 0 {
            self.write_run(first, held, page_size)?;
        }
        let (_, trailer) = dec.finish().map_err(ApplyError::Input)?;
        // Decoded pages are ascending, within the commit size and never the lock page, so
        // counting them tells whether all are there.
        let all = header.commit - u32::from(header.lock_pgno() <= header.commit);
        if whole && pages != all {
            let why = match self.state {
                None => "the first file".to_string(),
                Some(s) => format!(
                    "the page size changes from {} to {} here, so the file",
                    s.page_size, header.page_size
                ),
            };
            return Err(ApplyError::Input(ltx::Error::InvalidInput(format!(
                "{why} must hold the whole database, but it holds {pages} of its {all} pages"
            ))));
        }
        self.state = Some(DbState {
            page_size: header.page_size,
            commit: header.commit,
            txid: header.max_txid,
        });
        self.post_apply = (!header.no_checksum()).then_some(trailer.post_apply_checksum);
        Ok(header)
    }

    /// Checks that a file's header matches the name it was listed by and continues the TXIDs
    /// applied so far.
    fn check_continues(&self, header: &Header, key: LtxKey) -> Result<(), ApplyError> {
        let invalid = |reason: String| Err(ApplyError::Input(ltx::Error::InvalidInput(reason)));
        if (header.min_txid, header.max_txid) != (key.min_txid, key.max_txid) {
            return invalid(format!(
                "its header says TXIDs {}-{}, not the range in its name",
                header.min_txid, header.max_txid
            ));
        }
        match self.state {
            Some(s) if header.min_txid.0 > s.txid.0 + 1 || header.max_txid <= s.txid => {
                invalid(format!(
                    "its TXIDs {}-{} do not continue the database at TXID {}",
                    header.min_txid, header.max_txid, s.txid
                ))
            }
            _ => Ok(()),
        }
    }

    fn write_run(&mut self, first: u32, held: usize, page_size: usize) -> Result<(), ApplyError> {
        let at = u64::from(first - 1) * page_size as u64;
        let bytes = &self.run[..held * page_size];
        self.file
            .write_all_at(bytes, at)
            .map_err(ApplyError::Output)?;
        self.unstarted += bytes.len() as u64;
        if self.unstarted >= WRITEBACK_BYTES {
            self.start_writeback();
            self.unstarted = 0;
        }
        Ok(())
    }

    /// Asks the kernel to start writing the file's dirty pages to disk, without waiting: the
    /// disk then works while the next pages are decoded, and the final fsync waits only for the
    /// last few megabytes, not for the whole database (a restore of 200 MB waited 90 ms there).
    /// It is only a hint; the fsync is what makes the database durable.
    fn start_writeback(&self) {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: a plain syscall on a descriptor this applier owns; its result is ignored,
            // as a failure only leaves the work to the fsync.
            unsafe {
                libc::sync_file_range(self.file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
            }
        }
    }

    /// Cuts the database to the size the last file gives it.
    pub(super) fn truncate(&self) -> Result<(), ApplyError> {
        let Some(s) = self.state else {
            return Err(ApplyError::Input(ltx::Error::InvalidInput(
                "no file was applied".into(),
            )));
        };
        let len = u64::from(s.commit) * u64::from(s.page_size);
        self.file.set_len(len).map_err(ApplyError::Output)
    }

    /// Checks the database against the post-apply checksum the last file records, when it
    /// carries checksums (Litestream's and walship's files do not): the checksum of every page
    /// but the lock page, read back from the file.
    pub(super) fn verify_checksum(&self) -> Result<(), ApplyError> {
        let (Some(expected), Some(s)) = (self.post_apply, self.state) else {
            return Ok(());
        };
        let page_size = s.page_size as usize;
        let lock = ltx::lock_pgno(s.page_size);
        let per_read = (RUN_BYTES / page_size).max(1) as u32;
        let mut buf = vec![0u8; per_read as usize * page_size];
        let mut sum = DatabaseChecksum::default();
        let mut pgno = 1;
        while pgno <= s.commit {
            let n = per_read.min(s.commit - pgno + 1);
            let chunk = &mut buf[..n as usize * page_size];
            self.file
                .read_exact_at(chunk, u64::from(pgno - 1) * page_size as u64)
                .map_err(ApplyError::Output)?;
            for (i, page) in chunk.chunks_exact(page_size).enumerate() {
                let at = pgno + i as u32;
                if at != lock {
                    sum.add(page_checksum(at, page));
                }
            }
            pgno += n;
        }
        if sum.value() == expected {
            Ok(())
        } else {
            Err(ApplyError::Input(ltx::Error::InvalidInput(format!(
                "it records the post-apply database checksum {expected}, but the database \
                 restored up to it has checksum {}",
                sum.value()
            ))))
        }
    }
}

#[cfg(test)]
mod tests {
    use ltx::{Encoder, EncoderOptions, HEADER_FLAG_NO_CHECKSUM};

    use super::*;

    /// Page `pgno` of version `v` of a test database.
    fn page(page_size: u32, pgno: u32, v: u8) -> Vec<u8> {
        let mut p = vec![v; page_size as usize];
        p[..4].copy_from_slice(&pgno.to_be_bytes());
        p
    }

    /// An LTX file for TXIDs `min..=max` holding `pages`; with `checksums`, the database
    /// checksums before (unless a snapshot) and after it.
    fn ltx_file(
        page_size: u32,
        commit: u32,
        (min, max): (u64, u64),
        pages: &[(u32, Vec<u8>)],
        checksums: Option<(Checksum, Checksum)>,
    ) -> Vec<u8> {
        let mut header = Header::new(page_size, commit, Txid(min), Txid(max), 1);
        if let Some((pre, _)) = checksums {
            header.flags &= !HEADER_FLAG_NO_CHECKSUM;
            if min > 1 {
                header.pre_apply_checksum = pre;
            }
        }
        let mut enc = Encoder::new(Vec::new(), header, EncoderOptions::default()).unwrap();
        for (pgno, data) in pages {
            enc.write_page(*pgno, data).unwrap();
        }
        if let Some((_, post)) = checksums.filter(|_| min > 1) {
            enc.set_post_apply_checksum(post);
        }
        enc.finish().unwrap().0
    }

    fn key(min: u64, max: u64) -> LtxKey {
        LtxKey::new(0, Txid(min), Txid(max))
    }

    fn applier() -> (tempfile::NamedTempFile, Applier) {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let applier = Applier::new(tmp.reopen().unwrap());
        (tmp, applier)
    }

    fn apply(a: &mut Applier, bytes: &[u8], min: u64, max: u64) -> Result<Header, ApplyError> {
        a.apply(bytes, key(min, max), |_, _| {})
    }

    fn input_error(r: Result<impl std::fmt::Debug, ApplyError>) -> String {
        match r {
            Err(ApplyError::Input(e)) => e.to_string(),
            other => panic!("not an input error: {other:?}"),
        }
    }

    #[test]
    fn pages_land_at_their_offsets_and_the_database_ends_at_the_last_size() {
        // More pages than one write takes, then files that rewrite, grow and shrink it.
        let snapshot: Vec<_> = (1..=5000).map(|p| (p, page(512, p, 1))).collect();
        let grow = [(3, page(512, 3, 2)), (5001, page(512, 5001, 2))];
        let shrink = [(2, page(512, 2, 3)), (4999, page(512, 4999, 3))];
        let (tmp, mut a) = applier();
        apply(&mut a, &ltx_file(512, 5000, (1, 1), &snapshot, None), 1, 1).unwrap();
        apply(&mut a, &ltx_file(512, 5002, (2, 3), &grow, None), 2, 3).unwrap();
        apply(&mut a, &ltx_file(512, 4999, (4, 4), &shrink, None), 4, 4).unwrap();
        assert_eq!(
            a.state(),
            Some(DbState {
                page_size: 512,
                commit: 4999,
                txid: Txid(4)
            })
        );
        a.truncate().unwrap();
        let db = std::fs::read(tmp.path()).unwrap();
        assert_eq!(db.len(), 4999 * 512);
        for (pgno, data) in db.chunks(512).enumerate() {
            let pgno = pgno as u32 + 1;
            let v = match pgno {
                2 | 4999 => 3,
                3 => 2,
                _ => 1,
            };
            assert!(data == page(512, pgno, v), "page {pgno}");
        }
    }

    #[test]
    fn the_first_file_and_a_new_page_size_need_the_whole_database() {
        let (_tmp, mut a) = applier();
        let partial = ltx_file(512, 3, (2, 2), &[(1, page(512, 1, 1))], None);
        let err = input_error(apply(&mut a, &partial, 2, 2));
        assert!(
            err.contains("the first file must hold the whole database"),
            "{err}"
        );

        let (tmp, mut a) = applier();
        let snapshot: Vec<_> = (1..=4).map(|p| (p, page(512, p, 1))).collect();
        apply(&mut a, &ltx_file(512, 4, (1, 1), &snapshot, None), 1, 1).unwrap();
        let bigger: Vec<_> = (1..=3).map(|p| (p, page(1024, p, 2))).collect();
        let err = input_error(apply(
            &mut a,
            &ltx_file(1024, 3, (2, 2), &bigger[..2], None),
            2,
            2,
        ));
        assert!(
            err.contains("page size changes from 512 to 1024")
                && err.contains("holds 2 of its 3 pages"),
            "{err}"
        );
        // Whole, it starts the database over.
        apply(&mut a, &ltx_file(1024, 3, (2, 2), &bigger, None), 2, 2).unwrap();
        a.truncate().unwrap();
        let want: Vec<u8> = bigger.iter().flat_map(|(_, d)| d.clone()).collect();
        assert!(std::fs::read(tmp.path()).unwrap() == want);
    }

    #[test]
    fn files_must_match_their_names_and_continue_the_txids() {
        let (_tmp, mut a) = applier();
        let snapshot: Vec<_> = (1..=2).map(|p| (p, page(512, p, 1))).collect();
        let file = ltx_file(512, 2, (1, 1), &snapshot, None);
        let err = input_error(a.apply(&file[..], key(1, 2), |_, _| {}));
        assert!(err.contains("header says TXIDs"), "{err}");
        apply(&mut a, &file, 1, 1).unwrap();
        let later = ltx_file(512, 2, (3, 3), &[(1, page(512, 1, 2))], None);
        let err = input_error(apply(&mut a, &later, 3, 3));
        assert!(
            err.contains("do not continue the database at TXID"),
            "{err}"
        );
        let again = ltx_file(512, 2, (1, 1), &snapshot, None);
        assert!(input_error(apply(&mut a, &again, 1, 1)).contains("do not continue"));
    }

    #[test]
    fn a_damaged_file_fails_its_checksum() {
        let (_tmp, mut a) = applier();
        let snapshot: Vec<_> = (1..=2).map(|p| (p, page(512, p, 1))).collect();
        let mut file = ltx_file(512, 2, (1, 1), &snapshot, None);
        let at = file.len() - 30;
        file[at] ^= 1;
        let err = input_error(apply(&mut a, &file, 1, 1));
        assert!(err.contains("corrupt") || err.contains("checksum"), "{err}");
    }

    #[test]
    fn database_checksums_are_verified_when_files_carry_them() {
        let checksum = |pages: &[Vec<u8>]| {
            let mut sum = DatabaseChecksum::default();
            for (i, p) in pages.iter().enumerate() {
                sum.add(page_checksum(i as u32 + 1, p));
            }
            sum.value()
        };
        let v1: Vec<_> = (1..=3).map(|p| page(512, p, 1)).collect();
        let mut v2 = v1.clone();
        v2[1] = page(512, 2, 2);
        let (c1, c2) = (checksum(&v1), checksum(&v2));
        let snapshot: Vec<_> = (1..=3).map(|p| (p, v1[p as usize - 1].clone())).collect();
        let snapshot = ltx_file(512, 3, (1, 1), &snapshot, Some((Checksum(0), c1)));
        let change = [(2, v2[1].clone())];
        for (post, ok) in [(c2, true), (c1, false)] {
            let (_tmp, mut a) = applier();
            apply(&mut a, &snapshot, 1, 1).unwrap();
            let file = ltx_file(512, 3, (2, 2), &change, Some((c1, post)));
            apply(&mut a, &file, 2, 2).unwrap();
            a.truncate().unwrap();
            match a.verify_checksum() {
                Ok(()) => assert!(ok),
                Err(e) => {
                    let err = input_error(Err::<(), _>(e));
                    assert!(!ok && err.contains("post-apply database checksum"), "{err}");
                }
            }
        }
    }
}
