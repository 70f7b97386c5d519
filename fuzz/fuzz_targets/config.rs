//! Arbitrary text as a config file. Parse errors must be errors, never panics, and must say
//! something; a config that parses keeps its invariants, and written back out with every
//! setting explicit it parses to the same config. `$VAR` expansion must match Go's
//! `os.Expand`: parsing with expansion equals parsing the Go-expanded text without it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use walship::config::{Config, ParseOptions};
use walship_fuzz::config_yaml::{check_invariants, check_round_trip, env, go_expand};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = env();
    let parsed = Config::parse(text, &env, ParseOptions::default());
    let expanded = go_expand(text, &env);
    let literal = ParseOptions {
        no_expand_env: true,
    };
    let pre_expanded = Config::parse(&expanded, &env, literal);
    match (&parsed, &pre_expanded) {
        (Ok(a), Ok(b)) => assert_eq!(a.config, b.config),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        (a, b) => panic!(
            "expansion differs from Go's os.Expand: {:?} vs {:?}",
            a.as_ref().map(|p| &p.config).map_err(|e| e.to_string()),
            b.as_ref().map(|p| &p.config).map_err(|e| e.to_string())
        ),
    }
    match parsed {
        Ok(p) => {
            check_invariants(&p.config);
            check_round_trip(&p.config);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    // Unexpanded, the text parses or fails without panicking too.
    if let Ok(p) = Config::parse(text, &env, literal) {
        check_invariants(&p.config);
    }
});
