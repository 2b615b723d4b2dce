//! Deciders for grants: adding credits (directly or as a pack) and voiding
//! a grant.

use crate::calendar::plus_months;
use crate::{
    Account, BucketKind, Event, GrantCommand, GrantId, Millicredits, Outcome, Rejection, Timestamp,
};

use super::{Context, Decision};

pub(super) fn decide_grant(
    account: &Account,
    grant: &GrantCommand,
    ctx: &Context<'_>,
) -> Result<Decision, Rejection> {
    let now = ctx.now;
    let mut grant = grant.clone();
    if let Some(name) = &grant.pack {
        let pack = ctx
            .plans
            .packs
            .get(name)
            .ok_or_else(|| Rejection::UnknownPack { pack: name.clone() })?;
        grant.kind = BucketKind::TopUp;
        grant.amount = pack.credits_millicredits;
        grant.expires_at = pack
            .expires_after_months
            .map(|months| plus_months(&account.terms.time_zone, now, months));
        grant.cost_basis = grant.cost_basis.or_else(|| pack.cost_basis.clone());
        if grant.reference.is_empty() {
            grant.reference = format!("pack {name}");
        }
    }
    let effective_at = grant.effective_at.unwrap_or(now);
    if let Some(expires_at) = grant.expires_at {
        if expires_at <= now {
            return Err(Rejection::InvalidField {
                field: "expires_at",
                reason: "must be in the future".into(),
            });
        }
        if expires_at <= effective_at {
            return Err(Rejection::InvalidField {
                field: "expires_at",
                reason: "must be after effective_at".into(),
            });
        }
    }
    if account.bucket(&grant.grant_id).is_some() {
        return Err(Rejection::InvalidField {
            field: "grant_id",
            reason: "exists already".into(),
        });
    }
    Ok(Decision {
        events: vec![Event::CreditsGranted {
            at: now,
            grant_id: grant.grant_id.clone(),
            kind: grant.kind,
            source: grant.source.unwrap_or(grant.kind.default_source()),
            priority: grant.priority.unwrap_or(grant.kind.default_priority()),
            amount: grant.amount,
            effective_at,
            expires_at: grant.expires_at,
            cost_basis: grant.cost_basis.clone(),
            reference: grant.reference.clone(),
            upcoming: effective_at > now,
        }],
        outcome: Outcome::Granted {
            grant_id: grant.grant_id.clone(),
            overage_repaid: Millicredits::ZERO,
        },
    })
}

pub(super) fn decide_void_grant(
    account: &Account,
    grant_id: &GrantId,
    reason: &str,
    now: Timestamp,
) -> Result<Decision, Rejection> {
    let bucket = account
        .bucket(grant_id)
        .ok_or_else(|| Rejection::GrantNotFound {
            id: grant_id.clone(),
        })?;
    if bucket.voided {
        return Err(Rejection::GrantAlreadyVoided {
            id: grant_id.clone(),
        });
    }
    Ok(Decision {
        events: vec![Event::GrantVoided {
            at: now,
            grant_id: grant_id.clone(),
            amount: bucket.remaining,
            reason: reason.to_owned(),
        }],
        outcome: Outcome::Voided {
            amount: bucket.remaining,
        },
    })
}
