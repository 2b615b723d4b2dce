//! One copy of each idle account, not two. The engine keeps an idle
//! account's state so that its next command needs no read, and the
//! projections keep the same account as they folded it so that their next
//! batch needs none either (and reads can be answered from memory). On the
//! replica that runs the projections the two are the same account at the
//! same version once the fold has caught up, so the engine leaves it with
//! the fold, remembering only its version, and starts the account's next
//! actor from the fold's state (and the stream after it, if the fold had
//! not caught up).

use std::sync::Arc;

use tally_core::Account;
use tally_engine::FoldedStates;
use tally_projections::Projections;

use crate::Store;

pub(crate) struct SharedFold<S> {
    pub(crate) projections: Projections<S>,
}

impl<S: Store> FoldedStates for SharedFold<S> {
    fn folded(&self, account: &str) -> Option<Arc<Account>> {
        self.projections.folded_state(account)
    }
}
