//! A loopback TCP proxy for tests: it counts the HTTP/1.1 requests passing through it and injects
//! network faults on command.
//!
//! [`Proxy::start`] listens on `127.0.0.1:<free port>` and forwards every connection to one
//! upstream address, with two threads per connection (no async runtime). The client-to-upstream
//! direction goes through an HTTP/1.1 framing parser (request line, headers, `Content-Length`
//! and chunked bodies, trailers), so every request of a keep-alive connection is counted once,
//! whatever its body: an `aws-chunked` upload is framed by `Content-Length` or by HTTP chunking
//! like any other body. A request is counted when its head is forwarded upstream; one swallowed by
//! [`Fault::Blackhole`] never is.
//!
//! Faults switch at runtime with [`Proxy::set_fault`]; [`Fault::PassThrough`] recovers.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

/// What the proxy does to the traffic it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything as it comes.
    PassThrough,
    /// Forward everything, each chunk read (either direction) after this delay.
    Delay(Duration),
    /// Close the listening socket: new connections are refused (`ECONNREFUSED`); open ones go on.
    Refuse,
    /// Reset every open connection now (RST to both ends, by `SO_LINGER` 0), and every new one as
    /// soon as it is accepted.
    Reset,
    /// Silently drop traffic: open and new connections stay open but nothing passes either way,
    /// so clients wait for their own timeouts. Connections dropped this way stay dead after
    /// [`Fault::PassThrough`] (their streams lost bytes); new connections work again.
    Blackhole,
}

/// A request seen on its way upstream: its method and its path with the query string.
pub type Request = (String, String);

/// A counting, fault-injecting TCP proxy on 127.0.0.1; stopped (every connection closed) when
/// dropped.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    upstream: SocketAddr,
    requests: Mutex<Vec<Request>>,
    fault: Mutex<Fault>,
    conns: Mutex<Vec<Weak<Conn>>>,
    /// Whether the listening socket is open (it is closed while [`Fault::Refuse`] holds).
    listening: AtomicBool,
    stop: AtomicBool,
}

/// One proxied connection: both sockets (kept here so faults can act on them) and its fate.
struct Conn {
    client: TcpStream,
    upstream: Option<TcpStream>,
    /// Blackholed: read and discard, forward nothing.
    dropped: AtomicBool,
    /// Being reset: close without FIN so that `SO_LINGER` 0 sends RST.
    reset: AtomicBool,
}

impl Proxy {
    /// Starts a proxy to `upstream` on a free port of 127.0.0.1.
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy's port");
        let addr = listener.local_addr().expect("proxy address");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let shared = Arc::new(Shared {
            upstream,
            requests: Mutex::default(),
            fault: Mutex::new(Fault::PassThrough),
            conns: Mutex::default(),
            listening: AtomicBool::new(true),
            stop: AtomicBool::new(false),
        });
        let acceptor = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("proxy-accept-{}", addr.port()))
                .spawn(move || accept_loop(listener, addr, &shared))
                .expect("spawn the proxy's acceptor")
        };
        Proxy {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT`, for an endpoint setting.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The requests forwarded upstream since the start or the last [`Proxy::reset_counts`], in
    /// order: method and path with query.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Forgets the requests counted so far.
    pub fn reset_counts(&self) {
        self.shared.requests.lock().unwrap().clear();
    }

    /// The number of connections open through the proxy now.
    pub fn open_connections(&self) -> usize {
        self.shared.live().len()
    }

    /// The fault in force.
    pub fn fault(&self) -> Fault {
        self.shared.fault()
    }

    /// Switches to `fault` (or back to [`Fault::PassThrough`]); it applies at once to open
    /// connections as [`Fault`] describes, and on return the port refuses or accepts
    /// connections as the new fault says.
    pub fn set_fault(&self, fault: Fault) {
        *self.shared.fault.lock().unwrap() = fault;
        let listening = fault != Fault::Refuse;
        assert!(
            crate::wait_until(Duration::from_secs(10), || {
                self.shared.listening.load(Ordering::SeqCst) == listening
            }),
            "the proxy could not {} port {}",
            if listening { "listen on" } else { "close" },
            self.addr.port()
        );
        match fault {
            Fault::Reset => self.shared.live().iter().for_each(|c| c.reset_now()),
            Fault::Blackhole => self
                .shared
                .live()
                .iter()
                .for_each(|c| c.dropped.store(true, Ordering::SeqCst)),
            _ => {}
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for conn in self.shared.live() {
            conn.close();
        }
    }
}

impl Shared {
    fn fault(&self) -> Fault {
        *self.fault.lock().unwrap()
    }

    fn live(&self) -> Vec<Arc<Conn>> {
        self.conns
            .lock()
            .unwrap()
            .iter()
            .filter_map(Weak::upgrade)
            .collect()
    }

    fn register(&self, conn: &Arc<Conn>) {
        let mut conns = self.conns.lock().unwrap();
        conns.retain(|c| c.strong_count() > 0);
        conns.push(Arc::downgrade(conn));
    }
}

impl Conn {
    fn sockets(&self) -> impl Iterator<Item = &TcpStream> {
        std::iter::once(&self.client).chain(self.upstream.as_ref())
    }

    /// Resets both ends: no FIN, and RST when the last descriptor closes.
    fn reset_now(&self) {
        self.reset.store(true, Ordering::SeqCst);
        for s in self.sockets() {
            set_linger_zero(s);
            // Wakes the pumps blocked in read without sending anything; they exit and close.
            let _ = s.shutdown(Shutdown::Read);
        }
    }

    fn close(&self) {
        for s in self.sockets() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn accept_loop(listener: TcpListener, addr: SocketAddr, shared: &Arc<Shared>) {
    let mut listener = Some(listener);
    while !shared.stop.load(Ordering::SeqCst) {
        if shared.fault() == Fault::Refuse {
            // Closing the socket makes the kernel refuse connections to the port.
            listener = None;
            shared.listening.store(false, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        let Some(l) = &listener else {
            // Back from Refuse: take the same port again (SO_REUSEADDR is set by std).
            match TcpListener::bind(addr).and_then(|l| l.set_nonblocking(true).map(|()| l)) {
                Ok(l) => {
                    listener = Some(l);
                    shared.listening.store(true, Ordering::SeqCst);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
            continue;
        };
        match l.accept() {
            Ok((client, _)) => handle(client, shared),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

fn handle(client: TcpStream, shared: &Arc<Shared>) {
    let _ = client.set_nonblocking(false);
    let _ = client.set_nodelay(true);
    let fault = shared.fault();
    if fault == Fault::Reset {
        set_linger_zero(&client);
        return;
    }
    let upstream = if fault == Fault::Blackhole {
        None
    } else {
        match TcpStream::connect_timeout(&shared.upstream, Duration::from_secs(5)) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                Some(s)
            }
            // The upstream is down: the client sees its connection reset, as through a real
            // load balancer with no backend.
            Err(_) => {
                set_linger_zero(&client);
                return;
            }
        }
    };
    let conn = Arc::new(Conn {
        client,
        upstream,
        dropped: AtomicBool::new(fault == Fault::Blackhole),
        reset: AtomicBool::new(false),
    });
    shared.register(&conn);
    let clone = |s: &TcpStream| s.try_clone().ok();
    match &conn.upstream {
        None => {
            if let Some(from) = clone(&conn.client) {
                spawn_pump(from, None, conn.clone(), shared.clone(), true);
            }
        }
        Some(up) => match (
            clone(&conn.client),
            clone(up),
            clone(up),
            clone(&conn.client),
        ) {
            (Some(client_r), Some(up_w), Some(up_r), Some(client_w)) => {
                spawn_pump(client_r, Some(up_w), conn.clone(), shared.clone(), true);
                spawn_pump(up_r, Some(client_w), conn.clone(), shared.clone(), false);
            }
            _ => conn.close(),
        },
    }
}

fn spawn_pump(
    from: TcpStream,
    to: Option<TcpStream>,
    conn: Arc<Conn>,
    shared: Arc<Shared>,
    requests: bool,
) {
    let direction = if requests { "up" } else { "down" };
    let name = format!("proxy-{}-{direction}", shared.upstream.port());
    // Without a thread the connection's sockets close, which the client sees as a failure.
    let _ = std::thread::Builder::new()
        .name(name)
        .spawn(move || pump(from, to, &conn, &shared, requests));
}

/// Copies `from` to `to` until either ends, applying the faults in force; counts requests when
/// `requests` (the client-to-upstream direction).
fn pump(
    mut from: TcpStream,
    mut to: Option<TcpStream>,
    conn: &Conn,
    shared: &Shared,
    requests: bool,
) {
    let mut parser = requests.then(HttpFraming::default);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if conn.reset.load(Ordering::SeqCst) {
            break;
        }
        if let Fault::Delay(d) = shared.fault() {
            std::thread::sleep(d);
        }
        if conn.dropped.load(Ordering::SeqCst) {
            continue;
        }
        let Some(out) = to.as_mut() else { continue };
        if let Some(p) = parser.as_mut() {
            for request in p.feed(&buf[..n]) {
                shared.requests.lock().unwrap().push(request);
            }
        }
        if out.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    if conn.reset.load(Ordering::SeqCst) {
        return; // closing our descriptors (SO_LINGER 0) sends the RST
    }
    if conn.dropped.load(Ordering::SeqCst) {
        // A dead connection ends as a whole once either side gives up.
        conn.close();
    } else if let Some(out) = to {
        // Half-close: pass the end of this direction on, as TCP does.
        let _ = out.shutdown(Shutdown::Write);
    }
}

/// Sets `SO_LINGER` to 0 seconds, so closing the socket sends RST instead of FIN.
fn set_linger_zero(s: &TcpStream) {
    #[cfg(target_os = "linux")]
    {
        use std::ffi::{c_int, c_void};
        use std::os::fd::AsRawFd;
        #[repr(C)]
        struct Linger {
            l_onoff: c_int,
            l_linger: c_int,
        }
        extern "C" {
            fn setsockopt(
                fd: c_int,
                level: c_int,
                name: c_int,
                value: *const c_void,
                len: u32,
            ) -> c_int;
        }
        const SOL_SOCKET: c_int = 1;
        const SO_LINGER: c_int = 13;
        let linger = Linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: a valid socket descriptor and a correctly sized, live `struct linger`.
        unsafe {
            setsockopt(
                s.as_raw_fd(),
                SOL_SOCKET,
                SO_LINGER,
                (&linger as *const Linger).cast(),
                std::mem::size_of::<Linger>() as u32,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = s;
}

/// Where the parser is in the client's byte stream.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
enum State {
    /// Reading a request's head, up to the empty line.
    #[default]
    Head,
    /// Inside a `Content-Length` body: bytes left.
    Body(u64),
    /// Reading a chunk-size line.
    ChunkSize,
    /// Inside a chunk: bytes left.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// Trailer fields after the last chunk, up to the empty line.
    Trailers,
    /// Not HTTP/1.1 as this parser knows it: stop counting on this connection.
    Lost,
}

/// An incremental HTTP/1.1 request framing parser.
#[derive(Debug, Default)]
pub(crate) struct HttpFraming {
    state: State,
    line: Vec<u8>,
}

const MAX_HEAD: usize = 256 * 1024;

impl HttpFraming {
    /// Feeds bytes of the client's stream; returns the requests whose heads they completed.
    pub(crate) fn feed(&mut self, mut data: &[u8]) -> Vec<Request> {
        let mut out = Vec::new();
        while !data.is_empty() {
            match self.state {
                State::Lost => break,
                State::Body(left) | State::ChunkData(left) => {
                    let k = left.min(data.len() as u64);
                    data = &data[k as usize..];
                    let left = left - k;
                    self.state = match (self.state, left) {
                        (State::Body(_), 0) => State::Head,
                        (State::Body(_), _) => State::Body(left),
                        (_, 0) => State::ChunkEnd,
                        _ => State::ChunkData(left),
                    };
                }
                State::Head | State::Trailers => {
                    let (taken, done) = take_until(&mut self.line, data, b"\r\n\r\n");
                    data = &data[taken..];
                    // Empty lines between requests, and a trailer section with no fields.
                    if self.line == b"\r\n" {
                        self.line.clear();
                        if self.state == State::Trailers {
                            self.state = State::Head;
                        }
                        continue;
                    }
                    if self.line.len() > MAX_HEAD {
                        self.state = State::Lost;
                    }
                    if !done {
                        continue;
                    }
                    let head = std::mem::take(&mut self.line);
                    if self.state == State::Trailers {
                        self.state = State::Head;
                        continue;
                    }
                    match parse_head(&head) {
                        Some((request, next)) => {
                            out.push(request);
                            self.state = next;
                        }
                        None => self.state = State::Lost,
                    }
                }
                State::ChunkSize | State::ChunkEnd => {
                    let (taken, done) = take_until(&mut self.line, data, b"\r\n");
                    data = &data[taken..];
                    if self.line.len() > MAX_HEAD {
                        self.state = State::Lost;
                    }
                    if !done {
                        continue;
                    }
                    let line = std::mem::take(&mut self.line);
                    self.state = if self.state == State::ChunkEnd {
                        if line == b"\r\n" {
                            State::ChunkSize
                        } else {
                            State::Lost
                        }
                    } else {
                        let text = String::from_utf8_lossy(&line);
                        let size = text.trim_end().split(';').next().unwrap_or("").trim();
                        match u64::from_str_radix(size, 16) {
                            Ok(0) => State::Trailers,
                            Ok(n) => State::ChunkData(n),
                            Err(_) => State::Lost,
                        }
                    };
                }
            }
        }
        out
    }
}

/// Appends bytes of `data` to `line` up to and including the first `end` across both; returns
/// how many bytes of `data` it took and whether `line` now ends with `end`.
fn take_until(line: &mut Vec<u8>, data: &[u8], end: &[u8]) -> (usize, bool) {
    for (i, &b) in data.iter().enumerate() {
        line.push(b);
        if line.ends_with(end) || (line.as_slice() == b"\r\n" && end.len() > 2) {
            return (i + 1, true);
        }
    }
    (data.len(), false)
}

/// Parses a request head; returns the request and the body's framing state.
fn parse_head(head: &[u8]) -> Option<(Request, State)> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let mut parts = lines.next()?.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if method.is_empty() || !version.starts_with("HTTP/1.") {
        return None;
    }
    let mut chunked = false;
    let mut length = 0u64;
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"));
        } else if name.eq_ignore_ascii_case("content-length") {
            length = value.parse().ok()?;
        }
    }
    // Absolute form (`http://host/path`) names the same resource as origin form.
    let path = match target.split_once("://") {
        Some((_, rest)) => match rest.find('/') {
            Some(i) => &rest[i..],
            None => "/",
        },
        None => target,
    };
    let next = if chunked {
        State::ChunkSize
    } else if length > 0 {
        State::Body(length)
    } else {
        State::Head
    };
    Some(((method.to_string(), path.to_string()), next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{venv_bin, S3Server, S3_ACCESS_KEY_ID, S3_REGION, S3_SECRET_ACCESS_KEY};
    use std::process::Command;
    use std::time::Instant;

    fn req(method: &str, path: &str) -> Request {
        (method.to_string(), path.to_string())
    }

    /// Three keep-alive requests: a PUT with a Content-Length body holding what looks like a
    /// request, an aws-chunked upload in HTTP chunks with a trailer, and a bodiless GET.
    fn stream() -> Vec<u8> {
        let mut s = Vec::new();
        let body = b"GET /not-a-request HTTP/1.1\r\n\r\n0\r\n\r\n";
        s.extend_from_slice(
            format!(
                "PUT /bucket/a.ltx HTTP/1.1\r\nHost: x\r\ncontent-length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        s.extend_from_slice(body);
        s.extend_from_slice(
            b"PUT /bucket/b?x=1 HTTP/1.1\r\nHost: x\r\nContent-Encoding: aws-chunked\r\n\
              X-Amz-Decoded-Content-Length: 11\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        let aws = b"b;chunk-signature=00\r\nhello world\r\n0;chunk-signature=00\r\n\r\n";
        s.extend_from_slice(format!("{:x};ext=1\r\n", aws.len()).as_bytes());
        s.extend_from_slice(aws);
        s.extend_from_slice(b"\r\n3\r\nPUT\r\n0\r\nx-amz-checksum-crc32: AAAAAA==\r\n\r\n");
        s.extend_from_slice(
            b"\r\nGET http://127.0.0.1:9/bucket?list-type=2&prefix=p%2F HTTP/1.1\r\n\r\n",
        );
        s.extend_from_slice(b"HEAD /bucket/c HTTP/1.1\r\nHost: x\r\n\r\n");
        s
    }

    fn expected() -> Vec<Request> {
        vec![
            req("PUT", "/bucket/a.ltx"),
            req("PUT", "/bucket/b?x=1"),
            req("GET", "/bucket?list-type=2&prefix=p%2F"),
            req("HEAD", "/bucket/c"),
        ]
    }

    #[test]
    fn framing_counts_each_request_once_however_the_bytes_arrive() {
        let s = stream();
        for split in [1, 2, 3, 7, 64, s.len()] {
            let mut p = HttpFraming::default();
            let seen: Vec<Request> = s.chunks(split).flat_map(|c| p.feed(c)).collect();
            assert_eq!(seen, expected(), "split {split}");
            assert_eq!(p.state, State::Head, "split {split}");
        }
        let mut p = HttpFraming::default();
        assert!(p
            .feed(b"\x16\x03\x01 not http\r\n\r\nGET / HTTP/1.1\r\n\r\n")
            .is_empty());
        assert_eq!(p.state, State::Lost);
    }

    /// An upstream that swallows everything it is sent, recording the bytes.
    fn sink() -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let got: Arc<Mutex<Vec<u8>>> = Arc::default();
        let g = got.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let (mut s, g) = (s.unwrap(), g.clone());
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n @ 1..) = s.read(&mut buf) {
                        g.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                });
            }
        });
        (addr, got)
    }

    #[test]
    fn counts_keep_alive_requests_and_forwards_every_byte() {
        let (upstream, got) = sink();
        let proxy = Proxy::start(upstream);
        let s = stream();
        let mut c = TcpStream::connect(proxy.addr()).unwrap();
        for piece in s.chunks(5) {
            c.write_all(piece).unwrap();
        }
        assert!(crate::wait_until(Duration::from_secs(10), || {
            got.lock().unwrap().len() == s.len()
        }));
        assert_eq!(*got.lock().unwrap(), s);
        assert_eq!(proxy.requests(), expected());
        assert_eq!(proxy.open_connections(), 1);
        proxy.reset_counts();
        assert!(proxy.requests().is_empty());
        c.write_all(b"DELETE /bucket/a.ltx HTTP/1.1\r\n\r\n")
            .unwrap();
        assert!(crate::wait_until(Duration::from_secs(10), || {
            proxy.requests() == vec![req("DELETE", "/bucket/a.ltx")]
        }));
    }

    /// An upstream that echoes what it reads.
    fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let mut s = s.unwrap();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n @ 1..) = s.read(&mut buf) {
                        if s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    fn round_trip(c: &mut TcpStream) -> std::io::Result<()> {
        c.set_read_timeout(Some(Duration::from_millis(500)))?;
        c.write_all(b"ping")?;
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf)?;
        assert_eq!(&buf, b"ping");
        Ok(())
    }

    fn connect(proxy: &Proxy) -> TcpStream {
        TcpStream::connect(proxy.addr()).expect("connect through the proxy")
    }

    #[test]
    fn faults_break_connections_and_pass_through_recovers() {
        let proxy = Proxy::start(echo());
        let mut open = connect(&proxy);
        round_trip(&mut open).unwrap();

        proxy.set_fault(Fault::Delay(Duration::from_millis(150)));
        let t = Instant::now();
        round_trip(&mut open).unwrap();
        assert!(
            t.elapsed() >= Duration::from_millis(300),
            "{:?}",
            t.elapsed()
        );

        proxy.set_fault(Fault::Refuse);
        assert!(crate::wait_until(Duration::from_secs(5), || {
            TcpStream::connect(proxy.addr())
                .is_err_and(|e| e.kind() == ErrorKind::ConnectionRefused)
        }));
        round_trip(&mut open).expect("open connections survive Refuse");

        proxy.set_fault(Fault::Reset);
        let err = round_trip(&mut open).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
        assert_eq!(
            round_trip(&mut connect(&proxy)).unwrap_err().kind(),
            ErrorKind::ConnectionReset
        );

        proxy.set_fault(Fault::PassThrough);
        let mut open = connect(&proxy);
        round_trip(&mut open).unwrap();
        proxy.set_fault(Fault::Blackhole);
        let err = round_trip(&mut open).unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "{err}"
        );
        assert!(round_trip(&mut connect(&proxy)).is_err());

        proxy.set_fault(Fault::PassThrough);
        round_trip(&mut connect(&proxy)).expect("new connections work again");
        assert!(
            round_trip(&mut open).is_err(),
            "a dropped connection stays dead"
        );
    }

    /// Runs boto3 against `endpoint` with one attempt per call and short timeouts.
    fn boto3(endpoint: &str, body: &str) -> std::process::Output {
        let script = format!(
            "import boto3, botocore.config\n\
             cfg = botocore.config.Config(retries={{'max_attempts': 1, 'mode': 'standard'}},\n\
             \x20   connect_timeout=2, read_timeout=2, s3={{'addressing_style': 'path'}})\n\
             s3 = boto3.client('s3', endpoint_url={endpoint:?}, region_name={S3_REGION:?}, config=cfg,\n\
             \x20   aws_access_key_id={S3_ACCESS_KEY_ID:?}, aws_secret_access_key={S3_SECRET_ACCESS_KEY:?})\n\
             {body}\n"
        );
        Command::new(venv_bin("python"))
            .arg("-c")
            .arg(script)
            .output()
            .unwrap()
    }

    #[test]
    fn counts_boto3_against_moto_and_faults_fail_its_calls() {
        let s3 = S3Server::start();
        let upstream: SocketAddr = s3.endpoint()["http://".len()..].parse().unwrap();
        let proxy = Proxy::start(upstream);
        let ok = |body: &str| {
            let out = boto3(&proxy.endpoint(), body);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ok("s3.create_bucket(Bucket='bkt')\n\
            s3.put_object(Bucket='bkt', Key='small', Body=b'x' * 10)\n\
            s3.put_object(Bucket='bkt', Key='big', Body=b'y' * 3_000_000)\n\
            s3.head_object(Bucket='bkt', Key='small')\n\
            assert len(s3.get_object(Bucket='bkt', Key='big')['Body'].read()) == 3_000_000\n\
            s3.list_objects_v2(Bucket='bkt', Prefix='s')\n\
            s3.delete_object(Bucket='bkt', Key='small')");
        let seen = proxy.requests();
        let methods: Vec<(&str, &str)> = seen
            .iter()
            .map(|(m, p)| (m.as_str(), p.split('?').next().unwrap()))
            .collect();
        assert_eq!(
            methods,
            [
                ("PUT", "/bkt"),
                ("PUT", "/bkt/small"),
                ("PUT", "/bkt/big"),
                ("HEAD", "/bkt/small"),
                ("GET", "/bkt/big"),
                ("GET", "/bkt"),
                ("DELETE", "/bkt/small"),
            ],
            "{seen:?}"
        );
        assert!(seen[5].1.contains("list-type=2"), "{seen:?}");

        proxy.reset_counts();
        for fault in [Fault::Refuse, Fault::Reset, Fault::Blackhole] {
            proxy.set_fault(fault);
            let out = boto3(
                &proxy.endpoint(),
                "s3.put_object(Bucket='bkt', Key='k', Body=b'z')",
            );
            assert!(!out.status.success(), "{fault:?} let a PUT through");
        }
        assert!(proxy.requests().is_empty(), "{:?}", proxy.requests());
        proxy.set_fault(Fault::PassThrough);
        ok("s3.put_object(Bucket='bkt', Key='k', Body=b'z')");
        assert_eq!(proxy.requests(), vec![req("PUT", "/bkt/k")]);
    }
}
