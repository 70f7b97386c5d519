use std::io::Read;

use crate::source::Source;
use crate::{frame, Error, Result};

/// Size of the header before every page frame.
pub const PAGE_HEADER_SIZE: usize = 6;

/// Page header flag: a 4-byte size and an LZ4 block follow (ltx v0.5.2, Litestream 0.5.16+).
pub const PAGE_HEADER_FLAG_SIZE: u16 = 1;

/// The header of one page frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PageHeader {
    pub pgno: u32,
    pub flags: u16,
}

impl PageHeader {
    /// Serializes the header.
    pub fn to_bytes(self) -> [u8; PAGE_HEADER_SIZE] {
        let mut b = [0u8; PAGE_HEADER_SIZE];
        b[0..4].copy_from_slice(&self.pgno.to_be_bytes());
        b[4..6].copy_from_slice(&self.flags.to_be_bytes());
        b
    }

    /// Parses a header without validating it.
    pub fn from_bytes(b: &[u8; PAGE_HEADER_SIZE]) -> PageHeader {
        PageHeader {
            pgno: u32::from_be_bytes(b[0..4].try_into().unwrap()),
            flags: u16::from_be_bytes(b[4..6].try_into().unwrap()),
        }
    }

    /// The all-zero header that ends the page block.
    pub fn is_terminator(self) -> bool {
        self == PageHeader::default()
    }

    /// How the page data that follows this header is encoded.
    pub fn encoding(self) -> PageEncoding {
        if self.flags & PAGE_HEADER_FLAG_SIZE != 0 {
            PageEncoding::Block
        } else {
            PageEncoding::Frame
        }
    }
}

/// How page data is compressed inside a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PageEncoding {
    /// A 4-byte size and a raw LZ4 block: written by Litestream 0.5.16+, read by 0.5.16+.
    #[default]
    Block,
    /// One LZ4 frame: written by Litestream 0.5.0 to 0.5.15, read by every 0.5.x.
    Frame,
}

/// Compresses pages, reusing one output buffer.
pub(crate) struct PageCompressor {
    encoding: PageEncoding,
    buf: Vec<u8>,
}

impl PageCompressor {
    pub(crate) fn new(encoding: PageEncoding, page_size: u32) -> Self {
        let cap = lz4_flex::block::get_maximum_output_size(page_size as usize) + 32;
        PageCompressor {
            encoding,
            buf: vec![0; cap],
        }
    }

    pub(crate) fn flags(&self) -> u16 {
        match self.encoding {
            PageEncoding::Block => PAGE_HEADER_FLAG_SIZE,
            PageEncoding::Frame => 0,
        }
    }

    /// The encoded page data that follows the page header (without the size prefix).
    pub(crate) fn compress(&mut self, page: &[u8]) -> &[u8] {
        match self.encoding {
            PageEncoding::Block => {
                let n = lz4_flex::block::compress_into(page, &mut self.buf)
                    .expect("buffer is sized by lz4's bound");
                &self.buf[..n]
            }
            PageEncoding::Frame => {
                frame::encode(page, &mut self.buf);
                &self.buf
            }
        }
    }
}

/// Reads the data of one page frame whose header was just read, decompressing into `page`.
///
/// `raw` is scratch space for the compressed bytes. Returns the 4-byte size field for block
/// pages, which is part of the file checksum.
pub(crate) fn read_page_data<R: Read>(
    src: &mut Source<R>,
    header: PageHeader,
    page: &mut [u8],
    raw: &mut Vec<u8>,
) -> Result<Option<[u8; 4]>> {
    let page_size = page.len() as u32;
    match header.encoding() {
        PageEncoding::Block => {
            let at = src.offset();
            let size_field: [u8; 4] = src.read_array("page data size")?;
            let size = u32::from_be_bytes(size_field) as usize;
            let bound = lz4_flex::block::get_maximum_output_size(page_size as usize);
            if size == 0 || size > bound {
                return Err(Error::corrupt(
                    at,
                    format!(
                        "page {} data size {size} is impossible for a {page_size}-byte page",
                        header.pgno
                    ),
                ));
            }
            raw.resize(size, 0);
            let data_at = src.offset();
            src.read_exact(raw, "page data")?;
            decode_block(raw, page)
                .map_err(|e| Error::corrupt(data_at, format!("page {}: {e}", header.pgno)))?;
            Ok(Some(size_field))
        }
        PageEncoding::Frame => {
            let at = src.offset();
            frame::read(src, page_size, raw)?;
            frame::decode(raw, page)
                .map_err(|e| Error::corrupt(at, format!("page {}: {e}", header.pgno)))?;
            Ok(None)
        }
    }
}

fn decode_block(raw: &[u8], page: &mut [u8]) -> std::result::Result<(), String> {
    match lz4_flex::block::decompress_into(raw, page) {
        Ok(n) if n == page.len() => Ok(()),
        Ok(n) => Err(format!(
            "LZ4 block holds {n} bytes, expected {}",
            page.len()
        )),
        Err(e) => Err(format!("LZ4 block: {e}")),
    }
}
