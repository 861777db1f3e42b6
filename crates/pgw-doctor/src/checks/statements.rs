//! Statement statistics from pg_stat_statements: slow_queries.

use super::{CheckInfo, Ctx};
use crate::model::Finding;

/// The checks of this module, in the order they run.
pub(super) const CHECKS: &[CheckInfo] = &[];

/// Runs check `id` if it is one of this module's.
pub(super) async fn run(
    id: &str,
    ctx: &Ctx<'_>,
) -> Option<Result<Vec<Finding>, tokio_postgres::Error>> {
    let _ = (id, ctx);
    None
}
