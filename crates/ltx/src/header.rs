use crate::{is_valid_page_size, Checksum, Error, Result, Txid, MAGIC};

/// Size of the fixed header at the start of every LTX file.
pub const HEADER_SIZE: usize = 100;

/// Size of the trailer at the end of every LTX file.
pub const TRAILER_SIZE: usize = 16;

/// Header flag: the file carries no pre- and post-apply database checksums (Litestream 0.5 sets it).
pub const HEADER_FLAG_NO_CHECKSUM: u32 = 1 << 1;

const HEADER_FLAG_MASK: u32 = HEADER_FLAG_NO_CHECKSUM;

/// The 100-byte LTX header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub flags: u32,
    pub page_size: u32,
    /// Size of the database in pages after this file is applied.
    pub commit: u32,
    pub min_txid: Txid,
    pub max_txid: Txid,
    /// Creation time, in milliseconds since the Unix epoch.
    pub timestamp: i64,
    pub pre_apply_checksum: Checksum,
    /// Byte offset in the WAL where the captured frames start; 0 when not captured from a WAL.
    pub wal_offset: i64,
    pub wal_size: i64,
    pub wal_salt1: u32,
    pub wal_salt2: u32,
    pub node_id: u64,
}

impl Header {
    /// A header as Litestream 0.5 writes it: no checksums, no WAL position, no node.
    pub fn new(
        page_size: u32,
        commit: u32,
        min_txid: Txid,
        max_txid: Txid,
        timestamp: i64,
    ) -> Self {
        Header {
            flags: HEADER_FLAG_NO_CHECKSUM,
            page_size,
            commit,
            min_txid,
            max_txid,
            timestamp,
            pre_apply_checksum: Checksum(0),
            wal_offset: 0,
            wal_size: 0,
            wal_salt1: 0,
            wal_salt2: 0,
            node_id: 0,
        }
    }

    /// A snapshot holds every page of the database: it starts at TXID 1.
    pub fn is_snapshot(&self) -> bool {
        self.min_txid == Txid(1)
    }

    /// Whether the file omits database checksums.
    pub fn no_checksum(&self) -> bool {
        self.flags & HEADER_FLAG_NO_CHECKSUM != 0
    }

    /// The lock page for this file's page size.
    pub fn lock_pgno(&self) -> u32 {
        crate::lock_pgno(self.page_size)
    }

    /// The page a snapshot stores after `pgno`: the next one, skipping the lock page.
    pub fn next_page_after(&self, pgno: u32) -> u32 {
        let next = pgno + 1;
        if next == self.lock_pgno() {
            next + 1
        } else {
            next
        }
    }

    /// Serializes the header.
    pub fn to_bytes(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..4].copy_from_slice(MAGIC);
        b[4..8].copy_from_slice(&self.flags.to_be_bytes());
        b[8..12].copy_from_slice(&self.page_size.to_be_bytes());
        b[12..16].copy_from_slice(&self.commit.to_be_bytes());
        b[16..24].copy_from_slice(&self.min_txid.0.to_be_bytes());
        b[24..32].copy_from_slice(&self.max_txid.0.to_be_bytes());
        b[32..40].copy_from_slice(&self.timestamp.to_be_bytes());
        b[40..48].copy_from_slice(&self.pre_apply_checksum.0.to_be_bytes());
        b[48..56].copy_from_slice(&self.wal_offset.to_be_bytes());
        b[56..64].copy_from_slice(&self.wal_size.to_be_bytes());
        b[64..68].copy_from_slice(&self.wal_salt1.to_be_bytes());
        b[68..72].copy_from_slice(&self.wal_salt2.to_be_bytes());
        b[72..80].copy_from_slice(&self.node_id.to_be_bytes());
        b
    }

    /// Parses and validates a header; errors name the offending field and its offset.
    pub fn from_bytes(b: &[u8; HEADER_SIZE]) -> Result<Header> {
        if &b[0..4] != MAGIC {
            return Err(Error::corrupt(
                0,
                format!(
                    "bad magic {:02x?}, expected \"LTX1\": not an LTX file",
                    &b[0..4]
                ),
            ));
        }
        let u32_at = |o: usize| u32::from_be_bytes(b[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_be_bytes(b[o..o + 8].try_into().unwrap());
        let h = Header {
            flags: u32_at(4),
            page_size: u32_at(8),
            commit: u32_at(12),
            min_txid: Txid(u64_at(16)),
            max_txid: Txid(u64_at(24)),
            timestamp: u64_at(32) as i64,
            pre_apply_checksum: Checksum(u64_at(40)),
            wal_offset: u64_at(48) as i64,
            wal_size: u64_at(56) as i64,
            wal_salt1: u32_at(64),
            wal_salt2: u32_at(68),
            node_id: u64_at(72),
        };
        h.validate().map_err(|(offset, reason)| {
            Error::corrupt(offset, format!("invalid header: {reason}"))
        })?;
        Ok(h)
    }

    /// Checks the header rules of the LTX format, as Litestream's `Header.Validate` does.
    pub fn check(&self) -> Result<()> {
        self.validate()
            .map_err(|(_, reason)| Error::InvalidInput(format!("invalid header: {reason}")))
    }

    /// Returns the offset of the first bad field and what is wrong with it.
    fn validate(&self) -> std::result::Result<(), (u64, String)> {
        if self.flags & !HEADER_FLAG_MASK != 0 {
            return Err((4, format!("unknown flags 0x{:08x}", self.flags)));
        }
        if !is_valid_page_size(self.page_size) {
            return Err((
                8,
                format!(
                    "page size {} is not a power of two in 512..=65536",
                    self.page_size
                ),
            ));
        }
        if self.min_txid.0 == 0 {
            return Err((16, "minimum TXID is zero".into()));
        }
        if self.max_txid.0 == 0 {
            return Err((24, "maximum TXID is zero".into()));
        }
        if self.min_txid > self.max_txid {
            return Err((
                16,
                format!(
                    "TXIDs out of order: min {} > max {}",
                    self.min_txid, self.max_txid
                ),
            ));
        }
        if self.timestamp < 0 {
            return Err((32, format!("negative timestamp {}", self.timestamp)));
        }
        if self.wal_offset < 0 {
            return Err((48, format!("negative WAL offset {}", self.wal_offset)));
        }
        if self.wal_size < 0 {
            return Err((56, format!("negative WAL size {}", self.wal_size)));
        }
        if (self.wal_salt1 != 0 || self.wal_salt2 != 0) && self.wal_offset == 0 {
            return Err((64, "WAL salt set without a WAL offset".into()));
        }
        if self.wal_offset == 0 && self.wal_size != 0 {
            return Err((56, "WAL size set without a WAL offset".into()));
        }
        let pre = self.pre_apply_checksum;
        if self.is_snapshot() || self.no_checksum() {
            if pre.0 != 0 {
                let why = if self.is_snapshot() {
                    "a snapshot"
                } else {
                    "a file without checksums"
                };
                return Err((40, format!("pre-apply checksum {pre} set on {why}")));
            }
        } else if !pre.is_valid() {
            return Err((
                40,
                format!("pre-apply checksum {pre} missing or without its flag bit"),
            ));
        }
        Ok(())
    }
}

/// The 16-byte LTX trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Trailer {
    /// Checksum of the whole database after this file is applied; 0 without checksums.
    pub post_apply_checksum: Checksum,
    /// CRC-64 of the file's logical content (see the format notes, §1.6).
    pub file_checksum: Checksum,
}

impl Trailer {
    /// Serializes the trailer.
    pub fn to_bytes(&self) -> [u8; TRAILER_SIZE] {
        let mut b = [0u8; TRAILER_SIZE];
        b[0..8].copy_from_slice(&self.post_apply_checksum.0.to_be_bytes());
        b[8..16].copy_from_slice(&self.file_checksum.0.to_be_bytes());
        b
    }

    /// Parses a trailer without validating it.
    pub fn from_bytes(b: &[u8; TRAILER_SIZE]) -> Trailer {
        Trailer {
            post_apply_checksum: Checksum(u64::from_be_bytes(b[0..8].try_into().unwrap())),
            file_checksum: Checksum(u64::from_be_bytes(b[8..16].try_into().unwrap())),
        }
    }

    /// Checks the trailer against its header; returns the offset within the trailer and the fault.
    pub(crate) fn validate(&self, header: &Header) -> std::result::Result<(), (u64, String)> {
        let post = self.post_apply_checksum;
        if header.no_checksum() {
            if post.0 != 0 {
                return Err((
                    0,
                    format!("post-apply checksum {post} set on a file without checksums"),
                ));
            }
        } else if !post.is_valid() {
            return Err((
                0,
                format!("post-apply checksum {post} missing or without its flag bit"),
            ));
        }
        if !self.file_checksum.is_valid() {
            return Err((
                8,
                format!(
                    "file checksum {} missing or without its flag bit",
                    self.file_checksum
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header::new(4096, 10, Txid(3), Txid(5), 1_700_000_000_000)
    }

    #[test]
    fn round_trips() {
        let mut h = sample();
        h.wal_offset = 32;
        h.wal_size = 4152;
        h.wal_salt1 = 7;
        h.wal_salt2 = 9;
        assert_eq!(Header::from_bytes(&h.to_bytes()).unwrap(), h);
    }

    #[test]
    fn rejects_bad_fields_with_their_offsets() {
        type Mutation = Box<dyn Fn(&mut Header)>;
        let cases: Vec<(Mutation, u64)> = vec![
            (Box::new(|h| h.flags = 1), 4),
            (Box::new(|h| h.page_size = 1000), 8),
            (Box::new(|h| h.min_txid = Txid(0)), 16),
            (Box::new(|h| h.max_txid = Txid(0)), 24),
            (Box::new(|h| h.max_txid = Txid(2)), 16),
            (Box::new(|h| h.wal_size = 5), 56),
            (Box::new(|h| h.wal_salt1 = 5), 64),
            (Box::new(|h| h.pre_apply_checksum = Checksum(1 << 63)), 40),
        ];
        for (mutate, want) in cases {
            let mut h = sample();
            mutate(&mut h);
            match Header::from_bytes(&h.to_bytes()) {
                Err(Error::Corrupt { offset, .. }) => assert_eq!(offset, want, "{h:?}"),
                other => panic!("expected corrupt header for {h:?}, got {other:?}"),
            }
        }
    }

    #[test]
    fn rejects_foreign_magic() {
        let mut b = sample().to_bytes();
        b[0] = b'S';
        let err = Header::from_bytes(&b).unwrap_err().to_string();
        assert!(err.contains("not an LTX file"), "{err}");
    }
}
