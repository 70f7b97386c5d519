use crate::Checksum;

/// Everything that can go wrong reading, writing or merging LTX files.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The underlying reader or writer failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),

    /// The file ended before a complete structure could be read.
    #[error("LTX file truncated at offset {offset}: expected {what}")]
    Truncated { offset: u64, what: &'static str },

    /// A structural rule of the format is broken at a known place in the file.
    #[error("corrupt LTX file at offset {offset}: {reason}")]
    Corrupt { offset: u64, reason: String },

    /// The file's content does not hash to the checksum in its trailer.
    #[error(
        "LTX file checksum mismatch: trailer (offset {offset}) records {recorded}, \
         content hashes to {computed}"
    )]
    ChecksumMismatch {
        offset: u64,
        recorded: Checksum,
        computed: Checksum,
    },

    /// A header would not be valid LTX, or pages were given in a way the format forbids.
    #[error("invalid LTX input: {0}")]
    InvalidInput(String),

    /// One input of a merge failed; `input` is its position in the list.
    #[error("merge input {input}: {source}")]
    MergeInput {
        input: usize,
        #[source]
        source: Box<Error>,
    },
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn corrupt(offset: u64, reason: impl Into<String>) -> Error {
        Error::Corrupt {
            offset,
            reason: reason.into(),
        }
    }
}
