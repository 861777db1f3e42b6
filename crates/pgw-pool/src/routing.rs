//! The pool's decisions as pure functions over data, tested table-driven and with
//! property tests: which host a new server connection tries first and whether it keeps
//! what it found (`target_session_attrs`), and which idle connections the sweeper closes.

use std::time::Duration;

use crate::config::TargetSessionAttrs;

/// What to do with a host that answered `pg_is_in_recovery()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Use it.
    Take,
    /// Keep it in case nothing better answers (prefer-standby found a primary).
    Fallback,
    /// Close it and try the next.
    Skip,
}

/// The verdict for a host in (or out of) recovery.
pub fn verdict(tsa: TargetSessionAttrs, in_recovery: bool) -> Verdict {
    match (tsa, in_recovery) {
        (TargetSessionAttrs::Any, _) => Verdict::Take,
        (TargetSessionAttrs::ReadWrite, false) | (TargetSessionAttrs::ReadOnly, true) => {
            Verdict::Take
        }
        (TargetSessionAttrs::ReadWrite, true) | (TargetSessionAttrs::ReadOnly, false) => {
            Verdict::Skip
        }
        (TargetSessionAttrs::PreferStandby, true) => Verdict::Take,
        (TargetSessionAttrs::PreferStandby, false) => Verdict::Fallback,
    }
}

/// The order in which `n` hosts are tried: `any` goes in list order, as PgBouncer does;
/// the others start at the host that answered last time (`last`), and read-write starts
/// at the host `pgwarden ha` names the primary (`ha_primary`) when it names one. Every
/// host appears exactly once.
pub fn host_order(
    tsa: TargetSessionAttrs,
    n: usize,
    last: usize,
    ha_primary: Option<usize>,
) -> Vec<usize> {
    if n == 0 {
        return Vec::new();
    }
    let start = match (tsa, ha_primary) {
        (TargetSessionAttrs::Any, _) => 0,
        (TargetSessionAttrs::ReadWrite, Some(p)) if p < n => p,
        _ => last % n,
    };
    (0..n).map(|k| (start + k) % n).collect()
}

/// One idle connection as the sweeper sees it.
#[derive(Debug, Clone, Copy)]
pub struct Idle {
    /// Since it logged in.
    pub age: Duration,
    /// Since it was last given back.
    pub idle: Duration,
    /// Of the pool's current generation (not replaced by RECONNECT or a reload).
    pub current: bool,
}

/// Which idle connections to close (true = close), oldest-idle first in `idle`: those
/// past `lifetime`, those of an old generation, and those idle past `idle_timeout` as
/// long as the pool keeps `min_size` connections (`active` are lent out).
pub fn sweep(
    idle: &[Idle],
    active: usize,
    min_size: usize,
    lifetime: Option<Duration>,
    idle_timeout: Option<Duration>,
) -> Vec<bool> {
    let old = |s: &Idle| lifetime.is_some_and(|l| s.age >= l) || !s.current;
    // Those that go anyway are not counted towards min_size.
    let mut total = idle.iter().filter(|s| !old(s)).count() + active;
    idle.iter()
        .map(|s| {
            if old(s) {
                return true;
            }
            let close = idle_timeout.is_some_and(|t| s.idle >= t) && total > min_size;
            if close {
                total -= 1;
            }
            close
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use TargetSessionAttrs::*;

    #[test]
    fn verdicts() {
        let table = [
            (Any, false, Verdict::Take),
            (Any, true, Verdict::Take),
            (ReadWrite, false, Verdict::Take),
            (ReadWrite, true, Verdict::Skip),
            (ReadOnly, true, Verdict::Take),
            (ReadOnly, false, Verdict::Skip),
            (PreferStandby, true, Verdict::Take),
            (PreferStandby, false, Verdict::Fallback),
        ];
        for (tsa, rec, want) in table {
            assert_eq!(verdict(tsa, rec), want, "{tsa:?} in_recovery={rec}");
        }
    }

    #[test]
    fn orders() {
        assert_eq!(host_order(Any, 3, 2, Some(1)), vec![0, 1, 2]);
        assert_eq!(host_order(ReadWrite, 3, 2, None), vec![2, 0, 1]);
        assert_eq!(host_order(ReadWrite, 3, 2, Some(1)), vec![1, 2, 0]);
        assert_eq!(host_order(ReadWrite, 3, 0, Some(7)), vec![0, 1, 2]);
        assert_eq!(host_order(ReadOnly, 2, 5, Some(0)), vec![1, 0]);
        assert!(host_order(ReadWrite, 0, 0, None).is_empty());
    }

    fn idle(age: u64, idle: u64) -> Idle {
        Idle {
            age: Duration::from_secs(age),
            idle: Duration::from_secs(idle),
            current: true,
        }
    }

    #[test]
    fn sweeping() {
        let s = Some(Duration::from_secs(600));
        let l = Some(Duration::from_secs(3600));
        // Two idle long, min 2 with one active: only one may go.
        assert_eq!(
            sweep(&[idle(700, 700), idle(700, 650), idle(10, 5)], 1, 2, l, s),
            vec![true, true, false]
        );
        assert_eq!(
            sweep(&[idle(700, 700), idle(700, 650)], 1, 3, l, s),
            vec![false, false]
        );
        // Past its lifetime: closed even under min_pool_size.
        assert_eq!(sweep(&[idle(4000, 1)], 0, 5, l, s), vec![true]);
        let stale = Idle {
            current: false,
            ..idle(1, 1)
        };
        assert_eq!(sweep(&[stale], 0, 5, l, s), vec![true]);
        assert_eq!(sweep(&[idle(9999, 9999)], 0, 0, None, None), vec![false]);
    }

    proptest! {
        #[test]
        fn every_host_once(n in 0usize..8, last in 0usize..20, p in proptest::option::of(0usize..10), t in 0u8..4) {
            let tsa = [Any, ReadWrite, ReadOnly, PreferStandby][t as usize];
            let mut o = host_order(tsa, n, last, p);
            if let (ReadWrite, Some(p)) = (tsa, p) {
                if p < n { prop_assert_eq!(o[0], p); }
            }
            o.sort_unstable();
            prop_assert_eq!(o, (0..n).collect::<Vec<_>>());
        }

        #[test]
        fn sweep_keeps_min_size_of_fresh_connections(
            ages in proptest::collection::vec((0u64..5000, 0u64..2000), 0..12),
            active in 0usize..5, min in 0usize..10,
        ) {
            // Idle time never exceeds age.
            let idle: Vec<Idle> = ages.iter().map(|(a, i)| idle(*a, (*i).min(*a))).collect();
            let life = Some(Duration::from_secs(3600));
            let plan = sweep(&idle, active, min, life, Some(Duration::from_secs(600)));
            let kept = plan.iter().filter(|c| !**c).count() + active;
            let young = idle.iter().filter(|s| s.age < Duration::from_secs(3600)).count() + active;
            // Idleness alone never takes the pool below min_size.
            prop_assert!(kept >= min.min(young));
            for (s, c) in idle.iter().zip(&plan) {
                if s.age >= Duration::from_secs(3600) { prop_assert!(*c); }
                if s.idle < Duration::from_secs(600) && s.age < Duration::from_secs(3600) { prop_assert!(!*c); }
            }
        }
    }
}
