use std::io::{ErrorKind, Read};

use crate::{Error, Result};

/// A reader that knows its offset in the file, so that every error can say where it happened.
pub(crate) struct Source<R> {
    inner: R,
    offset: u64,
}

impl<R: Read> Source<R> {
    pub(crate) fn new(inner: R, offset: u64) -> Self {
        Source { inner, offset }
    }

    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Fills `buf`, or fails with [`Error::Truncated`] naming `what` was being read.
    pub(crate) fn read_exact(&mut self, mut buf: &mut [u8], what: &'static str) -> Result<()> {
        while !buf.is_empty() {
            match self.inner.read(buf) {
                Ok(0) => {
                    return Err(Error::Truncated {
                        offset: self.offset,
                        what,
                    })
                }
                Ok(n) => {
                    self.offset += n as u64;
                    buf = &mut buf[n..];
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::Io(e)),
            }
        }
        Ok(())
    }

    /// Reads `N` bytes as an array.
    pub(crate) fn read_array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N]> {
        let mut b = [0u8; N];
        self.read_exact(&mut b, what)?;
        Ok(b)
    }

    /// Whether the input is exhausted; consumes a byte if it is not.
    pub(crate) fn at_eof(&mut self) -> Result<bool> {
        let mut b = [0u8; 1];
        loop {
            match self.inner.read(&mut b) {
                Ok(n) => return Ok(n == 0),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::Io(e)),
            }
        }
    }
}
