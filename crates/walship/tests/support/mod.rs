//! Helpers shared by walship's integration tests; each test binary uses a part of them.
#![allow(dead_code)]

pub mod faulty;
pub mod http;
pub mod workload;
