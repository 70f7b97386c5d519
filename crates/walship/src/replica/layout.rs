//! Where LTX files live in a replica: Litestream 0.5's two key schemes (formats/litestream.md §2.1).

use ltx::Txid;
use object_store::path::Path;

/// How a backend names level directories, as Litestream 0.5 does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyScheme {
    /// S3 (and OSS): `<prefix>/<level %04x>/<min>-<max>.ltx`.
    S3,
    /// file and the other backends: `<prefix>/ltx/<level decimal>/<min>-<max>.ltx`.
    File,
}

/// The key scheme and the prefix under which one replica's LTX files live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    scheme: KeyScheme,
    prefix: Path,
}

/// Identifies one LTX file in a replica: its level and TXID range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LtxKey {
    /// The compaction level: 0 for raw L0 files, 9 for snapshots.
    pub level: u32,
    /// The first transaction the file covers.
    pub min_txid: Txid,
    /// The last transaction the file covers.
    pub max_txid: Txid,
}

impl LtxKey {
    /// The file covering `min_txid..=max_txid` at `level`.
    pub fn new(level: u32, min_txid: Txid, max_txid: Txid) -> Self {
        LtxKey {
            level,
            min_txid,
            max_txid,
        }
    }
}

impl Layout {
    /// A layout under `prefix` (slash-separated; leading and trailing slashes are ignored).
    ///
    /// Fails on prefixes no object store can hold: empty segments (`a//b`), `.` or `..`
    /// segments, or control characters.
    pub fn new(scheme: KeyScheme, prefix: &str) -> Result<Self, object_store::path::Error> {
        Ok(Layout {
            scheme,
            prefix: Path::parse(prefix)?,
        })
    }

    /// The key scheme.
    pub fn scheme(&self) -> KeyScheme {
        self.scheme
    }

    /// The prefix every key of this replica starts with.
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    /// The directory holding one level's files.
    pub fn level_dir(&self, level: u32) -> Path {
        match self.scheme {
            KeyScheme::S3 => self.prefix.clone().join(format!("{level:04x}")),
            KeyScheme::File => self.prefix.clone().join("ltx").join(level.to_string()),
        }
    }

    /// The full key of one LTX file.
    pub fn key(&self, key: LtxKey) -> Path {
        self.level_dir(key.level)
            .join(ltx::format_filename(key.min_txid, key.max_txid))
    }

    /// The LTX file a listed object at `level` is, or `None` for anything else in the directory.
    pub fn parse(&self, level: u32, location: &Path) -> Option<LtxKey> {
        let (min, max) = ltx::parse_filename(location.filename()?)?;
        Some(LtxKey::new(level, min, max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(level: u32) -> LtxKey {
        LtxKey::new(level, Txid(1), Txid(0x4d2))
    }

    #[test]
    fn s3_keys_use_four_hex_digit_levels() {
        let layout = Layout::new(KeyScheme::S3, "db").unwrap();
        assert_eq!(
            layout.key(key(0)).as_ref(),
            "db/0000/0000000000000001-00000000000004d2.ltx"
        );
        assert_eq!(
            layout.key(key(9)).as_ref(),
            "db/0009/0000000000000001-00000000000004d2.ltx"
        );
        assert_eq!(layout.level_dir(10).as_ref(), "db/000a");
    }

    #[test]
    fn file_keys_use_decimal_levels_under_ltx() {
        let layout = Layout::new(KeyScheme::File, "/srv/replica/").unwrap();
        assert_eq!(
            layout.key(key(9)).as_ref(),
            "srv/replica/ltx/9/0000000000000001-00000000000004d2.ltx"
        );
        assert_eq!(layout.level_dir(10).as_ref(), "srv/replica/ltx/10");
    }

    #[test]
    fn nested_and_empty_prefixes() {
        let nested = Layout::new(KeyScheme::S3, "team-a/db2.db").unwrap();
        assert_eq!(nested.level_dir(1).as_ref(), "team-a/db2.db/0001");
        let bare = Layout::new(KeyScheme::S3, "").unwrap();
        assert_eq!(bare.level_dir(0).as_ref(), "0000");
        assert!(Layout::new(KeyScheme::S3, "a//b").is_err());
        assert!(Layout::new(KeyScheme::S3, "a/../b").is_err());
    }

    #[test]
    fn only_ltx_names_parse() {
        let layout = Layout::new(KeyScheme::S3, "db").unwrap();
        let dir = layout.level_dir(3);
        let parse = |name: &str| layout.parse(3, &dir.clone().join(name));
        assert_eq!(
            parse("0000000000000002-0000000000000005.ltx"),
            Some(LtxKey::new(3, Txid(2), Txid(5)))
        );
        assert_eq!(parse("0000000000000002-0000000000000005.ltx.tmp"), None);
        assert_eq!(parse("notes.txt"), None);
    }
}
