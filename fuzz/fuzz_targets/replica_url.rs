//! Arbitrary text as the command line's `DB_PATH REPLICA_URL...` (one per line; a single line is
//! a replica URL for a fixed database). Never a panic; a config that parses keeps its invariants
//! and round-trips through a config file.

#![no_main]

use libfuzzer_sys::fuzz_target;
use walship::config::Config;
use walship_fuzz::config_yaml::{check_invariants, check_round_trip, env};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines: Vec<&str> = text.split('\n').take(5).collect();
    let (db, urls) = match lines.as_slice() {
        [url] => ("/data/app.db", vec![*url]),
        [db, urls @ ..] => (*db, urls.to_vec()),
        [] => return,
    };
    match Config::from_args(db, &urls, &env()) {
        Ok(config) => {
            assert_eq!(config.dbs.len(), 1);
            assert_eq!(config.dbs[0].replicas.len(), urls.len());
            check_invariants(&config);
            check_round_trip(&config);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
