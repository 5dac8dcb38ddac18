//! A user's totals.

use super::*;

pub async fn user_stats(deps: &Deps, owner_id: &str, user_id: &str) -> Result<UserStats, DomainError> {
    let user_id = user_id_param(user_id)?;
    Ok(deps
        .store
        .totals
        .user_stats(owner_id, &user_id)
        .await?
        .unwrap_or(UserStats {
            user_id,
            ..UserStats::default()
        }))
}
