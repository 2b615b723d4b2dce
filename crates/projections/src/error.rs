use tally_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The log or a projection's rows do not fold: a bug or damaged data.
    #[error("projection data is corrupt: {0}")]
    Corrupt(String),
    /// Another process runs the projections, so this one cannot rebuild
    /// them directly. Names the lock.
    #[error("the {0} are being run by another process")]
    Busy(&'static str),
    /// A read asked to be at least as fresh as a position the projection
    /// did not reach in time.
    #[error("projection {projection} has not caught up with the requested position in time")]
    NotFresh { projection: &'static str },
}

impl From<tally_core::CorruptEvent> for ProjectionError {
    fn from(err: tally_core::CorruptEvent) -> Self {
        ProjectionError::Corrupt(err.to_string())
    }
}
