//! Shared oracles for the fuzz targets: independent checks of what the LTX decoder accepts, a
//! reference WAL scanner written from SQLite's recovery rules, and a config writer for
//! round trips. Each target in `fuzz_targets/` feeds inputs through these.

pub mod config_yaml;
pub mod ltx_check;
pub mod wal_model;

use arbitrary::Arbitrary;

/// A page's content, cheap for the fuzzer to describe: a fill pattern, then literal bytes.
///
/// Constant fills compress to almost nothing, strided fills are periodic, and the literal bytes
/// make pages incompressible where the fuzzer wants them to be.
#[derive(Arbitrary, Debug, Clone)]
pub struct Content {
    pub fill: u8,
    pub stride: u8,
    pub bytes: Vec<u8>,
}

impl Content {
    /// The page of `size` bytes this content describes.
    pub fn page(&self, size: usize) -> Vec<u8> {
        let mut page: Vec<u8> = (0..size)
            .map(|i| self.fill.wrapping_add((i as u8).wrapping_mul(self.stride)))
            .collect();
        let n = self.bytes.len().min(size);
        page[..n].copy_from_slice(&self.bytes[..n]);
        page
    }
}
