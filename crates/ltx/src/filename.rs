use crate::Txid;

/// The name of an LTX file covering `min..=max`: `<min %016x>-<max %016x>.ltx`.
pub fn format_filename(min: Txid, max: Txid) -> String {
    format!("{min}-{max}.ltx")
}

/// Parses an LTX file name; anything else (other files in a replica) gives `None`.
pub fn parse_filename(name: &str) -> Option<(Txid, Txid)> {
    let stem = name.strip_suffix(".ltx")?;
    let (min, max) = stem.split_once('-')?;
    let lower = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !lower(min) || !lower(max) {
        return None;
    }
    Some((Txid::parse(min)?, Txid::parse(max)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_strangers_are_ignored() {
        let name = format_filename(Txid(1), Txid(0x4d2));
        assert_eq!(name, "0000000000000001-00000000000004d2.ltx");
        assert_eq!(parse_filename(&name), Some((Txid(1), Txid(0x4d2))));
        for bad in [
            "0000000000000001-00000000000004D2.ltx",
            "0000000000000001-00000000000004d2.ltx.tmp",
            "000000000000001-00000000000004d2.ltx",
            "x000000000000001-00000000000004d2.ltx",
            "0000000000000001_00000000000004d2.ltx",
        ] {
            assert_eq!(parse_filename(bad), None, "{bad}");
        }
    }
}
