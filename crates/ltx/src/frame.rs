//! Legacy page encoding: one standard LZ4 frame per page, as ltx v0.5.0/v0.5.1 write it.
//!
//! Frames carry no length prefix, so the reader walks the frame's structure to find its end and
//! hands the complete frame to `lz4_flex`, which checks the header and content checksums.

use std::io::{Read, Write};

use lz4_flex::frame::{BlockSize, FrameDecoder, FrameEncoder, FrameInfo};

use crate::source::Source;
use crate::Result;

const MAGIC: [u8; 4] = 0x184D_2204u32.to_le_bytes();
const FLG_VERSION_MASK: u8 = 0b1100_0000;
const FLG_VERSION: u8 = 0b0100_0000;
const FLG_BLOCK_CHECKSUM: u8 = 0b0001_0000;
const FLG_CONTENT_SIZE: u8 = 0b0000_1000;
const FLG_CONTENT_CHECKSUM: u8 = 0b0000_0100;
const FLG_DICT_ID: u8 = 0b0000_0001;
const BLOCK_UNCOMPRESSED: u32 = 1 << 31;

/// Writes `page` as one LZ4 frame as pierrec/lz4 v4 does: 64 KB blocks, content checksum.
pub(crate) fn encode(page: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let info = FrameInfo::new()
        .block_size(BlockSize::Max64KB)
        .content_checksum(true);
    let mut enc = FrameEncoder::with_frame_info(info, std::mem::take(out));
    enc.write_all(page).expect("writing to a Vec cannot fail");
    *out = enc.finish().expect("writing to a Vec cannot fail");
}

/// Reads the bytes of one LZ4 frame holding a page of `page_size` bytes into `out`.
///
/// Only the framing is checked here; [`decode`] checks the content. Blocks larger than a page
/// could ever need are rejected, so a corrupt length cannot make the reader allocate much.
pub(crate) fn read<R: Read>(src: &mut Source<R>, page_size: u32, out: &mut Vec<u8>) -> Result<()> {
    let start = src.offset();
    out.clear();
    let head: [u8; 6] = src.read_array("LZ4 frame header")?;
    if head[0..4] != MAGIC {
        return Err(crate::Error::corrupt(
            start,
            format!("bad LZ4 frame magic {:02x?}", &head[0..4]),
        ));
    }
    let flg = head[4];
    if flg & FLG_VERSION_MASK != FLG_VERSION {
        return Err(crate::Error::corrupt(
            start + 4,
            format!("unsupported LZ4 frame flags 0x{flg:02x}"),
        ));
    }
    out.extend_from_slice(&head);
    let mut rest = 1; // header checksum
    if flg & FLG_CONTENT_SIZE != 0 {
        rest += 8;
    }
    if flg & FLG_DICT_ID != 0 {
        rest += 4;
    }
    read_into(src, out, rest, "LZ4 frame header")?;

    // A stored page block is exactly a page; a compressed one is at most LZ4's bound for it.
    let max_block = page_size as usize + page_size as usize / 255 + 16;
    let mut total = 0usize;
    loop {
        let at = src.offset();
        let word: [u8; 4] = src.read_array("LZ4 block size")?;
        out.extend_from_slice(&word);
        let size = u32::from_le_bytes(word);
        if size == 0 {
            break;
        }
        let len = (size & !BLOCK_UNCOMPRESSED) as usize;
        total += len;
        if len > max_block || total > 2 * max_block {
            return Err(crate::Error::corrupt(
                at,
                format!("LZ4 block of {len} bytes is too large for a {page_size}-byte page"),
            ));
        }
        read_into(src, out, len, "LZ4 block")?;
        if flg & FLG_BLOCK_CHECKSUM != 0 {
            read_into(src, out, 4, "LZ4 block checksum")?;
        }
    }
    if flg & FLG_CONTENT_CHECKSUM != 0 {
        read_into(src, out, 4, "LZ4 content checksum")?;
    }
    Ok(())
}

fn read_into<R: Read>(
    src: &mut Source<R>,
    out: &mut Vec<u8>,
    n: usize,
    what: &'static str,
) -> Result<()> {
    let len = out.len();
    out.resize(len + n, 0);
    src.read_exact(&mut out[len..], what)
}

/// Decompresses a complete frame into `page`, which it must fill exactly.
pub(crate) fn decode(frame: &[u8], page: &mut [u8]) -> std::result::Result<(), String> {
    let mut dec = FrameDecoder::new(frame);
    let mut filled = 0;
    while filled < page.len() {
        match dec.read(&mut page[filled..]) {
            Ok(0) => {
                return Err(format!(
                    "LZ4 frame holds {filled} bytes, expected {}",
                    page.len()
                ))
            }
            Ok(n) => filled += n,
            Err(e) => return Err(format!("LZ4 frame: {e}")),
        }
    }
    // Reading on to the end verifies the content checksum and that nothing follows the page.
    let mut extra = [0u8; 1];
    match dec.read(&mut extra) {
        Ok(0) => Ok(()),
        Ok(_) => Err(format!("LZ4 frame holds more than {} bytes", page.len())),
        Err(e) => Err(format!("LZ4 frame: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_matches_pierrec_defaults() {
        let mut out = Vec::new();
        encode(&[7u8; 4096], &mut out);
        assert_eq!(&out[0..4], &MAGIC);
        assert_eq!(
            out[4], 0x64,
            "FLG: version 1, independent blocks, content checksum"
        );
        assert_eq!(out[5], 0x40, "BD: 64 KB blocks");
        assert_eq!(
            &out[out.len() - 8..out.len() - 4],
            &[0, 0, 0, 0],
            "end mark"
        );
    }

    #[test]
    fn frame_round_trips_and_reads_exactly_one_frame() {
        let page: Vec<u8> = (0..65536u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut frame = Vec::new();
        encode(&page, &mut frame);
        let mut stream = frame.clone();
        stream.extend_from_slice(b"NEXT");
        let mut src = Source::new(&stream[..], 0);
        let mut got = Vec::new();
        read(&mut src, 65536, &mut got).unwrap();
        assert_eq!(got, frame);
        let mut out = vec![0u8; 65536];
        decode(&got, &mut out).unwrap();
        assert_eq!(out, page);
    }
}
