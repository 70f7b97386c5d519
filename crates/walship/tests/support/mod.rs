//! Helpers shared by walship's integration tests.

pub mod faulty;
