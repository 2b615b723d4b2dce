//! Who gets in (SPEC §4 invariant 8). With a key file (`--api-keys`),
//! every call but health checks (and reflection, with `--open-reflection`)
//! needs `authorization: Bearer <key>`; the layer here checks the key and
//! the scope the method needs before any handler runs, so a refused call
//! decodes nothing and writes nothing. Which accounts a key covers is
//! checked where requests name them: [`crate::convert::Validator::account`]
//! asks [`may_touch`], which sees the key this layer let in.
//!
//! The key file is read again on SIGHUP and whenever it changes on disk
//! (`reload.rs`); a file that does not parse is refused with a warning and
//! the keys in use stay.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use tally_auth::{Denied, Key, KeyFileError, Keys, Scope};
use tally_telemetry::Metrics;
use tracing::{info, warn};

use crate::reload::WatchedFiles;
use crate::status;

tokio::task_local! {
    /// The key of the call being handled, when the server checks keys.
    static CALLER: Arc<Key>;
}

/// Whether the call being handled may touch `account`: always, when the
/// server checks no keys.
pub fn may_touch(account: &str) -> Result<(), Denied> {
    CALLER.try_with(|key| key.covers(account)).unwrap_or(Ok(()))
}

/// What a method needs of the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Needs {
    Nothing,
    /// A valid key of any scope: reflection (unless open), and paths no
    /// service serves (they answer UNIMPLEMENTED, but only to callers
    /// that got in).
    AnyKey,
    Scope(Scope),
}

/// The scope each tally.v1 method needs. A test checks that every method
/// of the API is listed.
fn needs(path: &str, open_reflection: bool) -> Needs {
    let (service, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or((path, ""));
    match (service, method) {
        ("grpc.health.v1.Health", _) => Needs::Nothing,
        ("grpc.reflection.v1.ServerReflection" | "grpc.reflection.v1alpha.ServerReflection", _) => {
            if open_reflection {
                Needs::Nothing
            } else {
                Needs::AnyKey
            }
        }
        (
            "tally.v1.MeteringService",
            "Quote" | "Reserve" | "Commit" | "Release" | "Extend" | "Debit" | "ReportUsage"
            | "ReportUsageStream",
        ) => Needs::Scope(Scope::Meter),
        ("tally.v1.MeteringService", "Refund") => Needs::Scope(Scope::Admin),
        ("tally.v1.AccountService", "GetBalance" | "ListLedger" | "GetUsage" | "WatchAccount") => {
            Needs::Scope(Scope::Read)
        }
        (
            "tally.v1.AccountService",
            "OpenAccount" | "Grant" | "VoidGrant" | "Adjust" | "ChangePlan" | "SetSpendingCap"
            | "SetBillingAnchor" | "SetAlertThresholds",
        ) => Needs::Scope(Scope::Admin),
        ("tally.v1.CatalogService", "GetRateCard" | "GetPlanCatalogue") => {
            Needs::Scope(Scope::Read)
        }
        ("tally.v1.CatalogService", "PublishRateCard" | "PublishPlanCatalogue") => {
            Needs::Scope(Scope::Admin)
        }
        ("tally.v1.TestClockService", "CreateTestClock" | "GetTestClock" | "AdvanceTestClock") => {
            Needs::Scope(Scope::Admin)
        }
        _ => Needs::AnyKey,
    }
}

/// The keys in use, and where they come from.
pub struct KeyRing {
    path: PathBuf,
    keys: RwLock<Arc<Keys>>,
    file: Arc<WatchedFiles>,
}

impl KeyRing {
    /// Reads the key file; tallyd does not start without a usable one.
    pub fn open(path: &Path) -> Result<Arc<KeyRing>, KeyFileError> {
        let file = Arc::new(WatchedFiles::new(vec![path.to_owned()]));
        let keys = Keys::load(path)?;
        info!(path = %path.display(), keys = keys.len(), "API keys loaded");
        Ok(Arc::new(KeyRing {
            path: path.to_owned(),
            keys: RwLock::new(Arc::new(keys)),
            file,
        }))
    }

    fn current(&self) -> Arc<Keys> {
        self.keys.read().expect("key ring lock").clone()
    }

    /// Reads the file again; on failure the keys in use stay.
    pub fn reload(&self) {
        match Keys::load(&self.path) {
            Ok(keys) => {
                info!(path = %self.path.display(), keys = keys.len(), "API keys reloaded");
                *self.keys.write().expect("key ring lock") = Arc::new(keys);
            }
            Err(e) => warn!(
                path = %self.path.display(),
                error = %e,
                "the key file did not load; the keys in use stay"
            ),
        }
    }

    /// Reloads whenever the file changes and on SIGHUP, until the server
    /// stops.
    pub fn watch(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let ring = self.clone();
        self.file.clone().watch(move || ring.reload())
    }
}

/// The tower layer that lets in only calls with a key that may make them.
#[derive(Clone)]
pub struct Authenticate {
    pub keys: Arc<KeyRing>,
    pub open_reflection: bool,
    pub metrics: Metrics,
}

impl<S> tower::Layer<S> for Authenticate {
    type Service = Authenticated<S>;
    fn layer(&self, inner: S) -> Authenticated<S> {
        Authenticated {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    layer: Authenticate,
}

impl<S, B, R> tower::Service<http::Request<B>> for Authenticated<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let needs = needs(request.uri().path(), self.layer.open_reflection);
        if needs == Needs::Nothing {
            return Box::pin(self.inner.call(request));
        }
        let header = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok());
        let key = match self.layer.keys.current().authenticate(header) {
            Ok(key) => key,
            Err(why) => {
                self.layer.metrics.auth_refused(why.reason());
                let response = status::unauthenticated(&why).into_http();
                return Box::pin(async move { Ok(response) });
            }
        };
        if let Needs::Scope(scope) = needs
            && let Err(why) = key.allows(scope)
        {
            self.layer.metrics.auth_refused(why.reason());
            let response = status::permission_denied(&why).into_http();
            return Box::pin(async move { Ok(response) });
        }
        let call = self.inner.call(request);
        Box::pin(CALLER.scope(key, call))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// Every method of the API has a scope: a new RPC does not slip in
    /// as "any key".
    #[test]
    fn every_api_method_needs_a_scope() {
        let set = prost_types::FileDescriptorSet::decode(tally_api::v1::FILE_DESCRIPTOR_SET)
            .expect("descriptor set");
        let mut methods = 0;
        for file in set.file {
            let package = file.package().to_owned();
            for service in file.service {
                let name = format!("{package}.{}", service.name());
                for method in service.method {
                    let path = format!("/{name}/{}", method.name());
                    assert!(
                        matches!(needs(&path, false), Needs::Scope(_)),
                        "{path} has no scope"
                    );
                    methods += 1;
                }
            }
        }
        assert!(methods >= 25, "only {methods} methods found");
        assert_eq!(needs("/grpc.health.v1.Health/Check", false), Needs::Nothing);
        assert_eq!(
            needs(
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                false
            ),
            Needs::AnyKey
        );
        assert_eq!(
            needs(
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                true
            ),
            Needs::Nothing
        );
        assert_eq!(needs("/no.such.Service/Method", false), Needs::AnyKey);
    }
}
