//! What must hold for any byte string the LTX decoder accepts, checked without trusting the
//! decoder: the header and trailer bytes, the page order rules, random access through the page
//! index, and the file checksum recomputed from the format's definition (§1.6 of the format
//! notes) with our own CRC.

use std::io::Cursor;

use crc::{Crc, CRC_64_GO_ISO};
use ltx::{
    Decoder, Encoder, EncoderOptions, Header, PageEncoding, PageHeader, PageIndex, Trailer,
    CHECKSUM_FLAG, HEADER_SIZE, PAGE_HEADER_FLAG_SIZE, PAGE_HEADER_SIZE, TRAILER_SIZE,
};

/// Go's `hash/crc64` ISO table, set up here independently of the ltx crate.
pub const CRC64: Crc<u64> = Crc::<u64>::new(&CRC_64_GO_ISO);

/// A file as the streaming decoder saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub header: Header,
    pub trailer: Trailer,
    /// Every page in file order.
    pub pages: Vec<(u32, Vec<u8>)>,
}

/// Decodes every page of `data` with [`Decoder`], then finishes (verifying the checksum).
pub fn decode(data: &[u8]) -> ltx::Result<Decoded> {
    let mut dec = Decoder::new(data)?;
    let header = *dec.header();
    let mut page = vec![0u8; header.page_size as usize];
    let mut pages = Vec::new();
    while let Some(pgno) = dec.read_page(&mut page)? {
        assert_eq!(dec.pages_read() as usize, pages.len() + 1);
        pages.push((pgno, page.clone()));
    }
    let (finished, trailer) = dec.finish()?;
    assert_eq!(finished, header, "finish returned another header");
    Ok(Decoded {
        header,
        trailer,
        pages,
    })
}

/// `FLAG | CRC-64` of a page, as the format defines the page checksum.
pub fn page_checksum(pgno: u32, page: &[u8]) -> u64 {
    let mut d = CRC64.digest();
    d.update(&pgno.to_be_bytes());
    d.update(page);
    CHECKSUM_FLAG | d.finalize()
}

/// The database checksum of a set of pages: `FLAG | XOR` of their page checksums.
pub fn database_checksum<'a>(pages: impl IntoIterator<Item = (u32, &'a [u8])>) -> u64 {
    pages.into_iter().fold(CHECKSUM_FLAG, |c, (pgno, page)| {
        CHECKSUM_FLAG | (c ^ page_checksum(pgno, page))
    })
}

/// Checks everything that must be true of a file the decoder accepted, `d` being its decoding.
pub fn check_sound(data: &[u8], d: &Decoded) {
    let h = d.header;
    // The header and trailer are the bytes at the two ends, and the header re-serializes to them.
    let head: &[u8; HEADER_SIZE] = data[..HEADER_SIZE].try_into().unwrap();
    assert_eq!(Header::from_bytes(head).expect("accepted header"), h);
    assert_eq!(&h.to_bytes()[..80], &data[..80]);
    h.check().expect("an accepted header passes Header::check");
    let tail: &[u8; TRAILER_SIZE] = data[data.len() - TRAILER_SIZE..].try_into().unwrap();
    assert_eq!(Trailer::from_bytes(tail), d.trailer);
    assert!(d.trailer.file_checksum.is_valid());
    if h.no_checksum() {
        assert_eq!(d.trailer.post_apply_checksum.0, 0);
    } else {
        assert!(d.trailer.post_apply_checksum.is_valid());
    }

    // Page rules: strictly ascending, within the commit size, never the lock page; a snapshot
    // holds every page but the lock page.
    let lock = h.lock_pgno();
    let mut prev = 0u32;
    for (pgno, page) in &d.pages {
        assert!(
            *pgno > prev && *pgno <= h.commit && *pgno != lock,
            "page {pgno}"
        );
        assert_eq!(page.len(), h.page_size as usize);
        prev = *pgno;
    }
    if h.is_snapshot() {
        let expected = (1..=h.commit).filter(|p| *p != lock).count();
        assert_eq!(d.pages.len(), expected, "a snapshot holds every page");
        if !h.no_checksum() {
            let sum = database_checksum(d.pages.iter().map(|(p, v)| (*p, v.as_slice())));
            assert_eq!(
                d.trailer.post_apply_checksum.0, sum,
                "snapshot post-apply checksum"
            );
        }
    }

    // Random access agrees with the streaming decoder, page for page.
    let index = PageIndex::read(&mut Cursor::new(data)).expect("a sound file has a usable index");
    assert_eq!(*index.header(), h);
    assert_eq!(*index.trailer(), d.trailer);
    assert_eq!(index.entries().len(), d.pages.len());
    let mut page = vec![0u8; h.page_size as usize];
    for (entry, (pgno, want)) in index.entries().iter().zip(&d.pages) {
        assert_eq!(entry.pgno, *pgno);
        assert_eq!(index.get(*pgno), Some(entry));
        assert!(index
            .read_page(&mut Cursor::new(data), *pgno, &mut page)
            .expect("read through the index"));
        assert_eq!(&page, want, "page {pgno} through the index");
    }

    // The file checksum over the logical stream: raw header, page headers and size fields,
    // decompressed pages, then every byte up to the file checksum itself.
    let mut crc = CRC64.digest();
    crc.update(&data[..HEADER_SIZE]);
    let mut end = HEADER_SIZE;
    for (entry, (_, page)) in index.entries().iter().zip(&d.pages) {
        let at = entry.offset as usize;
        assert_eq!(at, end, "frames are contiguous");
        let ph: &[u8; PAGE_HEADER_SIZE] = data[at..at + PAGE_HEADER_SIZE].try_into().unwrap();
        crc.update(ph);
        if PageHeader::from_bytes(ph).flags & PAGE_HEADER_FLAG_SIZE != 0 {
            crc.update(&data[at + PAGE_HEADER_SIZE..at + PAGE_HEADER_SIZE + 4]);
        }
        crc.update(page);
        end = at + entry.size as usize;
    }
    crc.update(&data[end..data.len() - 8]);
    assert_eq!(
        CHECKSUM_FLAG | crc.finalize(),
        d.trailer.file_checksum.0,
        "file checksum recomputed from the format's definition"
    );
}

/// Writes `pages` under `header` with `encoding`; `post_apply` for files with checksums that
/// are not snapshots (a snapshot's is computed by the encoder).
pub fn encode(
    header: Header,
    encoding: PageEncoding,
    pages: &[(u32, Vec<u8>)],
    post_apply: Option<u64>,
) -> ltx::Result<(Vec<u8>, Trailer)> {
    let mut enc = Encoder::new(Vec::new(), header, EncoderOptions { encoding })?;
    for (pgno, page) in pages {
        enc.write_page(*pgno, page)?;
    }
    if let Some(c) = post_apply {
        enc.set_post_apply_checksum(ltx::Checksum(c));
    }
    enc.finish()
}

/// The database image a snapshot stands for: pages 1..=commit, the lock page zeroed.
pub fn snapshot_image(d: &Decoded) -> Vec<u8> {
    let size = d.header.page_size as usize;
    let mut image = vec![0u8; d.header.commit as usize * size];
    for (pgno, page) in &d.pages {
        let at = (*pgno as usize - 1) * size;
        image[at..at + size].copy_from_slice(page);
    }
    image
}
