use std::io::{BufReader, Read};

use crate::checksum::{hasher, Hasher};
use crate::index::{read_uvarint, PageIndexEntry};
use crate::page::read_page_data;
use crate::source::Source;
use crate::{
    page_checksum, Checksum, DatabaseChecksum, Error, Header, PageHeader, Result, Trailer,
    HEADER_SIZE, PAGE_HEADER_FLAG_SIZE, PAGE_HEADER_SIZE, TRAILER_SIZE,
};

/// Buffer size for the reader; small enough that a merge of many files stays cheap.
const READ_BUFFER: usize = 32 * 1024;

/// A streaming LTX decoder: one page at a time, every byte checked.
///
/// Call [`Decoder::read_page`] until it returns `None`, then [`Decoder::finish`], which reads the
/// page index and trailer and verifies the file checksum. Pages handed out before `finish`
/// succeeds are unverified: a caller that writes them somewhere must not trust the result until
/// `finish` returns `Ok`.
pub struct Decoder<R> {
    src: Source<BufReader<R>>,
    header: Header,
    hash: Hasher,
    /// CRC of the page index this file should have, built from the frames actually read.
    expected_index: Hasher,
    expected_index_len: u64,
    prev_pgno: u32,
    pages_read: u32,
    done: bool,
    db_checksum: Option<DatabaseChecksum>,
    raw: Vec<u8>,
    entry_buf: Vec<u8>,
}

impl<R: Read> Decoder<R> {
    /// Reads and validates the header.
    pub fn new(r: R) -> Result<Self> {
        let mut src = Source::new(BufReader::with_capacity(READ_BUFFER, r), 0);
        let bytes: [u8; HEADER_SIZE] = src.read_array("header")?;
        let header = Header::from_bytes(&bytes)?;
        let mut hash = hasher();
        hash.update(&bytes);
        let db_checksum =
            (header.is_snapshot() && !header.no_checksum()).then(DatabaseChecksum::default);
        Ok(Decoder {
            src,
            header,
            hash,
            expected_index: hasher(),
            expected_index_len: 0,
            prev_pgno: 0,
            pages_read: 0,
            done: false,
            db_checksum,
            raw: Vec::new(),
            entry_buf: Vec::with_capacity(30),
        })
    }

    /// The file's header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// How many pages have been read so far.
    pub fn pages_read(&self) -> u32 {
        self.pages_read
    }

    /// Reads the next page into `page` (exactly one page size long) and returns its number,
    /// or `None` at the end of the page block.
    pub fn read_page(&mut self, page: &mut [u8]) -> Result<Option<u32>> {
        if self.done {
            return Ok(None);
        }
        if page.len() != self.header.page_size as usize {
            return Err(Error::InvalidInput(format!(
                "page buffer of {} bytes for a file of {}-byte pages",
                page.len(),
                self.header.page_size
            )));
        }
        let at = self.src.offset();
        let hbytes: [u8; PAGE_HEADER_SIZE] = self.src.read_array("page header or end of pages")?;
        self.hash.update(&hbytes);
        let ph = PageHeader::from_bytes(&hbytes);
        if ph.is_terminator() {
            self.check_complete(at)?;
            self.done = true;
            return Ok(None);
        }
        self.check_page_header(ph, at)?;
        if let Some(size) = read_page_data(&mut self.src, ph, page, &mut self.raw)? {
            self.hash.update(&size);
        }
        self.hash.update(page);
        let entry = PageIndexEntry {
            pgno: ph.pgno,
            offset: at,
            size: self.src.offset() - at,
        };
        self.entry_buf.clear();
        entry.encode_into(&mut self.entry_buf);
        self.expected_index.update(&self.entry_buf);
        self.expected_index_len += self.entry_buf.len() as u64;
        if let Some(c) = self.db_checksum.as_mut() {
            c.add(page_checksum(ph.pgno, page));
        }
        self.prev_pgno = ph.pgno;
        self.pages_read += 1;
        Ok(Some(ph.pgno))
    }

    fn check_page_header(&self, ph: PageHeader, at: u64) -> Result<()> {
        let pgno = ph.pgno;
        if ph.flags & !PAGE_HEADER_FLAG_SIZE != 0 {
            return Err(Error::corrupt(
                at + 4,
                format!("page {pgno} has unknown flags 0x{:04x}", ph.flags),
            ));
        }
        if pgno == 0 {
            return Err(Error::corrupt(at, "page number 0 with non-zero flags"));
        }
        if pgno > self.header.commit {
            return Err(Error::corrupt(
                at,
                format!(
                    "page {pgno} is beyond the commit size of {} pages",
                    self.header.commit
                ),
            ));
        }
        if pgno == self.header.lock_pgno() {
            return Err(Error::corrupt(
                at,
                format!("page {pgno} is the lock page, which is never stored"),
            ));
        }
        if self.header.is_snapshot() {
            let expected = self.next_snapshot_pgno();
            if pgno != expected {
                return Err(Error::corrupt(
                    at,
                    format!("snapshot page {pgno} where page {expected} belongs"),
                ));
            }
        } else if pgno <= self.prev_pgno {
            return Err(Error::corrupt(
                at,
                format!("page {pgno} follows page {}: out of order", self.prev_pgno),
            ));
        }
        Ok(())
    }

    fn next_snapshot_pgno(&self) -> u32 {
        self.header.next_page_after(self.prev_pgno)
    }

    /// A snapshot must hold every page up to its commit size.
    fn check_complete(&self, at: u64) -> Result<()> {
        if self.header.is_snapshot() {
            let next = self.next_snapshot_pgno();
            if next <= self.header.commit {
                return Err(Error::corrupt(
                    at,
                    format!(
                        "snapshot ends before page {next} of its {} pages",
                        self.header.commit
                    ),
                ));
            }
        }
        Ok(())
    }

    fn index_byte(&mut self, actual_index: &mut Hasher) -> Result<u8> {
        let b = self.src.read_array::<1>("page index")?;
        self.hash.update(&b);
        actual_index.update(&b);
        Ok(b[0])
    }

    /// Reads any remaining pages, the page index and the trailer, and verifies the checksums.
    pub fn finish(mut self) -> Result<(Header, Trailer)> {
        if !self.done {
            let mut page = vec![0u8; self.header.page_size as usize];
            while self.read_page(&mut page)?.is_some() {}
        }
        let index_at = self.src.offset();
        let mut actual_index = hasher();
        for _ in 0..=self.pages_read {
            let at = self.src.offset();
            let pgno = read_uvarint(|| self.index_byte(&mut actual_index), at)?;
            if pgno == 0 {
                break;
            }
            read_uvarint(|| self.index_byte(&mut actual_index), at)?;
            read_uvarint(|| self.index_byte(&mut actual_index), at)?;
        }
        let index_len = self.src.offset() - index_at;
        // The loop reads at most one entry more than there are pages; the last thing read must
        // have been the terminator, and the entries must match the frames read.
        let terminator_ok = index_len > 0 && {
            let entries_len = index_len - 1;
            entries_len == self.expected_index_len && {
                self.expected_index.update(&[0]);
                actual_index.finalize() == self.expected_index.finalize()
            }
        };
        if !terminator_ok {
            return Err(Error::corrupt(
                index_at,
                "page index does not match the page frames",
            ));
        }
        let len_at = self.src.offset();
        let len_bytes: [u8; 8] = self.src.read_array("page index size")?;
        self.hash.update(&len_bytes);
        if u64::from_be_bytes(len_bytes) != index_len {
            return Err(Error::corrupt(
                len_at,
                format!(
                    "page index size field says {}, the index is {index_len} bytes",
                    u64::from_be_bytes(len_bytes)
                ),
            ));
        }
        let trailer_at = self.src.offset();
        let tbytes: [u8; TRAILER_SIZE] = self.src.read_array("trailer")?;
        self.hash.update(&tbytes[..8]);
        let trailer = Trailer::from_bytes(&tbytes);
        if !self.src.at_eof()? {
            return Err(Error::corrupt(
                trailer_at + TRAILER_SIZE as u64,
                "unexpected data after the trailer",
            ));
        }
        let computed = Checksum::from_crc(self.hash.finalize());
        if computed != trailer.file_checksum {
            return Err(Error::ChecksumMismatch {
                offset: trailer_at + 8,
                recorded: trailer.file_checksum,
                computed,
            });
        }
        trailer
            .validate(&self.header)
            .map_err(|(o, reason)| Error::corrupt(trailer_at + o, reason))?;
        if let Some(c) = self.db_checksum {
            if c.value() != trailer.post_apply_checksum {
                return Err(Error::corrupt(
                    trailer_at,
                    format!(
                        "post-apply checksum {} does not match the snapshot's pages ({})",
                        trailer.post_apply_checksum,
                        c.value()
                    ),
                ));
            }
        }
        Ok((self.header, trailer))
    }
}

/// Decodes a whole file, discarding pages, and returns its header and trailer if it is sound.
pub fn verify<R: Read>(r: R) -> Result<(Header, Trailer)> {
    Decoder::new(r)?.finish()
}
