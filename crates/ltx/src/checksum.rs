use crc_fast::{CrcAlgorithm, Digest};

/// Bit 63, set in every stored checksum so that a real checksum is never zero.
pub const CHECKSUM_FLAG: u64 = 1 << 63;

/// A running CRC-64 as Go's `hash/crc64` computes it with the ISO table, which the LTX format
/// uses for every checksum. It folds with carry-less multiplication where the CPU has it: a
/// table-driven CRC took half of a restore's CPU time, every byte of every file being hashed.
#[derive(Clone, Copy)]
pub(crate) struct Hasher(Digest);

pub(crate) fn hasher() -> Hasher {
    Hasher(Digest::new(CrcAlgorithm::Crc64GoIso))
}

impl Hasher {
    /// Hashes `data` after everything hashed so far.
    pub(crate) fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The CRC of everything hashed.
    pub(crate) fn finalize(&self) -> u64 {
        self.0.finalize()
    }
}

/// A checksum as stored in LTX headers and trailers: a CRC-64 with [`CHECKSUM_FLAG`] set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Checksum(pub u64);

impl Checksum {
    /// Whether this is a real checksum (bit 63 set) rather than zero or a malformed value.
    pub fn is_valid(self) -> bool {
        self.0 & CHECKSUM_FLAG != 0
    }

    pub(crate) fn from_crc(crc: u64) -> Checksum {
        Checksum(CHECKSUM_FLAG | crc)
    }
}

impl std::fmt::Display for Checksum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The checksum of one database page: CRC-64 of its big-endian page number and its bytes.
pub fn page_checksum(pgno: u32, data: &[u8]) -> Checksum {
    let mut h = hasher();
    h.update(&pgno.to_be_bytes());
    h.update(data);
    Checksum::from_crc(h.finalize())
}

/// The running checksum of a whole database: the XOR of its page checksums, lock page excluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatabaseChecksum(u64);

impl Default for DatabaseChecksum {
    fn default() -> Self {
        DatabaseChecksum(CHECKSUM_FLAG)
    }
}

impl DatabaseChecksum {
    /// Folds in one page's checksum.
    pub fn add(&mut self, page: Checksum) {
        self.0 = CHECKSUM_FLAG | (self.0 ^ page.0);
    }

    /// Replaces a page's old checksum with its new one.
    pub fn replace(&mut self, old: Checksum, new: Checksum) {
        self.0 = CHECKSUM_FLAG | (self.0 ^ old.0 ^ new.0);
    }

    /// The checksum as stored in a trailer.
    pub fn value(self) -> Checksum {
        Checksum(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_of_any_size_hash_as_their_concatenation() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 31 % 251) as u8).collect();
        let mut whole = hasher();
        whole.update(&data);
        for sizes in [
            &[1usize, 6, 4, 4096][..],
            &[255, 1, 256, 257, 3],
            &[300, 10, 700],
        ] {
            let mut h = hasher();
            let mut rest = &data[..];
            for &n in sizes.iter().cycle() {
                let (piece, tail) = rest.split_at(n.min(rest.len()));
                h.update(piece);
                rest = tail;
                if rest.is_empty() {
                    break;
                }
            }
            assert_eq!(h.finalize(), whole.finalize(), "pieces of {sizes:?}");
        }
    }

    #[test]
    fn crc64_go_iso_check_value() {
        let mut h = hasher();
        h.update(b"123456789");
        assert_eq!(h.finalize(), 0xB909_56C7_75A4_1001);
    }

    #[test]
    fn database_checksum_is_order_free_and_replaceable() {
        let a = page_checksum(1, &[1u8; 512]);
        let b = page_checksum(2, &[2u8; 512]);
        let b2 = page_checksum(2, &[3u8; 512]);
        let mut x = DatabaseChecksum::default();
        x.add(a);
        x.add(b);
        let mut y = DatabaseChecksum::default();
        y.add(b);
        y.add(a);
        assert_eq!(x, y);
        x.replace(b, b2);
        let mut z = DatabaseChecksum::default();
        z.add(a);
        z.add(b2);
        assert_eq!(x, z);
        assert!(x.value().is_valid());
    }
}
