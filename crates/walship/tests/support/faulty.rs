//! An object store that fails chosen operations on command, in the style of object_store's
//! `ThrottledStore`: it wraps another store and forwards every call it is not told to fail.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result, UploadPart,
};

/// The operations faults can be injected into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// PUTs, copies, renames, and each step of a multipart upload (start, every part, finish).
    Put,
    /// GETs and HEADs.
    Get,
    /// Listings.
    List,
    /// Deletes, counted per object.
    Delete,
}

/// How a failing operation fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// A plain store error, like a 500 that outlasted the retries.
    Generic,
    /// The credentials are refused (HTTP 403).
    PermissionDenied,
    /// The endpoint refuses connections.
    ConnectionRefused,
}

/// A store wrapper that fails chosen operations until [`FaultyStore::reset`].
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    faults: Faults,
}

impl FaultyStore {
    /// Wraps `inner`; nothing fails until told to.
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        FaultyStore {
            inner,
            faults: Faults::default(),
        }
    }

    /// Makes every call of `op` fail with `fault`.
    pub fn fail(&self, op: Op, fault: Fault) {
        self.fail_after(op, fault, 0);
    }

    /// Lets `pass` more calls of `op` through, then fails every later one with `fault`.
    pub fn fail_after(&self, op: Op, fault: Fault, pass: usize) {
        self.faults.state().rules.insert(op, Rule { fault, pass });
    }

    /// Runs `action` once, just before the next call of `op` goes on: what another process
    /// does between two requests (a replicator's retention deleting files under a restore).
    pub fn before_next(&self, op: Op, action: impl FnOnce() + Send + 'static) {
        self.faults.state().before.insert(op, Box::new(action));
    }

    /// Stops failing anything.
    pub fn reset(&self) {
        self.faults.state().rules.clear();
    }

    /// Holds every upload to a location containing `part` (a PUT, or the start of a multipart
    /// upload) until released, like a link that takes minutes per file.
    pub fn hold_uploads(&self, part: &str) {
        self.faults.state().hold.push(part.to_string());
    }

    /// Lets the uploads held for `part` go on.
    pub fn release_uploads(&self, part: &str) {
        self.faults.state().hold.retain(|p| p != part);
    }

    /// Lets every held upload go on.
    pub fn release(&self) {
        self.faults.state().hold.clear();
    }

    /// How many uploads are held now.
    pub fn held(&self) -> usize {
        self.faults.state().held
    }

    /// How many calls of `op` were made, failed ones included.
    pub fn calls(&self, op: Op) -> usize {
        self.faults.state().calls.get(&op).copied().unwrap_or(0)
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

#[derive(Debug, Clone, Copy)]
struct Rule {
    fault: Fault,
    /// Calls still let through before the fault applies.
    pass: usize,
}

#[derive(Default)]
struct State {
    rules: HashMap<Op, Rule>,
    /// Run once before the next call of the op.
    before: HashMap<Op, Box<dyn FnOnce() + Send>>,
    calls: HashMap<Op, usize>,
    /// Uploads to locations containing any of these wait.
    hold: Vec<String>,
    held: usize,
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("State")
            .field("rules", &self.rules)
            .field("before", &self.before.keys().collect::<Vec<_>>())
            .field("calls", &self.calls)
            .field("hold", &self.hold)
            .field("held", &self.held)
            .finish()
    }
}

/// The rules, shared with the multipart uploads a store hands out.
#[derive(Debug, Default, Clone)]
struct Faults(Arc<Mutex<State>>);

impl Faults {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().expect("fault state lock")
    }

    /// Counts a call of `op` and fails it if a rule says so.
    fn check(&self, op: Op, location: &str) -> Result<()> {
        let before = self.state().before.remove(&op);
        if let Some(action) = before {
            action();
        }
        let mut state = self.state();
        *state.calls.entry(op).or_default() += 1;
        match state.rules.get_mut(&op) {
            Some(rule) if rule.pass > 0 => {
                rule.pass -= 1;
                Ok(())
            }
            Some(rule) => Err(injected(op, rule.fault, location)),
            None => Ok(()),
        }
    }

    /// Waits while uploads to `location` are held.
    async fn wait_if_held(&self, location: &str) {
        let is_held = |state: &State| state.hold.iter().any(|p| location.contains(p.as_str()));
        if !is_held(&self.state()) {
            return;
        }
        self.state().held += 1;
        while is_held(&self.state()) {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        self.state().held -= 1;
    }
}

fn injected(op: Op, fault: Fault, location: &str) -> object_store::Error {
    let what = format!("injected {op:?} failure at {location}");
    match fault {
        Fault::Generic => object_store::Error::Generic {
            store: "FaultyStore",
            source: what.into(),
        },
        Fault::PermissionDenied => object_store::Error::PermissionDenied {
            path: location.into(),
            source: what.into(),
        },
        Fault::ConnectionRefused => object_store::Error::Generic {
            store: "FaultyStore",
            source: Box::new(io::Error::new(io::ErrorKind::ConnectionRefused, what)),
        },
    }
}

fn prefix_name(prefix: Option<&Path>) -> &str {
    prefix.map_or("", |p| p.as_ref())
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.faults.check(Op::Put, location.as_ref())?;
        self.faults.wait_if_held(location.as_ref()).await;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.faults.check(Op::Put, location.as_ref())?;
        self.faults.wait_if_held(location.as_ref()).await;
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(FaultyUpload {
            inner,
            faults: self.faults.clone(),
            location: location.to_string(),
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.faults.check(Op::Get, location.as_ref())?;
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.faults.check(Op::Get, location.as_ref())?;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let faults = self.faults.clone();
        let checked = locations.map(move |location| {
            let location = location?;
            faults.check(Op::Delete, location.as_ref())?;
            Ok(location)
        });
        self.inner.delete_stream(checked.boxed())
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        match self.faults.check(Op::List, prefix_name(prefix)) {
            Ok(()) => self.inner.list(prefix),
            Err(e) => stream::once(async { Err(e) }).boxed(),
        }
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        match self.faults.check(Op::List, prefix_name(prefix)) {
            Ok(()) => self.inner.list_with_offset(prefix, offset),
            Err(e) => stream::once(async { Err(e) }).boxed(),
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.faults.check(Op::List, prefix_name(prefix))?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.faults.check(Op::Put, to.as_ref())?;
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.faults.check(Op::Put, to.as_ref())?;
        self.inner.rename_opts(from, to, options).await
    }
}

/// A multipart upload whose parts and completion obey the store's `Put` rule.
#[derive(Debug)]
struct FaultyUpload {
    inner: Box<dyn MultipartUpload>,
    faults: Faults,
    location: String,
}

#[async_trait]
impl MultipartUpload for FaultyUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        match self.faults.check(Op::Put, &self.location) {
            Ok(()) => self.inner.put_part(data),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }

    async fn complete(&mut self) -> Result<PutResult> {
        self.faults.check(Op::Put, &self.location)?;
        self.inner.complete().await
    }

    async fn abort(&mut self) -> Result<()> {
        self.inner.abort().await
    }
}
