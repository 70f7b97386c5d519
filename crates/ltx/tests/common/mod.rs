//! Helpers shared by the ltx integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Read;

use ltx::{Decoder, Encoder, EncoderOptions, Header, PageEncoding, Trailer, Txid};

/// How a test page's bytes are made; real pages range from empty to incompressible.
#[derive(Debug, Clone, Copy)]
pub enum Fill {
    Zero,
    Random,
    Pattern,
    HalfRandom,
}

/// Deterministic page content from a seed (xorshift), so strategies stay small.
pub fn page_bytes(page_size: u32, fill: Fill, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let n = page_size as usize;
    match fill {
        Fill::Zero => vec![0; n],
        Fill::Random => (0..n).map(|_| next() as u8).collect(),
        Fill::Pattern => {
            let pat: Vec<u8> = (0..1 + next() % 13).map(|_| next() as u8).collect();
            (0..n).map(|i| pat[i % pat.len()]).collect()
        }
        Fill::HalfRandom => (0..n)
            .map(|i| if i < n / 2 { next() as u8 } else { 0 })
            .collect(),
    }
}

/// Encodes `pages` (ascending) with `header` and returns the file.
pub fn encode(
    header: Header,
    pages: &BTreeMap<u32, Vec<u8>>,
    encoding: PageEncoding,
) -> (Vec<u8>, Trailer) {
    let mut enc =
        Encoder::new(Vec::new(), header, EncoderOptions { encoding }).expect("valid header");
    for (pgno, data) in pages {
        enc.write_page(*pgno, data).expect("valid page");
    }
    enc.finish().expect("finish")
}

/// Decodes a whole file into its header, pages and trailer.
pub fn decode(r: impl Read) -> ltx::Result<(Header, BTreeMap<u32, Vec<u8>>, Trailer)> {
    let mut dec = Decoder::new(r)?;
    let mut pages = BTreeMap::new();
    let mut buf = vec![0u8; dec.header().page_size as usize];
    while let Some(pgno) = dec.read_page(&mut buf)? {
        pages.insert(pgno, buf.clone());
    }
    let (header, trailer) = dec.finish()?;
    Ok((header, pages, trailer))
}

/// A header for a test file.
pub fn header(page_size: u32, commit: u32, min: u64, max: u64) -> Header {
    Header::new(
        page_size,
        commit,
        Txid(min),
        Txid(max),
        1_700_000_000_000 + max as i64,
    )
}

/// A reader that hands out at most `chunk` bytes per call, as pipes and sockets do.
pub struct Chunky<'a> {
    pub data: &'a [u8],
    pub chunk: usize,
}

impl Read for Chunky<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.chunk).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}
