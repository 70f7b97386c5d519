use std::io::{Read, Write};

use crate::{
    Decoder, Encoder, EncoderOptions, Error, Header, Result, Trailer, HEADER_FLAG_NO_CHECKSUM,
};

/// Options for [`compact`].
#[derive(Debug, Clone, Copy)]
pub struct CompactOptions {
    /// Header flags of the output; Litestream writes [`HEADER_FLAG_NO_CHECKSUM`].
    pub flags: u32,
    /// Page encoding of the output.
    pub encoding: crate::PageEncoding,
    /// Write a snapshot (TXIDs from 1): allowed when the first input holds the whole database,
    /// as a full capture does even when it does not start at TXID 1. The merge fails unless every
    /// page of the database is present.
    pub snapshot: bool,
}

impl Default for CompactOptions {
    fn default() -> Self {
        CompactOptions {
            flags: HEADER_FLAG_NO_CHECKSUM,
            encoding: crate::PageEncoding::Block,
            snapshot: false,
        }
    }
}

struct Input<R> {
    dec: Decoder<R>,
    page: Vec<u8>,
    /// Page number held in `page`, or `None` once the input is exhausted.
    pgno: Option<u32>,
}

impl<R: Read> Input<R> {
    fn advance(&mut self, i: usize) -> Result<()> {
        self.pgno = self.dec.read_page(&mut self.page).map_err(|e| wrap(i, e))?;
        Ok(())
    }
}

fn wrap(input: usize, e: Error) -> Error {
    Error::MergeInput {
        input,
        source: Box::new(e),
    }
}

/// Merges a contiguous run of LTX files, oldest first, into one, as Litestream's compactor does.
///
/// Each page comes from the newest input that holds it; pages beyond the last input's commit size
/// are dropped. The output spans the inputs' TXIDs and carries the last input's timestamp. Inputs
/// are streamed: memory holds one page per input. Every input's checksum is verified before the
/// output is finished, so a corrupt input never yields a complete output.
pub fn compact<R: Read, W: Write>(
    inputs: Vec<R>,
    w: W,
    opts: CompactOptions,
) -> Result<(W, Header, Trailer)> {
    if inputs.is_empty() {
        return Err(Error::InvalidInput(
            "nothing to compact: no input files".into(),
        ));
    }
    let mut ins = Vec::with_capacity(inputs.len());
    for (i, r) in inputs.into_iter().enumerate() {
        let dec = Decoder::new(r).map_err(|e| wrap(i, e))?;
        let page = vec![0u8; dec.header().page_size as usize];
        ins.push(Input {
            dec,
            page,
            pgno: None,
        });
    }
    for i in 1..ins.len() {
        let (prev, cur) = (ins[i - 1].dec.header(), ins[i].dec.header());
        // Saturating: a previous input ending at the largest TXID can have no successor, which the
        // second test says.
        if !(cur.min_txid.0 <= prev.max_txid.0.saturating_add(1) && cur.max_txid > prev.max_txid) {
            return Err(wrap(
                i,
                Error::InvalidInput(format!(
                    "TXIDs {}-{} do not continue the previous input's {}-{}",
                    cur.min_txid, cur.max_txid, prev.min_txid, prev.max_txid
                )),
            ));
        }
    }
    let first = *ins[0].dec.header();
    // A database whose page size changed (VACUUM after `PRAGMA page_size`, or a file replaced by
    // one with another page size) was captured whole at the change, so the inputs before that
    // one add nothing: they are verified, then left out. The output must then hold every page.
    let base = (1..ins.len())
        .rev()
        .find(|&i| ins[i - 1].dec.header().page_size != ins[i].dec.header().page_size)
        .unwrap_or(0);
    for (i, input) in ins.drain(..base).enumerate() {
        let mut dec = input.dec;
        let mut page = input.page;
        while dec.read_page(&mut page).map_err(|e| wrap(i, e))?.is_some() {}
        dec.finish().map_err(|e| wrap(i, e))?;
    }
    let page_size = ins[0].dec.header().page_size;
    let last = *ins[ins.len() - 1].dec.header();
    let min_txid = if opts.snapshot {
        crate::Txid(1)
    } else {
        first.min_txid
    };
    let mut header = Header::new(
        page_size,
        last.commit,
        min_txid,
        last.max_txid,
        last.timestamp,
    );
    header.flags = opts.flags;
    if !opts.snapshot {
        header.pre_apply_checksum = first.pre_apply_checksum;
    }
    let mut enc = Encoder::new(
        w,
        header,
        EncoderOptions {
            encoding: opts.encoding,
        },
    )?;

    for (i, input) in ins.iter_mut().enumerate() {
        input.advance(base + i)?;
    }
    let mut written = 0u32;
    while let Some(pgno) = ins.iter().filter_map(|x| x.pgno).min() {
        let newest = ins
            .iter()
            .rposition(|x| x.pgno == Some(pgno))
            .expect("min came from an input");
        if pgno <= header.commit {
            enc.write_page(pgno, &ins[newest].page)?;
            written += 1;
        }
        for (i, input) in ins.iter_mut().enumerate() {
            if input.pgno == Some(pgno) {
                input.advance(base + i)?;
            }
        }
    }

    let lock = header.lock_pgno();
    let expected = header.commit - u32::from(lock <= header.commit);
    if opts.snapshot && written != expected {
        return Err(Error::InvalidInput(format!(
            "cannot write a snapshot: the inputs hold {written} of the database's {expected} \
             pages; the first input must be a whole database"
        )));
    }
    if base > 0 && written != expected {
        return Err(wrap(
            base,
            Error::InvalidInput(format!(
                "the page size changes to {page_size} here, but the inputs from here hold only \
                 {written} of the database's {expected} pages"
            )),
        ));
    }
    let mut post_apply = None;
    for (i, input) in ins.into_iter().enumerate() {
        let (_, trailer) = input.dec.finish().map_err(|e| wrap(base + i, e))?;
        post_apply = Some(trailer.post_apply_checksum);
    }
    if !header.no_checksum() {
        enc.set_post_apply_checksum(post_apply.expect("at least one input"));
    }
    let (w, trailer) = enc.finish()?;
    Ok((w, header, trailer))
}
