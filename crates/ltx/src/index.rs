//! The page index at the end of a file, and random access to single pages through it.

use std::io::{Read, Seek, SeekFrom};

use crate::page::read_page_data;
use crate::source::Source;
use crate::{
    Error, Header, PageHeader, Result, Trailer, HEADER_SIZE, PAGE_HEADER_SIZE, TRAILER_SIZE,
};

/// Where one page's frame lies in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageIndexEntry {
    pub pgno: u32,
    /// Absolute offset of the page's 6-byte header.
    pub offset: u64,
    /// Length of the whole frame: header, size field and compressed data.
    pub size: u64,
}

impl PageIndexEntry {
    /// Appends the entry's index encoding: three unsigned LEB128 varints.
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        put_uvarint(out, u64::from(self.pgno));
        put_uvarint(out, self.offset);
        put_uvarint(out, self.size);
    }
}

pub(crate) fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads one unsigned LEB128 varint, calling `byte` for each byte.
pub(crate) fn read_uvarint(mut byte: impl FnMut() -> Result<u8>, at: u64) -> Result<u64> {
    let mut v = 0u64;
    for i in 0..10 {
        let b = byte()?;
        if i == 9 && b > 1 {
            return Err(Error::corrupt(at, "page index varint overflows 64 bits"));
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(Error::corrupt(at, "page index varint longer than 10 bytes"))
}

/// A file's header and page index, read from its two ends, for fetching single pages.
///
/// Random access cannot verify the file checksum (that needs the whole file); it checks the
/// index's structure and each fetched page's header and compression.
#[derive(Debug, Clone)]
pub struct PageIndex {
    header: Header,
    trailer: Trailer,
    entries: Vec<PageIndexEntry>,
}

impl PageIndex {
    /// Reads the header, the trailer and the page index of a seekable file.
    pub fn read<R: Read + Seek>(r: &mut R) -> Result<PageIndex> {
        let len = r.seek(SeekFrom::End(0))?;
        let min_len = (HEADER_SIZE + PAGE_HEADER_SIZE + 1 + 8 + TRAILER_SIZE) as u64;
        if len < min_len {
            return Err(Error::Truncated {
                offset: len,
                what: "a complete LTX file",
            });
        }
        r.seek(SeekFrom::Start(0))?;
        let header = Header::from_bytes(&Source::new(&mut *r, 0).read_array("header")?)?;

        let tail_at = len - 8 - TRAILER_SIZE as u64;
        r.seek(SeekFrom::Start(tail_at))?;
        let mut tail = Source::new(&mut *r, tail_at);
        let index_len = u64::from_be_bytes(tail.read_array("page index size")?);
        let trailer = Trailer::from_bytes(&tail.read_array("trailer")?);
        trailer
            .validate(&header)
            .map_err(|(o, reason)| Error::corrupt(tail_at + 8 + o, reason))?;
        let max_index = tail_at - (HEADER_SIZE + PAGE_HEADER_SIZE) as u64;
        if index_len == 0 || index_len > max_index {
            return Err(Error::corrupt(
                tail_at,
                format!("page index size {index_len} does not fit the file"),
            ));
        }
        let index_at = tail_at - index_len;
        r.seek(SeekFrom::Start(index_at))?;
        let mut bytes = vec![0u8; index_len as usize];
        Source::new(&mut *r, index_at).read_exact(&mut bytes, "page index")?;

        let mut cursor = IndexCursor {
            bytes: &bytes,
            pos: 0,
            base: index_at,
        };
        let mut entries: Vec<PageIndexEntry> = Vec::new();
        let data_end = index_at - PAGE_HEADER_SIZE as u64;
        loop {
            let at = cursor.offset();
            let pgno = cursor.uvarint()?;
            if pgno == 0 {
                break;
            }
            let offset = cursor.uvarint()?;
            let size = cursor.uvarint()?;
            let prev_end = entries
                .last()
                .map_or(HEADER_SIZE as u64, |e| e.offset + e.size);
            let in_order = entries.last().is_none_or(|e| u64::from(e.pgno) < pgno);
            if !in_order || pgno > u64::from(header.commit) {
                return Err(Error::corrupt(
                    at,
                    format!("page index entry for page {pgno} is out of order or beyond the commit size"),
                ));
            }
            if offset != prev_end
                || size <= PAGE_HEADER_SIZE as u64
                || offset.checked_add(size).is_none_or(|end| end > data_end)
            {
                return Err(Error::corrupt(
                    at,
                    format!("page index entry for page {pgno} points outside the page block"),
                ));
            }
            entries.push(PageIndexEntry {
                pgno: pgno as u32,
                offset,
                size,
            });
        }
        let end_of_pages = entries
            .last()
            .map_or(HEADER_SIZE as u64, |e| e.offset + e.size);
        if cursor.pos as u64 != index_len || end_of_pages != data_end {
            return Err(Error::corrupt(
                index_at,
                "page index does not cover the page block exactly",
            ));
        }
        Ok(PageIndex {
            header,
            trailer,
            entries,
        })
    }

    /// The file's header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The file's trailer (its file checksum is not verified by random access).
    pub fn trailer(&self) -> &Trailer {
        &self.trailer
    }

    /// Every page in the file, in ascending page number.
    pub fn entries(&self) -> &[PageIndexEntry] {
        &self.entries
    }

    /// Where page `pgno` lies, if the file holds it.
    pub fn get(&self, pgno: u32) -> Option<&PageIndexEntry> {
        self.entries
            .binary_search_by_key(&pgno, |e| e.pgno)
            .ok()
            .map(|i| &self.entries[i])
    }

    /// Reads page `pgno` into `page`; returns false if the file does not hold it.
    pub fn read_page<R: Read + Seek>(&self, r: &mut R, pgno: u32, page: &mut [u8]) -> Result<bool> {
        if page.len() != self.header.page_size as usize {
            return Err(Error::InvalidInput(format!(
                "page buffer of {} bytes for a file of {}-byte pages",
                page.len(),
                self.header.page_size
            )));
        }
        let Some(entry) = self.get(pgno) else {
            return Ok(false);
        };
        r.seek(SeekFrom::Start(entry.offset))?;
        let mut src = Source::new(r.take(entry.size), entry.offset);
        let header = PageHeader::from_bytes(&src.read_array("page header")?);
        if header.pgno != pgno || header.flags & !crate::PAGE_HEADER_FLAG_SIZE != 0 {
            return Err(Error::corrupt(
                entry.offset,
                format!("page index points at page header {header:?}, expected page {pgno}"),
            ));
        }
        let mut raw = Vec::new();
        read_page_data(&mut src, header, page, &mut raw)?;
        if src.offset() != entry.offset + entry.size {
            return Err(Error::corrupt(
                entry.offset,
                format!("page {pgno} frame is shorter than its index entry says"),
            ));
        }
        Ok(true)
    }
}

/// Reads varints from an in-memory copy of the index, tracking file offsets for errors.
struct IndexCursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    base: u64,
}

impl IndexCursor<'_> {
    fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    fn uvarint(&mut self) -> Result<u64> {
        let at = self.offset();
        read_uvarint(
            || {
                let b = *self.bytes.get(self.pos).ok_or_else(|| {
                    Error::corrupt(
                        self.base + self.pos as u64,
                        "page index ends without its terminator",
                    )
                })?;
                self.pos += 1;
                Ok(b)
            },
            at,
        )
    }
}
