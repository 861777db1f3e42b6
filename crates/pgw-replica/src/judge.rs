//! Whether a standby meets the replication-lag target: pure functions over what the
//! server reported, so the rules are tested without a server.

/// A primary's view of one standby (`pg_stat_replication`): it meets the target when it
/// is streaming and its replay lag is at most `target_ms`. PostgreSQL reports the lag as
/// NULL once a standby has replayed everything and the primary has been idle: caught up,
/// so met. Any other state (startup, catchup, backup, stopping) is not streaming: missed.
pub fn standby_meets(state: &str, replay_lag_ms: Option<f64>, target_ms: f64) -> bool {
    state == "streaming" && replay_lag_ms.is_none_or(|l| l <= target_ms)
}

/// A standby's own replay delay: the age of the last replayed commit while received WAL
/// waits to be replayed; nothing waiting is no delay (an idle primary sends no commits,
/// and the age of the last one says nothing then).
pub fn replay_delay_ms(received_unreplayed: bool, last_replay_age_ms: Option<f64>) -> f64 {
    if received_unreplayed {
        last_replay_age_ms.unwrap_or(0.0).max(0.0)
    } else {
        0.0
    }
}

/// A standby's view of itself: it meets the target when its WAL receiver streams, replay
/// is not paused, and its replay delay is at most `target_ms`.
pub fn receiver_meets(streaming: bool, paused: bool, delay_ms: f64, target_ms: f64) -> bool {
    streaming && !paused && delay_ms <= target_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_primarys_standbys() {
        let cases: &[(&str, Option<f64>, bool)] = &[
            ("streaming", None, true),
            ("streaming", Some(0.4), true),
            ("streaming", Some(500.0), true),
            ("streaming", Some(500.1), false),
            ("catchup", None, false),
            ("startup", Some(1.0), false),
            ("backup", None, false),
            ("stopping", None, false),
        ];
        for &(state, lag, want) in cases {
            assert_eq!(standby_meets(state, lag, 500.0), want, "{state} {lag:?}");
        }
    }

    #[test]
    fn a_standby_itself() {
        assert_eq!(replay_delay_ms(false, Some(3_600_000.0)), 0.0);
        assert_eq!(replay_delay_ms(true, Some(750.0)), 750.0);
        assert_eq!(replay_delay_ms(true, None), 0.0);
        assert_eq!(replay_delay_ms(true, Some(-3.0)), 0.0);
        let cases: &[(bool, bool, f64, bool)] = &[
            (true, false, 0.0, true),
            (true, false, 500.0, true),
            (true, false, 501.0, false),
            (false, false, 0.0, false),
            (true, true, 0.0, false),
        ];
        for &(streaming, paused, delay, want) in cases {
            assert_eq!(
                receiver_meets(streaming, paused, delay, 500.0),
                want,
                "{streaming} {paused} {delay}"
            );
        }
    }
}
