use std::io::{BufWriter, Write};

use crate::checksum::{hasher, Hasher};
use crate::index::PageIndexEntry;
use crate::page::PageCompressor;
use crate::{
    page_checksum, Checksum, DatabaseChecksum, Error, Header, PageEncoding, PageHeader, Result,
    Trailer, PAGE_HEADER_SIZE,
};

/// Options for writing LTX files.
#[derive(Debug, Clone, Copy, Default)]
pub struct EncoderOptions {
    /// How pages are compressed; [`PageEncoding::Block`] unless every reader predates 0.5.16.
    pub encoding: PageEncoding,
}

/// A streaming LTX encoder.
///
/// Memory use is one compressed page plus the page index (a few bytes per page), which the
/// format places after the pages.
pub struct Encoder<W: Write> {
    w: BufWriter<W>,
    header: Header,
    hash: Hasher,
    offset: u64,
    prev_pgno: u32,
    index: Vec<u8>,
    compressor: PageCompressor,
    db_checksum: Option<DatabaseChecksum>,
    post_apply: Option<Checksum>,
}

impl<W: Write> Encoder<W> {
    /// Validates `header` and writes it.
    pub fn new(w: W, header: Header, opts: EncoderOptions) -> Result<Self> {
        header.check()?;
        if header.commit == 0 && header.no_checksum() {
            return Err(Error::InvalidInput(
                "commit size 0 (an empty database) needs checksums, which this file does not carry"
                    .into(),
            ));
        }
        let bytes = header.to_bytes();
        let mut w = BufWriter::with_capacity(64 * 1024, w);
        w.write_all(&bytes)?;
        let mut hash = hasher();
        hash.update(&bytes);
        Ok(Encoder {
            w,
            header,
            hash,
            offset: bytes.len() as u64,
            prev_pgno: 0,
            index: Vec::new(),
            compressor: PageCompressor::new(opts.encoding, header.page_size),
            db_checksum: (header.is_snapshot() && !header.no_checksum())
                .then(DatabaseChecksum::default),
            post_apply: None,
        })
    }

    /// The header being written.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Appends one page. Pages must come in ascending order; a snapshot needs every page
    /// from 1 to its commit size except the lock page.
    pub fn write_page(&mut self, pgno: u32, page: &[u8]) -> Result<()> {
        self.check_page(pgno, page)?;
        let ph = PageHeader {
            pgno,
            flags: self.compressor.flags(),
        };
        let hbytes = ph.to_bytes();
        let data = self.compressor.compress(page);
        self.w.write_all(&hbytes)?;
        self.hash.update(&hbytes);
        let mut size = PAGE_HEADER_SIZE as u64;
        if ph.flags != 0 {
            let len = (data.len() as u32).to_be_bytes();
            self.w.write_all(&len)?;
            self.hash.update(&len);
            size += 4;
        }
        self.w.write_all(data)?;
        size += data.len() as u64;
        self.hash.update(page);
        PageIndexEntry {
            pgno,
            offset: self.offset,
            size,
        }
        .encode_into(&mut self.index);
        self.offset += size;
        if let Some(c) = self.db_checksum.as_mut() {
            c.add(page_checksum(pgno, page));
        }
        self.prev_pgno = pgno;
        Ok(())
    }

    fn check_page(&self, pgno: u32, page: &[u8]) -> Result<()> {
        let h = &self.header;
        let fail = |msg: String| Err(Error::InvalidInput(msg));
        if page.len() != h.page_size as usize {
            return fail(format!(
                "page {pgno} is {} bytes, the page size is {}",
                page.len(),
                h.page_size
            ));
        }
        if pgno == 0 || pgno > h.commit {
            return fail(format!(
                "page {pgno} is outside 1..={} (the commit size)",
                h.commit
            ));
        }
        if pgno == h.lock_pgno() {
            return fail(format!(
                "page {pgno} is the lock page, which is never stored"
            ));
        }
        if h.is_snapshot() {
            let expected = self.next_snapshot_pgno();
            if pgno != expected {
                return fail(format!(
                    "snapshot needs page {expected} next, got page {pgno}"
                ));
            }
        } else if pgno <= self.prev_pgno {
            return fail(format!(
                "page {pgno} after page {}: pages must ascend",
                self.prev_pgno
            ));
        }
        Ok(())
    }

    fn next_snapshot_pgno(&self) -> u32 {
        self.header.next_page_after(self.prev_pgno)
    }

    /// Sets the database checksum after this file is applied (only for files with checksums;
    /// for snapshots it is computed from the pages when not set).
    pub fn set_post_apply_checksum(&mut self, checksum: Checksum) {
        self.post_apply = Some(checksum);
    }

    /// Writes the page block's end, the page index and the trailer; returns the writer, flushed.
    pub fn finish(mut self) -> Result<(W, Trailer)> {
        if self.header.is_snapshot() && self.next_snapshot_pgno() <= self.header.commit {
            return Err(Error::InvalidInput(format!(
                "snapshot is missing pages {}..={}",
                self.next_snapshot_pgno(),
                self.header.commit
            )));
        }
        let post_apply_checksum =
            match (self.header.no_checksum(), self.post_apply, self.db_checksum) {
                (true, None, _) => Checksum(0),
                (false, Some(c), _) => c,
                (false, None, Some(db)) => db.value(),
                (true, Some(_), _) => {
                    return Err(Error::InvalidInput(
                        "post-apply checksum set on a file without checksums".into(),
                    ))
                }
                (false, None, None) => {
                    return Err(Error::InvalidInput(
                        "a file with checksums needs its post-apply checksum".into(),
                    ))
                }
            };
        let terminator = PageHeader::default().to_bytes();
        self.index.push(0);
        let index_len = (self.index.len() as u64).to_be_bytes();
        let post = post_apply_checksum.0.to_be_bytes();
        for part in [&terminator[..], &self.index, &index_len, &post] {
            self.w.write_all(part)?;
            self.hash.update(part);
        }
        let trailer = Trailer {
            post_apply_checksum,
            file_checksum: Checksum::from_crc(self.hash.finalize()),
        };
        self.w.write_all(&trailer.file_checksum.0.to_be_bytes())?;
        let w = self.w.into_inner().map_err(|e| Error::Io(e.into_error()))?;
        Ok((w, trailer))
    }
}
