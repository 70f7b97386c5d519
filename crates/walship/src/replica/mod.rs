//! A replica: the storage a database's LTX files are shipped to, and the client that reaches it.

pub mod client;
mod durable;
mod failure;
mod layout;
mod s3;
pub mod timestamp;
