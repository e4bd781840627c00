//! A TCP proxy between the sidecar's probe and one PostgreSQL server whose
//! behaviour can be switched while it runs, to play network faults that a
//! server process cannot:
//!
//! * [`Mode::Pass`]: bytes are forwarded both ways.
//! * [`Mode::BlackHole`]: a network black hole (a partition, a dropped
//!   route, a firewall that drops): new connects never complete and bytes on
//!   existing connections are no longer delivered in either direction. This
//!   differs from a frozen server (SIGSTOP), whose kernel still completes TCP
//!   handshakes into the listen backlog. How: the listener has a backlog of
//!   0 and the proxy stops calling `accept()` and fills the accept queue
//!   with one connection of its own, so the kernel drops every further SYN
//!   (the client's `connect` waits for SYN retransmits: 1 s, 3 s, ...).
//!   Held bytes are delivered when the black hole ends, as TCP would after a
//!   short partition.
//! * [`Mode::Reset`]: every connection is reset (RST), existing and new: a
//!   middlebox that kills sessions.
//!
//! Independently of the mode, [`Proxy::set_latency`] delays every chunk of
//! bytes by a fixed time in each direction (a far region: the round trip
//! grows by twice the latency), without limiting throughput: chunks are
//! timestamped when read and written once their time has come, so several
//! can be in flight at once.
//!
//! It runs on its own thread and runtime, so a test that blocks cannot stall
//! it, and it listens on `127.0.0.1:<random port>` only.

use std::collections::{HashSet, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socket2::{Domain, SockRef, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Pass,
    BlackHole,
    Reset,
}

/// State shared by the controlling side and the proxy's thread.
struct Inner {
    /// The acceptor is not calling `accept()` (black hole in force).
    parked: AtomicBool,
    /// Local addresses of the proxy's own queue fillers: dropped, not proxied,
    /// when the queue drains after a black hole.
    filler_addrs: Mutex<HashSet<SocketAddr>>,
    /// Client connections accepted and forwarded.
    accepted: AtomicUsize,
    /// Client connections accepted in any mode (forwarded or reset).
    attempts: AtomicUsize,
    /// Delay added to every chunk in each direction, in microseconds.
    latency_us: AtomicU64,
}

impl Inner {
    fn latency(&self) -> Duration {
        Duration::from_micros(self.latency_us.load(Ordering::SeqCst))
    }
}

pub struct Proxy {
    /// Where clients connect (127.0.0.1, random port).
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
    inner: Arc<Inner>,
    fillers: Mutex<Vec<std::net::TcpStream>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    /// Starts forwarding `127.0.0.1:<random port>` to `backend`, in [`Mode::Pass`].
    pub fn start(backend: SocketAddr) -> Proxy {
        let sock = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        sock.set_reuse_address(true).unwrap();
        sock.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .expect("bind 127.0.0.1:0");
        // Backlog 0: one queued connection fills the accept queue.
        sock.listen(0).unwrap();
        sock.set_nonblocking(true).unwrap();
        let listener: std::net::TcpListener = sock.into();
        let addr = listener.local_addr().unwrap();
        let (mode, mode_rx) = watch::channel(Mode::Pass);
        let inner = Arc::new(Inner {
            parked: AtomicBool::new(false),
            filler_addrs: Mutex::default(),
            accepted: AtomicUsize::new(0),
            attempts: AtomicUsize::new(0),
            latency_us: AtomicU64::new(0),
        });
        let shared = inner.clone();
        let thread = std::thread::Builder::new()
            .name(format!("proxy-{}", addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let listener = TcpListener::from_std(listener).unwrap();
                    accept_loop(listener, backend, mode_rx, shared).await;
                });
            })
            .unwrap();
        Proxy {
            addr,
            mode,
            inner,
            fillers: Mutex::default(),
            thread: Some(thread),
        }
    }

    /// [`Proxy::start`] with `latency` added in each direction (see
    /// [`Proxy::set_latency`]) from the first connection on.
    pub fn with_latency(backend: SocketAddr, latency: Duration) -> Proxy {
        let p = Proxy::start(backend);
        p.set_latency(latency);
        p
    }

    /// Delays every chunk of bytes read from then on by `latency` before it
    /// is passed on, in each direction, on new and existing connections: a
    /// request/response exchange through the proxy takes `2 * latency` more.
    /// `Duration::ZERO` ends the delay.
    pub fn set_latency(&self, latency: Duration) {
        self.inner
            .latency_us
            .store(latency.as_micros().try_into().unwrap_or(u64::MAX), Ordering::SeqCst);
    }

    /// Client connections accepted and forwarded so far.
    pub fn accepted(&self) -> usize {
        self.inner.accepted.load(Ordering::SeqCst)
    }

    /// Client connections accepted so far in any mode (forwarded or reset):
    /// the connection attempts that reached the proxy.
    pub fn attempts(&self) -> usize {
        self.inner.attempts.load(Ordering::SeqCst)
    }

    /// Switches the mode; returns once it is in force (for a black hole:
    /// once the accept queue is full, so the next connect will hang).
    pub fn set_mode(&self, mode: Mode) {
        let old = self.mode.send_replace(mode);
        if old == Mode::BlackHole && mode != Mode::BlackHole {
            // Close our fillers; the acceptor drops them when it drains the queue.
            self.fillers.lock().unwrap().clear();
        }
        if mode == Mode::BlackHole && old != Mode::BlackHole {
            self.fill_accept_queue();
        }
    }

    fn fill_accept_queue(&self) {
        let start = Instant::now();
        while !self.inner.parked.load(Ordering::SeqCst) {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "proxy acceptor did not stop accepting"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut fillers = self.fillers.lock().unwrap();
        for _ in 0..16 {
            match std::net::TcpStream::connect_timeout(&self.addr, Duration::from_millis(100)) {
                Ok(s) => {
                    self.inner.filler_addrs.lock().unwrap().insert(s.local_addr().unwrap());
                    fillers.push(s);
                }
                // The kernel dropped our SYN: the queue is full.
                Err(e) if matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock) => return,
                Err(e) => panic!("filling the proxy's accept queue: {e}"),
            }
        }
        panic!("the proxy's accept queue did not fill up after 16 connections");
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Closing the mode channel ends the acceptor; dropping the runtime
        // ends every connection.
        let (dead, _) = watch::channel(Mode::Reset);
        drop(std::mem::replace(&mut self.mode, dead));
        self.fillers.lock().unwrap().clear();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop(listener: TcpListener, backend: SocketAddr, mut mode: watch::Receiver<Mode>, inner: Arc<Inner>) {
    loop {
        let current = *mode.borrow_and_update();
        if current == Mode::BlackHole {
            inner.parked.store(true, Ordering::SeqCst);
            if mode.changed().await.is_err() {
                return;
            }
            continue;
        }
        inner.parked.store(false, Ordering::SeqCst);
        tokio::select! {
            biased;
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            r = listener.accept() => {
                let Ok((sock, peer)) = r else { continue };
                if inner.filler_addrs.lock().unwrap().remove(&peer) {
                    continue;
                }
                inner.attempts.fetch_add(1, Ordering::SeqCst);
                if current == Mode::Reset {
                    reset(&sock);
                    continue;
                }
                inner.accepted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(forward(sock, backend, mode.clone(), inner.clone()));
            }
        }
    }
}

/// Makes dropping `sock` send RST instead of FIN.
fn reset(sock: &TcpStream) {
    let _ = SockRef::from(sock).set_linger(Some(Duration::ZERO));
}

async fn forward(mut client: TcpStream, backend: SocketAddr, mode: watch::Receiver<Mode>, inner: Arc<Inner>) {
    let Ok(mut server) = TcpStream::connect(backend).await else {
        reset(&client);
        return;
    };
    let mut watch_reset = mode.clone();
    let was_reset = {
        let (mut cr, mut cw) = client.split();
        let (mut sr, mut sw) = server.split();
        let up = pump(&mut cr, &mut sw, mode.clone(), &inner);
        let down = pump(&mut sr, &mut cw, mode.clone(), &inner);
        tokio::pin!(up, down);
        let (mut up_done, mut down_done) = (false, false);
        loop {
            tokio::select! {
                r = &mut up, if !up_done => match r { Ok(()) => up_done = true, Err(_) => break false },
                r = &mut down, if !down_done => match r { Ok(()) => down_done = true, Err(_) => break false },
                r = watch_reset.wait_for(|m| *m == Mode::Reset) => break r.is_ok(),
            }
            if up_done && down_done {
                break false;
            }
        }
    };
    if was_reset {
        reset(&client);
        reset(&server);
    }
}

/// Copies `from` to `to` while the mode lets bytes through, each chunk
/// after the proxy's latency (none by default); EOF is passed on as a
/// half-close (after the bytes before it). Bytes read just as a black hole
/// began are held until it ends.
async fn pump(
    from: &mut tokio::net::tcp::ReadHalf<'_>,
    to: &mut tokio::net::tcp::WriteHalf<'_>,
    mut mode: watch::Receiver<Mode>,
    inner: &Inner,
) -> io::Result<()> {
    let closed = || io::Error::other("proxy stopped");
    let mut buf = vec![0u8; 16 * 1024];
    // Chunks read and not yet written, with the time each is due; EOF read.
    let mut due: VecDeque<(tokio::time::Instant, Vec<u8>)> = VecDeque::new();
    let mut eof = false;
    loop {
        if eof && due.is_empty() {
            to.shutdown().await?;
            return Ok(());
        }
        let held = *mode.borrow_and_update() == Mode::BlackHole;
        let next = due.front().map(|(t, _)| *t);
        tokio::select! {
            r = mode.changed() => r.map_err(|_| closed())?,
            r = from.read(&mut buf), if !eof && !held => {
                let n = r?;
                if n == 0 {
                    eof = true;
                } else {
                    due.push_back((tokio::time::Instant::now() + inner.latency(), buf[..n].to_vec()));
                }
            }
            () = tokio::time::sleep_until(next.unwrap_or_else(tokio::time::Instant::now)), if next.is_some() && !held => {
                let (_, chunk) = due.pop_front().expect("a due chunk");
                to.write_all(&chunk).await?;
            }
        }
    }
}
