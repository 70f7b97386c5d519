//! Encode and decode throughput of LTX files against raw LZ4 block compression (the ceiling).
//!
//! 100 MB of 4 KiB pages shaped like SQLite table pages: rows of text and numbers, some random
//! blob bytes, some free space. Each measurement runs a few rounds and keeps the best.

use std::hint::black_box;
use std::time::{Duration, Instant};

use ltx::{Decoder, Encoder, EncoderOptions, Header, PageEncoding, Txid};

const PAGE_SIZE: usize = 4096;
const TOTAL: usize = 100 * 1000 * 1000;
const ROUNDS: usize = 3;

fn pages() -> Vec<Vec<u8>> {
    let words = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
    ];
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    (0..TOTAL / PAGE_SIZE)
        .map(|_| {
            let mut page = Vec::with_capacity(PAGE_SIZE);
            page.extend_from_slice(&[0x0d, 0, 0, 0, 0, 0x10]);
            let fill = PAGE_SIZE * (50 + (next() % 50) as usize) / 100;
            while page.len() < fill {
                let r = next();
                page.extend_from_slice(&(r as u32).to_be_bytes());
                page.extend_from_slice(words[(r >> 32) as usize % words.len()].as_bytes());
                page.extend_from_slice(format!(" {} ", r % 100_000).as_bytes());
                if r % 5 == 0 {
                    page.extend((0..24).map(|_| next() as u8));
                }
            }
            page.resize(PAGE_SIZE, 0);
            page
        })
        .collect()
}

fn best(mut f: impl FnMut()) -> Duration {
    (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap()
}

fn mbps(d: Duration) -> f64 {
    TOTAL as f64 / 1e6 / d.as_secs_f64()
}

fn encode(pages: &[Vec<u8>], encoding: PageEncoding) -> Vec<u8> {
    let header = Header::new(PAGE_SIZE as u32, pages.len() as u32, Txid(1), Txid(1), 0);
    let mut enc = Encoder::new(
        Vec::with_capacity(TOTAL),
        header,
        EncoderOptions { encoding },
    )
    .unwrap();
    for (i, p) in pages.iter().enumerate() {
        enc.write_page(i as u32 + 1, p).unwrap();
    }
    enc.finish().unwrap().0
}

fn decode(file: &[u8]) {
    let mut dec = Decoder::new(file).unwrap();
    let mut page = vec![0u8; PAGE_SIZE];
    while dec.read_page(&mut page).unwrap().is_some() {
        black_box(&page);
    }
    dec.finish().unwrap();
}

fn main() {
    let pages = pages();
    let mut buf = vec![0u8; lz4_flex::block::get_maximum_output_size(PAGE_SIZE)];
    let compressed: Vec<Vec<u8>> = pages
        .iter()
        .map(|p| {
            let n = lz4_flex::block::compress_into(p, &mut buf).unwrap();
            buf[..n].to_vec()
        })
        .collect();
    let raw_size: usize = compressed.iter().map(Vec::len).sum();
    let lz4_compress = best(|| {
        for p in &pages {
            black_box(lz4_flex::block::compress_into(p, &mut buf).unwrap());
        }
    });
    let mut out = vec![0u8; PAGE_SIZE];
    let lz4_decompress = best(|| {
        for c in &compressed {
            black_box(lz4_flex::block::decompress_into(c, &mut out).unwrap());
        }
    });
    let crc = best(|| {
        for p in &pages {
            black_box(ltx::page_checksum(1, p));
        }
    });
    println!(
        "workload: {} pages of {PAGE_SIZE} B ({} MB), LZ4 ratio {:.2}",
        pages.len(),
        TOTAL / 1_000_000,
        TOTAL as f64 / raw_size as f64
    );
    println!("{:<34} {:>9} {:>12}", "", "MB/s", "of ceiling");
    println!(
        "{:<34} {:>9.0} {:>12}",
        "raw LZ4 block compress (ceiling)",
        mbps(lz4_compress),
        "1.00"
    );
    println!(
        "{:<34} {:>9.0} {:>12}",
        "raw LZ4 block decompress (ceiling)",
        mbps(lz4_decompress),
        "1.00"
    );
    println!(
        "{:<34} {:>9.0}",
        "CRC-64 of the pages (part of both)",
        mbps(crc)
    );
    for encoding in [PageEncoding::Block, PageEncoding::Frame] {
        let file = encode(&pages, encoding);
        let e = best(|| {
            black_box(encode(&pages, encoding));
        });
        let d = best(|| decode(&file));
        let name = format!("{encoding:?}").to_lowercase();
        println!(
            "{:<34} {:>9.0} {:>12.2}",
            format!("ltx encode ({name}, {:.1} MB)", file.len() as f64 / 1e6),
            mbps(e),
            lz4_compress.as_secs_f64() / e.as_secs_f64()
        );
        println!(
            "{:<34} {:>9.0} {:>12.2}",
            format!("ltx decode ({name})"),
            mbps(d),
            lz4_decompress.as_secs_f64() / d.as_secs_f64()
        );
    }
}
