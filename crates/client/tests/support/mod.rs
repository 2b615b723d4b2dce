//! A real tallyd (embedded store, started in-process by tally-e2e) behind
//! a TCP proxy the tests control: it can make Tally unreachable, follow
//! the server to a new port after a restart, and lose one answer after
//! the server has acted on it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use tally_client::{ClientConfig, RetryPolicy, TallyClient, v1};
use tally_e2e::{BucketKind, Options, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

pub const ACCOUNT: &str = "acme";
pub const GRANTED: i64 = 10_000;

pub struct Proxy {
    pub addr: SocketAddr,
    upstream: Arc<watch::Sender<Option<SocketAddr>>>,
    lose_next: Arc<AtomicBool>,
    lost: Arc<AtomicUsize>,
    gate: Arc<Gate>,
}

/// Lets a test look at the server between an answer being lost and its
/// connection being cut.
#[derive(Default)]
struct Gate {
    hold: AtomicBool,
    lost: Notify,
    cut: Notify,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let addr = listener.local_addr().expect("proxy addr");
        let (tx, rx) = watch::channel(Some(upstream));
        let lose_next = Arc::new(AtomicBool::new(false));
        let lost = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(Gate::default());
        let (lose, count, gates) = (lose_next.clone(), lost.clone(), gate.clone());
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let mut rx = rx.clone();
                let target = *rx.borrow_and_update();
                let (lose, count, gate) = (lose.clone(), count.clone(), gates.clone());
                tokio::spawn(async move {
                    // No upstream: the connection closes at once.
                    let Some(target) = target else { return };
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = pump(client, server, lose, count, gate) => {}
                        // Any change of upstream cuts every connection.
                        _ = rx.changed() => {}
                    }
                });
            }
        });
        Proxy {
            addr,
            upstream: Arc::new(tx),
            lose_next,
            lost,
            gate,
        }
    }

    /// Tally unreachable (`None`), or reachable at `addr`.
    pub fn set_upstream(&self, addr: Option<SocketAddr>) {
        self.upstream.send_replace(addr);
    }

    /// A handle that can move the upstream from another task.
    pub fn cutter(&self) -> Cutter {
        Cutter(self.upstream.clone())
    }

    /// The next bytes the server sends are dropped, and their connection
    /// is cut: the server has acted, the client never hears of it.
    pub fn lose_next_answer(&self) {
        self.lose_next.store(true, Ordering::SeqCst);
    }

    /// Like [`Proxy::lose_next_answer`], but the connection stays open
    /// (and silent) until [`Proxy::cut`].
    pub fn lose_next_answer_and_hold(&self) {
        self.gate.hold.store(true, Ordering::SeqCst);
        self.lose_next_answer();
    }

    /// Resolves once an answer was lost.
    pub async fn answer_lost(&self) {
        self.gate.lost.notified().await;
    }

    /// Cuts the connection whose answer was lost and held.
    pub fn cut(&self) {
        self.gate.hold.store(false, Ordering::SeqCst);
        self.gate.cut.notify_one();
    }

    pub fn answers_lost(&self) -> usize {
        self.lost.load(Ordering::SeqCst)
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Moves a proxy's upstream from another task.
pub struct Cutter(Arc<watch::Sender<Option<SocketAddr>>>);

impl Cutter {
    pub fn set_upstream(&self, addr: Option<SocketAddr>) {
        self.0.send_replace(addr);
    }
}

async fn pump(
    client: TcpStream,
    server: TcpStream,
    lose: Arc<AtomicBool>,
    lost: Arc<AtomicUsize>,
    gate: Arc<Gate>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = async {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    };
    let downstream = async {
        let mut buf = vec![0u8; 64 * 1024];
        let mut frames = Frames::default();
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            // Only an answer is lost: a chunk with a HEADERS frame on a
            // stream (settings, pings and window updates pass).
            let answers = frames.saw_headers(&buf[..n]);
            if answers && lose.swap(false, Ordering::SeqCst) {
                lost.fetch_add(1, Ordering::SeqCst);
                gate.lost.notify_one();
                if gate.hold.load(Ordering::SeqCst) {
                    gate.cut.notified().await;
                }
                return;
            }
            if client_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
    }
}

/// Follows HTTP/2 frame boundaries across reads (the server sends no
/// preface: its bytes are frames from the first).
#[derive(Default)]
struct Frames {
    /// Payload bytes of the current frame still to come.
    payload_left: usize,
    /// The part of a frame header read so far.
    header: Vec<u8>,
}

impl Frames {
    /// Whether `bytes` start a HEADERS frame on a stream (an answer).
    fn saw_headers(&mut self, mut bytes: &[u8]) -> bool {
        let mut seen = false;
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let skip = self.payload_left.min(bytes.len());
                self.payload_left -= skip;
                bytes = &bytes[skip..];
                continue;
            }
            let take = (9 - self.header.len()).min(bytes.len());
            self.header.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.header.len() == 9 {
                let h = &self.header;
                let length = (h[0] as usize) << 16 | (h[1] as usize) << 8 | h[2] as usize;
                let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                seen |= h[3] == 0x1 && stream != 0;
                self.payload_left = length;
                self.header.clear();
            }
        }
        seen
    }
}

/// A server whose clock is now (usage records carry the real time), an
/// account with [`GRANTED`] mc, and a proxy in front.
pub async fn server() -> (TestServer, Proxy) {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let server = TestServer::start_with(Options {
        start: tally_core::Timestamp::from_millis(now),
        ..Options::default()
    })
    .await;
    let mut accounts = server.accounts().await;
    tally_e2e::open(&mut accounts, ACCOUNT).await;
    tally_e2e::grant(&mut accounts, ACCOUNT, "plan", BucketKind::Monthly, GRANTED).await;
    let proxy = Proxy::start(server.addr).await;
    (server, proxy)
}

/// Short deadlines and waits, so an unreachable Tally is found quickly.
pub fn config() -> ClientConfig {
    ClientConfig {
        deadline: Duration::from_secs(2),
        connect_timeout: Duration::from_millis(500),
        retry: RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(20),
            multiplier: 2,
            max_backoff: Duration::from_millis(200),
            jitter: true,
        },
        ..ClientConfig::default()
    }
}

pub async fn client(proxy: &Proxy, config: ClientConfig) -> TallyClient {
    TallyClient::connect_with(proxy.endpoint(), config)
        .await
        .expect("client")
}

pub async fn balance(server: &TestServer) -> v1::Balance {
    tally_e2e::balance(&mut server.accounts().await, ACCOUNT).await
}

pub async fn ledger(server: &TestServer, kind: v1::LedgerEntryKind) -> Vec<v1::LedgerEntry> {
    tally_e2e::ledger(&mut server.accounts().await, ACCOUNT)
        .await
        .into_iter()
        .filter(|e| e.kind == kind as i32)
        .collect()
}
