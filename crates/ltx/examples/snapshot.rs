//! Writes a SQLite database file as a level-9 snapshot into a Litestream 0.5 file replica.
//!
//! Usage: `snapshot DB REPLICA_DIR [TXID_HEX] [block|frame]`. The database must not change while
//! it is read (the demo copies a closed file).

use std::fs::File;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use ltx::database::encode_snapshot;
use ltx::{format_filename, EncoderOptions, PageEncoding, Txid};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [db, replica, rest @ ..] = args.as_slice() else {
        return Err("usage: snapshot DB REPLICA_DIR [TXID_HEX] [block|frame]".into());
    };
    let txid = match rest.first() {
        Some(s) => Txid(u64::from_str_radix(s, 16)?),
        None => Txid(1),
    };
    let encoding = match rest.get(1).map(String::as_str) {
        None | Some("block") => PageEncoding::Block,
        Some("frame") => PageEncoding::Frame,
        Some(other) => {
            return Err(format!("unknown page encoding {other:?}: use block or frame").into())
        }
    };
    let dir = PathBuf::from(replica).join("ltx").join("9");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format_filename(Txid(1), txid));
    let tmp = path.with_extension("ltx.tmp");
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
    let (file, header, _) = encode_snapshot(
        File::open(db)?,
        File::create(&tmp)?,
        txid,
        now,
        EncoderOptions { encoding },
    )?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    println!(
        "wrote {} ({} pages of {} bytes, {} bytes on disk)",
        path.display(),
        header.commit,
        header.page_size,
        std::fs::metadata(&path)?.len()
    );
    Ok(())
}
