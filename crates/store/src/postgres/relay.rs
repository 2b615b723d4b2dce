//! Change signals between the processes that share one database, through
//! PostgreSQL's `LISTEN`/`NOTIFY`: a replica's watchers, freshness waits
//! and projection runner wake when another replica appends or projects,
//! instead of polling.
//!
//! - **Sending** happens after the append has committed, from a task of its
//!   own, never inside the append's transaction: a transaction that
//!   notifies takes a database-wide lock while it commits, which would
//!   serialise the group commits. Signals gathered meanwhile go out together,
//!   at most one `NOTIFY` per [`SEND_EVERY`], so the cost to PostgreSQL stays
//!   bounded however hot the traffic.
//! - **Listening** is one connection of its own per process, opened when
//!   something first subscribes, reopened when it drops. Whenever it
//!   (re)connects, subscribers hear [`StoreChange::Unknown`]: signals sent
//!   while it was not listening are lost.
//! - A process ignores its own notifications: its subscribers already heard
//!   them from the [`ChangeHub`] when the commit returned.
//! - **Nobody else listening, nothing sent.** A listener says hello when it
//!   starts and every [`HELLO_EVERY`]; a process that listens sends only
//!   while it has heard another process within [`PEER_TIMEOUT`], so a
//!   single replica pays nothing. One that does not listen (a one-off
//!   command such as `tallyd rebuild`) cannot know, and always sends.
//!
//! A signal that never arrives (the sender died between its commit and its
//! `NOTIFY`) costs latency only: every consumer keeps a slow poll.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use futures::StreamExt;
use tokio::sync::{Notify, broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_postgres::AsyncMessage;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::LogPosition;
use crate::changes::{ChangeHub, ProjectedTo, StoreChange};

/// The channel every process of one database listens on.
const CHANNEL: &str = "tally_changes";
/// Shortest time between two notifications this process sends.
const SEND_EVERY: Duration = Duration::from_millis(5);
/// PostgreSQL refuses payloads of 8,000 bytes and more.
const MAX_PAYLOAD: usize = 7_900;
/// Wait before reopening a listening connection that failed.
const RELISTEN_AFTER: Duration = Duration::from_secs(1);
/// How often a listener tells the others it is there.
const HELLO_EVERY: Duration = Duration::from_secs(10);
/// How long after last hearing another process this one keeps sending.
const PEER_TIMEOUT: Duration = Duration::from_secs(35);
/// The payload's line that says "I am listening, who else is?"; every
/// other listener answers with [`HELLO_BACK`] at once, so a replica that
/// just started knows of the others before it sends.
const HELLO: &str = "h";
const HELLO_BACK: &str = "r";

/// What this process knows of the others, shared by its sender and its
/// listener.
#[derive(Debug, Default)]
struct Peers {
    /// Whether this process listens (so it would hear the others' hellos).
    listening: AtomicBool,
    /// When it last heard another process, in milliseconds since `epoch`.
    heard_at_ms: AtomicU64,
    epoch: OnceLock<Instant>,
}

impl Peers {
    fn now_ms(&self) -> u64 {
        let epoch = *self.epoch.get_or_init(Instant::now);
        u64::try_from(epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    fn heard(&self) {
        self.heard_at_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Whether a notification could reach anyone.
    fn anyone_listening(&self) -> bool {
        if !self.listening.load(Ordering::Relaxed) {
            return true;
        }
        let heard = self.heard_at_ms.load(Ordering::Relaxed);
        heard > 0 && self.now_ms() - heard.min(self.now_ms()) < PEER_TIMEOUT.as_millis() as u64
    }
}

/// One process's side of the relay; clones of a store share it.
pub(crate) struct Relay {
    hub: ChangeHub,
    /// Tells this process's notifications from other processes'.
    origin: String,
    outbox: Arc<Mutex<Outbox>>,
    wake_sender: Arc<Notify>,
    peers: Arc<Peers>,
    sender: OnceLock<JoinHandle<()>>,
    listener: OnceLock<JoinHandle<()>>,
    config: tokio_postgres::Config,
    /// The pool's TLS connector, for the listening connection.
    tls: MakeRustlsConnect,
    pool: Pool,
}

impl Relay {
    pub(crate) fn new(config: tokio_postgres::Config, tls: MakeRustlsConnect, pool: Pool) -> Self {
        // Unique among processes (pid and start time) and among the stores
        // one process connects (tests run several replicas in one).
        static STORES: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let store = STORES.fetch_add(1, Ordering::Relaxed);
        Relay {
            hub: ChangeHub::default(),
            origin: format!("{}.{nanos:x}.{store}", std::process::id()),
            outbox: Arc::default(),
            wake_sender: Arc::default(),
            peers: Arc::default(),
            sender: OnceLock::new(),
            listener: OnceLock::new(),
            config,
            tls,
            pool,
        }
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<StoreChange> {
        let receiver = self.hub.subscribe();
        self.listener.get_or_init(|| {
            self.peers.listening.store(true, Ordering::Relaxed);
            tokio::spawn(listen(
                self.config.clone(),
                self.tls.clone(),
                self.origin.clone(),
                self.hub.clone(),
                Arc::clone(&self.peers),
            ))
        });
        receiver
    }

    /// Tells this process's subscribers now and the other processes soon.
    pub(crate) fn publish(&self, change: StoreChange) {
        self.outbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .add(&change);
        self.hub.publish(change);
        self.sender.get_or_init(|| {
            tokio::spawn(send(
                self.pool.clone(),
                self.origin.clone(),
                Arc::clone(&self.outbox),
                Arc::clone(&self.wake_sender),
                Arc::clone(&self.peers),
            ))
        });
        self.wake_sender.notify_one();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        for task in [self.sender.get(), self.listener.get()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
    }
}

/// Signals gathered since the last notification, merged.
#[derive(Debug, Default)]
struct Outbox {
    streams: BTreeSet<String>,
    unknown: bool,
    projected: BTreeMap<String, ProjectedTo>,
}

impl Outbox {
    fn add(&mut self, change: &StoreChange) {
        match change {
            StoreChange::Appended(streams) => self.streams.extend(streams.iter().cloned()),
            StoreChange::Unknown => self.unknown = true,
            StoreChange::Projected(moved) => {
                for to in moved.iter() {
                    let newer = self.projected.get(&to.name).is_none_or(|known| {
                        (to.generation, to.position) >= (known.generation, known.position)
                    });
                    if newer {
                        self.projected.insert(to.name.clone(), to.clone());
                    }
                }
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.streams.is_empty() && !self.unknown && self.projected.is_empty()
    }

    /// The payload: the origin on the first line, then one line per
    /// signal (`a <stream>`, `a*` for unnamed appends, `p <generation>
    /// <position or -> <name>`). Streams that do not fit become `a*`.
    fn payload(self, origin: &str) -> String {
        let mut payload = String::from(origin);
        for to in self.projected.values() {
            let position = to
                .position
                .map_or_else(|| "-".to_owned(), |p| p.to_string());
            payload.push_str(&format!("\np {} {position} {}", to.generation, to.name));
        }
        let mut unknown = self.unknown;
        if !unknown {
            let named: usize = self.streams.iter().map(|s| s.len() + 3).sum();
            unknown = payload.len() + named > MAX_PAYLOAD
                || self.streams.iter().any(|s| s.contains('\n'));
        }
        if unknown {
            payload.push_str("\na*");
        } else {
            for stream in &self.streams {
                payload.push_str("\na ");
                payload.push_str(stream);
            }
        }
        payload
    }
}

/// The signals in a payload, and who sent it; `None` for one this
/// version cannot read (then anything may have changed).
fn parse(payload: &str) -> Option<(&str, Vec<StoreChange>)> {
    let mut lines = payload.split('\n');
    let origin = lines.next()?;
    parse_signals(lines).map(|changes| (origin, changes))
}

/// The first line of a payload: who sent it.
fn origin_of(payload: &str) -> &str {
    payload.split('\n').next().unwrap_or_default()
}

fn parse_signals<'a>(lines: impl Iterator<Item = &'a str>) -> Option<Vec<StoreChange>> {
    let mut streams = Vec::new();
    let mut projected = Vec::new();
    let mut unknown = false;
    for line in lines {
        if line == HELLO || line == HELLO_BACK {
            continue;
        } else if line == "a*" {
            unknown = true;
        } else if let Some(stream) = line.strip_prefix("a ") {
            streams.push(stream.to_owned());
        } else if let Some(rest) = line.strip_prefix("p ") {
            let mut fields = rest.splitn(3, ' ');
            let generation = fields.next()?.parse().ok()?;
            let position = match fields.next()? {
                "-" => None,
                position => Some(position.parse::<LogPosition>().ok()?),
            };
            let name = fields.next()?.to_owned();
            projected.push(ProjectedTo {
                name,
                generation,
                position,
            });
        } else {
            return None;
        }
    }
    let mut changes = Vec::new();
    if unknown {
        changes.push(StoreChange::Unknown);
    } else if !streams.is_empty() {
        changes.push(StoreChange::Appended(streams.into()));
    }
    if !projected.is_empty() {
        changes.push(StoreChange::Projected(projected.into()));
    }
    Some(changes)
}

/// Sends what the outbox gathers, one notification at a time.
async fn send(
    pool: Pool,
    origin: String,
    outbox: Arc<Mutex<Outbox>>,
    wake: Arc<Notify>,
    peers: Arc<Peers>,
) {
    loop {
        wake.notified().await;
        let gathered = std::mem::take(&mut *outbox.lock().unwrap_or_else(PoisonError::into_inner));
        if gathered.is_empty() || !peers.anyone_listening() {
            continue;
        }
        let payload = gathered.payload(&origin);
        let sent = async {
            let client = pool.get().await.map_err(|e| e.to_string())?;
            client
                .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
                .await
                .map_err(|e| e.to_string())
        };
        if let Err(err) = sent.await {
            // Listeners fall back on their polls; nothing is lost but time.
            tracing::debug!(error = %err, "could not send a change notification");
        }
        tokio::time::sleep(SEND_EVERY).await;
    }
}

/// Listens on its own connection, reopening it when it drops, and hands
/// other processes' signals to this process's subscribers.
async fn listen(
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    origin: String,
    hub: ChangeHub,
    peers: Arc<Peers>,
) {
    loop {
        match listen_once(&config, tls.clone(), &origin, &hub, &peers).await {
            Ok(()) => tracing::debug!("the change listener's connection closed"),
            Err(err) => tracing::warn!(error = %err, "the change listener lost its connection"),
        }
        // Whatever was sent meanwhile is lost: subscribers look again.
        hub.publish(StoreChange::Unknown);
        tokio::time::sleep(RELISTEN_AFTER).await;
    }
}

async fn listen_once(
    config: &tokio_postgres::Config,
    tls: MakeRustlsConnect,
    origin: &str,
    hub: &ChangeHub,
    peers: &Peers,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(tls).await?;
    let (notifications, mut received) = mpsc::unbounded_channel();
    // The connection must be polled for the LISTEN to complete and for
    // notifications to arrive; it ends when the server or network does.
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if notifications.send(n.payload().to_owned()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    });
    let listening = client.batch_execute(&format!("LISTEN {CHANNEL}")).await;
    if let Err(err) = listening {
        driver.abort();
        return Err(err);
    }
    // Signals sent before the LISTEN took effect were missed.
    hub.publish(StoreChange::Unknown);
    let hello = format!("{origin}\n{HELLO}");
    let hello_back = format!("{origin}\n{HELLO_BACK}");
    let mut hellos = tokio::time::interval(HELLO_EVERY);
    loop {
        let payload = tokio::select! {
            received = received.recv() => match received {
                Some(payload) => payload,
                None => break,
            },
            _ = hellos.tick() => {
                client
                    .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &hello])
                    .await?;
                continue;
            }
        };
        if origin_of(&payload) == origin {
            continue;
        }
        peers.heard();
        if payload.split('\n').skip(1).any(|line| line == HELLO) {
            client
                .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &hello_back])
                .await?;
        }
        match parse(&payload) {
            Some((_, changes)) => changes.into_iter().for_each(|c| hub.publish(c)),
            None => hub.publish(StoreChange::Unknown),
        }
    }
    drop(client);
    match driver.await {
        Ok(result) => result,
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_reads_back_as_the_signals_it_carries() {
        let mut outbox = Outbox::default();
        outbox.add(&StoreChange::Appended(
            vec!["a".to_owned(), "b c".to_owned()].into(),
        ));
        outbox.add(&StoreChange::Appended(vec!["a".to_owned()].into()));
        let moved = |generation, seq| {
            StoreChange::Projected(
                vec![ProjectedTo {
                    name: "accounts".into(),
                    generation,
                    position: Some(LogPosition::new(7, seq)),
                }]
                .into(),
            )
        };
        outbox.add(&moved(3, 30));
        outbox.add(&moved(2, 20));
        let payload = outbox.payload("me");
        let (from, changes) = parse(&payload).expect("parses");
        assert_eq!(from, "me");
        assert_eq!(
            changes,
            vec![
                StoreChange::Appended(vec!["a".to_owned(), "b c".to_owned()].into()),
                moved(3, 30),
            ]
        );
    }

    #[test]
    fn streams_that_do_not_fit_become_unknown() {
        let mut outbox = Outbox::default();
        let many: Vec<String> = (0..2_000).map(|i| format!("account-{i}")).collect();
        outbox.add(&StoreChange::Appended(many.into()));
        let payload = outbox.payload("me");
        assert!(payload.len() <= MAX_PAYLOAD, "{}", payload.len());
        assert_eq!(parse(&payload).unwrap().1, vec![StoreChange::Unknown]);
    }

    #[test]
    fn a_payload_from_elsewhere_is_unknown() {
        assert!(parse("me\nx what").is_none());
        let reset = "me\np 4 - balances";
        assert_eq!(
            parse(reset).unwrap().1,
            vec![StoreChange::Projected(
                vec![ProjectedTo {
                    name: "balances".into(),
                    generation: 4,
                    position: None,
                }]
                .into()
            )]
        );
    }
}
