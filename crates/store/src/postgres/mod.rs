//! The production backend: PostgreSQL, through a pool of tokio-postgres
//! connections (deadpool-postgres).
//!
//! It must pass the whole [`conformance`](crate::conformance) suite; any
//! behaviour that differs from the SQLite backend is a bug in one of the two.
//!
//! - Connecting does not migrate: [`PostgresStore::migrate`] is its own step
//!   and [`PostgresStore::schema_status`] tells whether it has been done.
//! - An append is one statement, hence one round trip and one transaction,
//!   for any number of streams (group commit across accounts): each
//!   stream's version check, events, idempotency records, resolved holds
//!   and wakeup (`append.rs`). Concurrency control is PostgreSQL's (the
//!   primary key on `(stream_id, version)`), so any number of `tallyd`
//!   replicas can share the database.
//! - The global log is ordered by `(tx, position)` and read behind a
//!   snapshot fence, so a reader never skips an event although transactions
//!   commit out of position order: see `log.rs`. `tx` is the transaction id
//!   plus an offset that `migrate` raises after a logical restore into a
//!   cluster whose ids are behind the dump's: see `order.rs`.
//! - Each append also overwrites its stream's row in `wakeups`, in the same
//!   transaction; `set_wakeup` is one guarded upsert that loses to it.
//! - The schema's `tally_app` role may only read and insert events and
//!   idempotency records; the service should connect as a login role that is
//!   a member of it.
//!
//! - Connections over TCP use TLS as the URL's `sslmode` says, with libpq's
//!   values (`verify-ca` and `verify-full` too): see `tls.rs`.
//! - Every session can get a `statement_timeout`
//!   ([`PostgresOptions::statement_timeout`]); migrations lift it for their
//!   own transaction.

mod append;
#[cfg(feature = "test-util")]
mod cluster;
mod coalesce;
mod error;
#[cfg(feature = "test-util")]
mod harness;
mod log;
mod order;
mod projection;
mod relay;
mod schema;
mod sql;
mod tls;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Client, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};

#[cfg(feature = "test-util")]
pub use self::cluster::TempCluster;
use self::error::{Failure, store_error};
#[cfg(feature = "test-util")]
pub use self::harness::{PostgresHarness, PostgresLocation, TEST_DATABASE_URL_ENV};
pub use self::order::Renumbering;
use self::relay::Relay;
pub use self::schema::{MigrationReport, SCHEMA_VERSION, SchemaStatus};
pub use self::tls::ServerCheck;
use crate::{
    AppendRequest, AppendResult, ChargeRecord, EventStore, HoldRecord, IdempotencyRecord,
    LogPosition, PoolStatus, RecordedEvent, Snapshot, StoreChange, StoreError, Wakeup,
};

/// The statements an append or a command's lookups run, with example
/// arguments as SQL literals: `(name, statement, arguments)`. For tests
/// that check their plans stay index lookups however large the tables.
#[cfg(feature = "test-util")]
pub fn hot_path_statements() -> Vec<(&'static str, String, &'static str)> {
    // A projection batch's run of bucket deletes, as the commit runs it.
    let delete = |account: &str| {
        crate::SqlStatement::new(
            "DELETE FROM account_buckets WHERE account_id = $1 AND grant_id = $2",
            vec![crate::SqlValue::text(account), crate::SqlValue::text("g")],
        )
    };
    let [delete_buckets] = &coalesce::coalesce(&[delete("a"), delete("b")])[..] else {
        unreachable!("a run of deletes is one statement")
    };
    let statements: Vec<(&'static str, &'static str, &'static str)> = vec![
        (
            "append",
            append::APPEND,
            "ARRAY['acct-7'], ARRAY[1000::bigint], ARRAY['acct-7'], ARRAY[1001::bigint], \
             ARRAY['t'], ARRAY['\\x00'::bytea], ARRAY[0::bigint], ARRAY['acct-7'], ARRAY['new-key'], \
             ARRAY['\\x00'::bytea], ARRAY['\\x00'::bytea], ARRAY['acct-7'], ARRAY['h'], \
             ARRAY['\\x00'::bytea], ARRAY['acct-7'], ARRAY[1001::bigint], ARRAY[NULL::bigint], \
             ARRAY['acct-7'], ARRAY['charge-key'], ARRAY['\\x00'::bytea]",
        ),
        ("stream_version", sql::STREAM_VERSION, "'acct-0'"),
        ("read_stream", sql::READ_STREAM, "'acct-0', 990, 1000"),
        (
            "find_idempotency",
            sql::FIND_IDEMPOTENCY,
            "'acct-0', ARRAY['key-17', 'key-99999', 'missing']",
        ),
        (
            "find_holds",
            sql::FIND_HOLDS,
            "'acct-0', ARRAY['h-1', 'missing']",
        ),
        (
            "find_charges",
            sql::FIND_CHARGES,
            "'acct-0', ARRAY['key-17', 'missing']",
        ),
        ("load_snapshot", sql::LOAD_SNAPSHOT, "'acct-0'"),
        ("log_head", projection::LOG_HEAD, ""),
        ("read_log", log::READ_LOG, "'0', 0, 100"),
    ];
    statements
        .into_iter()
        .map(|(name, sql, arguments)| (name, sql.to_owned(), arguments))
        .chain([(
            "projection: delete buckets",
            delete_buckets.sql.clone(),
            "ARRAY['acct-7', 'acct-8'], ARRAY['grant-1', 'grant-2']",
        )])
        .collect()
}

/// The role the migrations create and grant the service's privileges to.
pub const APP_ROLE: &str = "tally_app";

/// Tuning for [`PostgresStore::connect`].
#[derive(Clone, Debug)]
pub struct PostgresOptions {
    /// Most connections open at once (at least 1).
    pub max_connections: usize,
    /// Longest wait to open one connection (TCP, startup, authentication),
    /// unless the URL sets `connect_timeout`. Past it: `Unavailable`.
    pub connect_timeout: Duration,
    /// Longest wait for a free connection when all `max_connections` are in
    /// use. Past it: `Unavailable`.
    pub acquire_timeout: Duration,
    /// Longest time `read_log` waits for older transactions to finish so it
    /// can return events they hold back (see the fence in `log.rs`). Past
    /// it, it returns the events before them: late, never out of order.
    pub log_fence_wait: Duration,
    /// PostgreSQL's `statement_timeout` for every session the store opens:
    /// a statement running longer is cancelled (and fails `Unavailable`).
    /// Set at connection start, before the URL's own `options`, so a
    /// `-c statement_timeout=…` there wins. `None`: the server's default.
    pub statement_timeout: Option<Duration>,
    /// What is checked of the server's certificate; [`connect`] sets it from
    /// the URL's `sslmode`.
    ///
    /// [`connect`]: PostgresStore::connect
    pub server_check: ServerCheck,
    /// The CA certificates (PEM) the server's certificate must lead to. The
    /// URL's `sslrootcert` replaces it.
    pub ca_file: Option<PathBuf>,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            connect_timeout: Duration::from_secs(5),
            acquire_timeout: Duration::from_secs(5),
            log_fence_wait: Duration::from_secs(5),
            statement_timeout: None,
            server_check: ServerCheck::default(),
            ca_file: None,
        }
    }
}

/// An [`EventStore`] in a PostgreSQL database. Cheap to clone: clones share
/// the pool.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    options: Arc<PostgresOptions>,
    relay: Arc<Relay>,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/dbname?…`
    /// or `host=… dbname=…`), opening one connection to find out now, not
    /// at the first request, that it is unreachable. Does not migrate.
    ///
    /// `sslmode` takes libpq's values, `verify-ca` and `verify-full`
    /// included, and `sslrootcert` names the CA file (see `tls.rs`).
    pub async fn connect(url: &str, mut options: PostgresOptions) -> Result<Self, StoreError> {
        let parsed = ConnectionString::parse(url)?;
        options.server_check = parsed.check;
        if parsed.root_cert.is_some() {
            options.ca_file = parsed.root_cert;
        }
        Self::connect_with_config(parsed.config, options).await
    }

    /// [`connect`](Self::connect) with a parsed configuration, e.g. to set a
    /// password that is not in the URL. Its `sslmode` says whether to
    /// encrypt; `options.server_check` and `options.ca_file` what to check.
    pub async fn connect_with_config(
        mut config: tokio_postgres::Config,
        options: PostgresOptions,
    ) -> Result<Self, StoreError> {
        let tls = tls::connector(options.server_check, options.ca_file.as_deref())
            .map_err(|e| StoreError::Internal(format!("postgres TLS: {e}")))?;
        if let Some(timeout) = options.statement_timeout {
            // Startup options, so the setting costs no round trip and holds
            // on every connection, the change listener's too.
            let own = format!("-c statement_timeout={}", timeout.as_millis());
            let options = match config.get_options() {
                Some(url_options) => format!("{own} {url_options}"),
                None => own,
            };
            config.options(options);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.connect_timeout);
        }
        // Without these a query to a host that vanished waits for TCP's own
        // retransmission timeout (about 15 minutes).
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(Duration::from_secs(30));
        }
        if config.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
            config.keepalives_idle(Duration::from_secs(15));
        }
        if config.get_application_name().is_none() {
            config.application_name("tallyd");
        }
        let target = Target::of(&config);
        // Fast: a connection is reused unless tokio-postgres saw it close; a
        // dead one fails its next statement with `Unavailable`.
        let listener_config = config.clone();
        let manager = Manager::from_config(
            config,
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.max_connections.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.acquire_timeout))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.connect_timeout))
            .build()
            .map_err(|err| store_error(Failure::Setup(format!("postgres pool: {err}"))))?;
        let store = Self {
            relay: Arc::new(Relay::new(listener_config, tls, pool.clone())),
            pool,
            options: Arc::new(options),
        };
        drop(store.client().await?);
        tracing::info!(%target, "connected to postgres event store");
        Ok(store)
    }

    pub fn options(&self) -> &PostgresOptions {
        &self.options
    }

    /// One of the pool's connections, for tests that look at the sessions
    /// the store opens (their settings, their TLS).
    #[cfg(feature = "test-util")]
    pub async fn pooled_client(&self) -> Result<Client, StoreError> {
        self.client().await
    }

    /// A pooled connection, or `Unavailable` within the configured timeouts.
    async fn client(&self) -> Result<Client, StoreError> {
        self.pool.get().await.map_err(store_error)
    }
}

/// A connection string as [`PostgresStore::connect`] reads it.
struct ConnectionString {
    config: tokio_postgres::Config,
    check: ServerCheck,
    root_cert: Option<PathBuf>,
}

impl ConnectionString {
    /// Fails `Internal`: a connection string that does not parse will not
    /// parse the next time either. The error names settings, never values.
    fn parse(url: &str) -> Result<Self, StoreError> {
        let split = tls::split_url(url)
            .map_err(|e| StoreError::Internal(format!("postgres connection string: {e}")))?;
        let config = split.url.parse().map_err(store_error)?;
        Ok(ConnectionString {
            config,
            check: split.check,
            root_cert: split.root_cert,
        })
    }
}

/// `url` as it may be logged: the settings [`PostgresStore::connect`]
/// reads from it, as a `key=value` string, with `password=***` when it
/// gives one. Rendered from the parsed settings rather than by editing the
/// string, so no way of writing the password (in the URL's user info, as
/// a query parameter, quoted with spaces, with spaces around `=`) reaches
/// a log.
pub fn loggable_connection_string(url: &str) -> Result<String, StoreError> {
    use tokio_postgres::config::{Host, SslMode};
    let ConnectionString {
        config,
        check,
        root_cert,
    } = ConnectionString::parse(url)?;
    let mut shown: Vec<(&str, String)> = Vec::new();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|host| match host {
            Host::Tcp(name) => name.clone(),
            #[cfg(unix)]
            Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    if !hosts.is_empty() {
        shown.push(("host", hosts.join(",")));
    }
    if !config.get_hostaddrs().is_empty() {
        let addrs: Vec<String> = config
            .get_hostaddrs()
            .iter()
            .map(ToString::to_string)
            .collect();
        shown.push(("hostaddr", addrs.join(",")));
    }
    if !config.get_ports().is_empty() {
        let ports: Vec<String> = config.get_ports().iter().map(ToString::to_string).collect();
        shown.push(("port", ports.join(",")));
    }
    if let Some(user) = config.get_user() {
        shown.push(("user", user.to_owned()));
    }
    if config.get_password().is_some() {
        shown.push(("password", "***".to_owned()));
    }
    if let Some(dbname) = config.get_dbname() {
        shown.push(("dbname", dbname.to_owned()));
    }
    if let Some(options) = config.get_options() {
        shown.push(("options", options.to_owned()));
    }
    if let Some(name) = config.get_application_name() {
        shown.push(("application_name", name.to_owned()));
    }
    let sslmode = match (check, config.get_ssl_mode()) {
        (ServerCheck::Full, _) => "verify-full",
        (ServerCheck::Chain, _) => "verify-ca",
        (ServerCheck::IfCaGiven, SslMode::Disable) => "disable",
        (ServerCheck::IfCaGiven, SslMode::Require) => "require",
        (ServerCheck::IfCaGiven, _) => "prefer",
    };
    shown.push(("sslmode", sslmode.to_owned()));
    if let Some(root_cert) = root_cert {
        shown.push(("sslrootcert", root_cert.display().to_string()));
    }
    if let Some(timeout) = config.get_connect_timeout() {
        shown.push(("connect_timeout", timeout.as_secs().to_string()));
    }
    Ok(shown
        .iter()
        .map(|(key, value)| {
            if !value.is_empty()
                && !value.contains(|c: char| c.is_whitespace() || c == '\'' || c == '\\')
            {
                format!("{key}={value}")
            } else {
                format!(
                    "{key}='{}'",
                    value.replace('\\', "\\\\").replace('\'', "\\'")
                )
            }
        })
        .collect::<Vec<_>>()
        .join(" "))
}

/// Where the pool connects, without the password, for logs and `Debug`.
struct Target(String);

impl Target {
    fn of(config: &tokio_postgres::Config) -> Self {
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .map(|host| format!("{host:?}"))
            .collect();
        Self(format!(
            "user={} hosts=[{}] ports={:?} dbname={}",
            config.get_user().unwrap_or("?"),
            hosts.join(", "),
            config.get_ports(),
            config.get_dbname().unwrap_or("?"),
        ))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("pool", &self.pool.status())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl EventStore for PostgresStore {
    fn system_name(&self) -> &'static str {
        "postgresql"
    }

    fn changes(&self) -> tokio::sync::broadcast::Receiver<StoreChange> {
        self.relay.subscribe()
    }

    fn pool_status(&self) -> Option<PoolStatus> {
        let status = self.pool.status();
        Some(PoolStatus {
            max_size: status.max_size,
            size: status.size,
            idle: status.available,
            waiting: status.waiting,
        })
    }

    #[tracing::instrument(
        level = "debug",
        skip_all,
        fields(stream_id = %request.stream_id, expected_version = request.expected_version, events = request.events.len())
    )]
    async fn append(&self, request: AppendRequest) -> Result<AppendResult, StoreError> {
        request.validate()?;
        let client = self.client().await?;
        let result = append::append(&client, &request).await;
        if result.is_ok() {
            self.relay
                .publish(StoreChange::Appended(vec![request.stream_id].into()));
        }
        result
    }

    #[tracing::instrument(level = "debug", skip_all, fields(streams = requests.len()))]
    async fn append_batch(
        &self,
        requests: Vec<AppendRequest>,
    ) -> Vec<Result<AppendResult, StoreError>> {
        let results = match self.client().await {
            Ok(client) => append::append_batch(&client, &requests).await,
            Err(err) => requests.iter().map(|_| Err(err.clone())).collect(),
        };
        let streams = requests.iter().map(|r| r.stream_id.clone());
        if let Some(landed) = crate::changes::appended(streams, &results) {
            self.relay.publish(landed);
        }
        results
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn read_stream(
        &self,
        stream_id: &str,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let client = self.client().await?;
        sql::read_stream(&client, stream_id, from_version, limit).await
    }

    #[tracing::instrument(level = "debug", skip(self, versions), fields(versions = versions.len()))]
    async fn read_versions(
        &self,
        stream_id: &str,
        versions: &[u64],
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let client = self.client().await?;
        sql::read_versions(&client, stream_id, versions).await
    }

    #[tracing::instrument(level = "debug", skip(self), fields(after = after.map(tracing::field::display)))]
    async fn read_log(
        &self,
        after: Option<LogPosition>,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        log::read_log(self, after, limit).await
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn stream_version(&self, stream_id: &str) -> Result<u64, StoreError> {
        let client = self.client().await?;
        sql::stream_version(&client, stream_id).await
    }

    #[tracing::instrument(level = "debug", skip(self, keys), fields(keys = keys.len()))]
    async fn find_idempotency(
        &self,
        stream_id: &str,
        keys: &[String],
    ) -> Result<Vec<IdempotencyRecord>, StoreError> {
        let client = self.client().await?;
        sql::find_idempotency(&client, stream_id, keys).await
    }

    #[tracing::instrument(level = "debug", skip(self, hold_ids), fields(holds = hold_ids.len()))]
    async fn find_holds(
        &self,
        stream_id: &str,
        hold_ids: &[String],
    ) -> Result<Vec<HoldRecord>, StoreError> {
        let client = self.client().await?;
        sql::find_holds(&client, stream_id, hold_ids).await
    }

    #[tracing::instrument(level = "debug", skip(self, charge_keys), fields(charges = charge_keys.len()))]
    async fn find_charges(
        &self,
        stream_id: &str,
        charge_keys: &[String],
    ) -> Result<Vec<ChargeRecord>, StoreError> {
        let client = self.client().await?;
        sql::find_charges(&client, stream_id, charge_keys).await
    }

    #[tracing::instrument(level = "debug", skip(self, snapshot), fields(version = snapshot.version))]
    async fn save_snapshot(&self, stream_id: &str, snapshot: Snapshot) -> Result<(), StoreError> {
        let client = self.client().await?;
        sql::save_snapshot(&client, stream_id, &snapshot).await
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn load_snapshot(&self, stream_id: &str) -> Result<Option<Snapshot>, StoreError> {
        let client = self.client().await?;
        sql::load_snapshot(&client, stream_id).await
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn set_wakeup(
        &self,
        stream_id: &str,
        version: u64,
        at_ms: Option<i64>,
    ) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        sql::set_wakeup(&mut client, stream_id, version, at_ms).await
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn due_wakeups(&self, now_ms: i64, limit: usize) -> Result<Vec<Wakeup>, StoreError> {
        let client = self.client().await?;
        sql::due_wakeups(&client, now_ms, limit).await
    }
}
