//! The decision, table-driven and by property.

use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::state::{Leader, Switchover};

const SYSID: &str = "7300000000000000001";

fn rules(name: &str) -> Rules {
    Rules {
        name: name.to_string(),
        nofailover: false,
        synchronous_mode: false,
        maximum_lag_on_failover: 1_048_576,
        restart_timeout: Duration::from_secs(30),
        rejoin_after: Duration::from_secs(5),
        conn: conn(name),
    }
}

fn conn(name: &str) -> String {
    member(name, Role::Replica, 0).conn
}

fn member(name: &str, role: Role, pos: u64) -> MemberState {
    crate::state::member_at(name, role, pos, SYSID)
}

fn replica(pos: u64, following: &str) -> Local {
    Local {
        data: Data::Present {
            system_identifier: SYSID.into(),
            standby: true,
        },
        pg: Pg::Running(Live {
            in_recovery: true,
            timeline: Some(1),
            received_lsn: Some(pos),
            replayed_lsn: Some(pos),
            streaming: true,
            following: Some(conn(following)),
            ..Live::default()
        }),
        down_for: Duration::ZERO,
        not_streaming_for: Duration::ZERO,
    }
}

fn primary(pos: u64) -> Local {
    Local {
        data: Data::Present {
            system_identifier: SYSID.into(),
            standby: false,
        },
        pg: Pg::Running(Live {
            in_recovery: false,
            timeline: Some(1),
            wal_lsn: Some(pos),
            ..Live::default()
        }),
        down_for: Duration::ZERO,
        not_streaming_for: Duration::ZERO,
    }
}

fn stopped(standby: bool) -> Local {
    Local {
        data: Data::Present {
            system_identifier: SYSID.into(),
            standby,
        },
        pg: Pg::Stopped,
        down_for: Duration::ZERO,
        not_streaming_for: Duration::ZERO,
    }
}

fn cluster(leader: Option<&str>, members: Vec<MemberState>, optime: u64) -> ClusterView {
    ClusterView {
        initialize: Some(SYSID.into()),
        leader: leader.map(|n| Leader {
            name: n.into(),
            term: 7,
        }),
        members,
        optime: Some(optime),
        ..ClusterView::default()
    }
}

fn run(me: &Local, r: &Rules, c: &ClusterView) -> Action {
    decide(View {
        me,
        rules: r,
        cluster: c,
    })
}

fn is_idle(a: &Action) -> bool {
    matches!(a, Action::Idle { .. })
}

#[test]
fn table() {
    let two = |lead: Option<&str>| {
        cluster(
            lead,
            vec![
                member("a", Role::Primary, 1000),
                member("b", Role::Replica, 1000),
            ],
            1000,
        )
    };
    let mut crashed = stopped(false);
    crashed.down_for = Duration::from_secs(31);
    let mut not_streaming = replica(900, "a");
    if let Pg::Running(l) = &mut not_streaming.pg {
        l.streaming = false;
    }
    not_streaming.not_streaming_for = Duration::from_secs(6);
    let mut other_cluster = replica(1000, "a");
    other_cluster.data = Data::Present {
        system_identifier: "42".into(),
        standby: true,
    };
    let missing = Local {
        data: Data::Missing,
        ..stopped(true)
    };
    let uninitialized = ClusterView::default();
    let missing_leader = Local {
        data: Data::Missing,
        ..stopped(true)
    };
    let mut no_init = cluster(None, vec![member("b", Role::Replica, 1000)], 1000);
    no_init.initialize = None;
    let mut no_init_leader = two(Some("a"));
    no_init_leader.initialize = None;

    #[rustfmt::skip]
    let cases: Vec<(&str, Local, Rules, ClusterView, Action)> = vec![
        ("empty etcd: bootstrap", missing.clone(), rules("a"), uninitialized.clone(), Action::Bootstrap),
        ("no data, a leader: clone", missing.clone(), rules("c"), two(Some("a")), Action::Clone { leader: "a".into() }),
        ("no data, no leader: wait", missing, rules("c"), two(None), idle("no leader to clone from yet")),
        ("leader, writable: lead", primary(1000), rules("a"), two(Some("a")), Action::Lead),
        ("leader, in recovery: promote", replica(1000, "a"), rules("b"), two(Some("b")), Action::Promote),
        ("leader, down: restart in place", stopped(false), rules("a"), two(Some("a")), Action::StartPrimary),
        ("leader, down too long: release", crashed, rules("a"), two(Some("a")), Action::Release),
        ("writable, another leads: demote", primary(1000), rules("a"), two(Some("b")), Action::Demote { why: "b holds the leader key".into() }),
        ("stopped old primary, a leader: rejoin", stopped(false), rules("a"), two(Some("b")), Action::Rejoin { leader: "b".into() }),
        ("stopped standby, a leader: start", stopped(true), rules("b"), two(Some("a")), Action::StartReplica { leader: Some("a".into()) }),
        ("following the old leader: re-point", replica(1000, "c"), rules("b"), two(Some("a")), Action::Follow { leader: "a".into() }),
        ("streaming: idle", replica(1000, "a"), rules("b"), two(Some("a")), idle("streaming from a")),
        ("not streaming for long: rejoin", not_streaming, rules("b"), two(Some("a")), Action::Rejoin { leader: "a".into() }),
        ("no leader, best replica: acquire", replica(1000, "a"), rules("b"), cluster(None, vec![member("b", Role::Replica, 1000)], 1000), Action::Acquire),
        ("no leader, stopped: start read-only", stopped(false), rules("a"), two(None), Action::StartReplica { leader: None }),
        ("leader whose data vanished: release", missing_leader.clone(), rules("a"), two(Some("a")), Action::Release),
        ("data, but etcd lost initialize: race, not bootstrap", replica(1000, "a"), rules("b"), no_init.clone(), Action::Acquire),
        ("no data, etcd lost initialize, a leader: wait", missing_leader, rules("c"), no_init_leader, idle("a leader exists but the cluster's system identifier is not recorded yet")),
        ("other cluster's data: refuse", other_cluster, rules("b"), two(Some("a")), Action::Refuse { why: String::new() }),
    ];
    for (what, me, r, c, want) in cases {
        let got = run(&me, &r, &c);
        let same = match (&want, &got) {
            (Action::Refuse { .. }, Action::Refuse { why }) => why.contains("belongs to system 42"),
            _ => got == want,
        };
        assert!(same, "{what}: want {want:?}, got {got:?}");
    }
}

#[test]
fn healthiest_replica_takes_over_and_the_others_wait() {
    let c = cluster(
        None,
        vec![
            member("b", Role::Replica, 900),
            member("c", Role::Replica, 1000),
            member("d", Role::Replica, 1000),
        ],
        1000,
    );
    assert_eq!(run(&replica(1000, "a"), &rules("c"), &c), Action::Acquire);
    assert_eq!(
        run(&replica(1000, "a"), &rules("d"), &c),
        idle("waiting for c to take over"),
        "same WAL: the first name wins"
    );
    assert!(is_idle(&run(&replica(900, "a"), &rules("b"), &c)));
}

#[test]
fn lag_nofailover_and_sync_rules_exclude_members() {
    let lagging = cluster(None, vec![member("b", Role::Replica, 0)], 2_000_000);
    let a = run(&replica(0, "a"), &rules("b"), &lagging);
    assert!(
        matches!(&a, Action::Idle { why } if why.contains("over maximum_lag_on_failover")),
        "{a:?}"
    );

    let mut r = rules("b");
    r.nofailover = true;
    let c = cluster(None, vec![], 1000);
    let a = run(&replica(1000, "a"), &r, &c);
    assert!(
        matches!(&a, Action::Idle { why } if why.contains("nofailover")),
        "{a:?}"
    );

    let mut r = rules("b");
    r.synchronous_mode = true;
    let mut c = cluster(
        None,
        vec![
            member("b", Role::Replica, 1000),
            member("c", Role::Replica, 900),
        ],
        1000,
    );
    c.sync = Some(SyncState {
        leader: "a".into(),
        sync_standby: Some("c".into()),
    });
    let a = run(&replica(1000, "a"), &r, &c);
    assert!(
        matches!(&a, Action::Idle { why } if why.contains("waiting for c")),
        "{a:?}"
    );
    let mut rc = rules("c");
    rc.synchronous_mode = true;
    assert_eq!(run(&replica(900, "a"), &rc, &c), Action::Acquire);
}

#[test]
fn forced_failover_ignores_the_lag_limit_only_for_its_target() {
    let mut c = cluster(
        None,
        vec![
            member("b", Role::Replica, 0),
            member("c", Role::Replica, 10),
        ],
        5_000_000,
    );
    c.switchover = Some(Switchover {
        from: None,
        to: Some("b".into()),
        forced: true,
        requested_ms: 0,
        expires_ms: u64::MAX,
    });
    assert_eq!(run(&replica(0, "a"), &rules("b"), &c), Action::Acquire);
    assert!(is_idle(&run(&replica(10, "a"), &rules("c"), &c)));
}

#[test]
fn switchover_waits_for_a_streaming_target() {
    let mut c = cluster(
        Some("a"),
        vec![
            member("a", Role::Primary, 1000),
            member("b", Role::Replica, 1000),
        ],
        1000,
    );
    c.switchover = Some(Switchover {
        from: Some("a".into()),
        to: Some("b".into()),
        forced: false,
        requested_ms: 0,
        expires_ms: u64::MAX,
    });
    assert_eq!(
        run(&primary(1000), &rules("a"), &c),
        Action::StepDown {
            to: "b".into(),
            forced: false
        }
    );
    c.members[1].streaming = false;
    assert_eq!(run(&primary(1000), &rules("a"), &c), Action::Lead);
    c.members[1].streaming = true;
    c.switchover.as_mut().unwrap().from = Some("z".into());
    assert_eq!(run(&primary(1000), &rules("a"), &c), Action::Lead);
}

#[test]
fn paused_cluster_takes_no_action() {
    let mut c = cluster(None, vec![member("b", Role::Replica, 1000)], 1000);
    c.paused = true;
    assert!(is_idle(&run(&replica(1000, "a"), &rules("b"), &c)));
    assert!(is_idle(&run(&stopped(true), &rules("b"), &c)));
    c.leader = Some(Leader {
        name: "a".into(),
        term: 1,
    });
    assert!(
        is_idle(&run(&stopped(false), &rules("a"), &c)),
        "no restart while paused"
    );
    assert_eq!(
        run(&primary(1), &rules("a"), &c),
        Action::Lead,
        "the leader keeps its key"
    );
    assert!(
        is_idle(&run(&primary(1), &rules("b"), &c)),
        "no demotion while paused"
    );
}

#[test]
fn fencing() {
    let d = Duration::from_secs(3);
    assert!(!must_fence(Duration::from_millis(2999), d, false));
    assert!(must_fence(d, d, false));
    assert!(!must_fence(Duration::from_secs(60), d, true));
}

fn sender(name: &str, streaming: bool, sync: bool, flush: u64) -> Sender {
    Sender {
        application_name: name.into(),
        streaming,
        sync,
        flush_lsn: flush,
    }
}

fn key(leader: &str, s: Option<&str>) -> SyncState {
    SyncState {
        leader: leader.into(),
        sync_standby: s.map(str::to_string),
    }
}

#[test]
fn sync_steps() {
    let none = key("a", None);
    #[rustfmt::skip]
    type Case = (&'static str, Option<SyncState>, &'static str, Vec<Sender>, SyncStep);
    let cases: Vec<Case> = vec![
        (
            "no key: claim it",
            None,
            "",
            vec![],
            SyncStep::WriteKey(none.clone()),
        ),
        (
            "old leader's key: claim it",
            Some(key("z", Some("a"))),
            "",
            vec![],
            SyncStep::WriteKey(none.clone()),
        ),
        (
            "no standby: keep async",
            Some(none.clone()),
            "",
            vec![],
            SyncStep::Keep,
        ),
        (
            "a streaming standby: name it",
            Some(none.clone()),
            "",
            vec![sender("b", true, false, 5)],
            SyncStep::SetStandbyNames("b".into()),
        ),
        (
            "named, not yet sync: wait",
            Some(none.clone()),
            "b",
            vec![sender("b", true, false, 5)],
            SyncStep::Keep,
        ),
        (
            "named and sync: record it",
            Some(none.clone()),
            "b",
            vec![sender("b", true, true, 5)],
            SyncStep::WriteKey(key("a", Some("b"))),
        ),
        (
            "recorded and healthy: keep",
            Some(key("a", Some("b"))),
            "b",
            vec![sender("b", true, true, 5)],
            SyncStep::Keep,
        ),
        (
            "recorded standby gone: unrecord first",
            Some(key("a", Some("b"))),
            "b",
            vec![sender("c", true, false, 5)],
            SyncStep::WriteKey(none.clone()),
        ),
        (
            "unrecorded, gone: name the other",
            Some(none.clone()),
            "b",
            vec![sender("c", true, false, 5)],
            SyncStep::SetStandbyNames("c".into()),
        ),
        (
            "none left: async",
            Some(none.clone()),
            "b",
            vec![],
            SyncStep::SetStandbyNames(String::new()),
        ),
        (
            "recorded but not named: unrecord first",
            Some(key("a", Some("b"))),
            "",
            vec![sender("b", true, false, 5)],
            SyncStep::WriteKey(none.clone()),
        ),
    ];
    for (what, k, ssn, senders, want) in cases {
        assert_eq!(
            sync_step("a", k.as_ref(), ssn, &senders, &[]),
            want,
            "{what}"
        );
    }
    assert_eq!(
        sync_step(
            "a",
            Some(&none),
            "",
            &[sender("b", true, false, 5)],
            &["b".into()]
        ),
        SyncStep::Keep,
        "an excluded member is never named"
    );
}

// Properties over random clusters.

fn arb_member(name: &'static str) -> impl Strategy<Value = MemberState> {
    (
        prop_oneof![
            Just(Role::Replica),
            Just(Role::Primary),
            Just(Role::Stopped)
        ],
        0u64..3_000_000,
        any::<bool>(),
        any::<bool>(),
        prop::bool::weighted(0.1),
    )
        .prop_map(move |(role, pos, streaming, nofailover, foreign)| {
            let mut m = member(name, role, pos);
            m.streaming = streaming && role == Role::Replica;
            m.nofailover = nofailover;
            if foreign {
                m.system_identifier = Some("other".into());
            }
            m
        })
}

fn arb_cluster() -> impl Strategy<Value = (ClusterView, bool)> {
    (
        prop::collection::vec(arb_member("x"), 0..1),
        arb_member("a"),
        arb_member("b"),
        arb_member("c"),
        0u64..3_000_000,
        prop::option::of(prop_oneof![Just("a"), Just("b"), Just("c")]),
        any::<bool>(),
    )
        .prop_map(|(_, a, b, c, optime, sync, sync_mode)| {
            let mut view = cluster(None, vec![a, b, c], optime);
            view.sync = Some(SyncState {
                leader: "z".into(),
                sync_standby: sync.map(str::to_string),
            });
            (view, sync_mode)
        })
}

/// Each member's own facts, matching what it published.
fn local_of(m: &MemberState) -> Local {
    let standby = m.role != Role::Primary;
    let data = Data::Present {
        system_identifier: m.system_identifier.clone().unwrap_or_default(),
        standby,
    };
    let pg = match m.role {
        Role::Primary => Pg::Running(Live {
            in_recovery: false,
            wal_lsn: m.wal_lsn,
            ..Live::default()
        }),
        Role::Replica => Pg::Running(Live {
            in_recovery: true,
            received_lsn: m.received_lsn,
            replayed_lsn: m.replayed_lsn,
            streaming: m.streaming,
            ..Live::default()
        }),
        _ => Pg::Stopped,
    };
    Local {
        data,
        pg,
        down_for: Duration::ZERO,
        not_streaming_for: Duration::ZERO,
    }
}

fn rules_of(m: &MemberState, sync_mode: bool) -> Rules {
    let mut r = rules(&m.name);
    r.nofailover = m.nofailover;
    r.synchronous_mode = sync_mode;
    r
}

proptest! {
    /// With no leader, at most one member takes the key, and the one that does is eligible:
    /// within the lag limit, not nofailover, the sync standby in synchronous mode.
    #[test]
    fn at_most_one_member_acquires((view, sync_mode) in arb_cluster()) {
        let acquirers: Vec<&MemberState> = view
            .members
            .iter()
            .filter(|m| {
                let (me, r) = (local_of(m), rules_of(m, sync_mode));
                run(&me, &r, &view) == Action::Acquire
            })
            .collect();
        prop_assert!(acquirers.len() <= 1, "{:?}", acquirers.iter().map(|m| &m.name).collect::<Vec<_>>());
        if let Some(m) = acquirers.first() {
            prop_assert!(!m.nofailover);
            let behind = view.optime.unwrap().saturating_sub(m.wal_position().unwrap_or(0));
            prop_assert!(behind <= 1_048_576, "{behind}");
            prop_assert_eq!(m.system_identifier.as_deref(), Some(SYSID));
            if sync_mode {
                prop_assert_eq!(
                    view.sync.as_ref().unwrap().sync_standby.as_deref(),
                    Some(m.name.as_str())
                );
            }
        }
    }

    /// Only the holder of the leader key promotes or leads; every other writable member is
    /// demoted; so at most one member is writable per term.
    #[test]
    fn only_the_key_holder_promotes((mut view, sync_mode) in arb_cluster(), leader in prop_oneof![Just("a"), Just("b"), Just("c")]) {
        view.leader = Some(Leader { name: leader.into(), term: 3 });
        for m in &view.members {
            let (me, r) = (local_of(m), rules_of(m, sync_mode));
            let a = run(&me, &r, &view);
            match a {
                Action::Promote | Action::Lead | Action::StartPrimary | Action::Acquire => {
                    prop_assert_eq!(m.name.as_str(), leader, "{:?}", a)
                }
                _ => {}
            }
            if m.name != leader && m.role == Role::Primary && m.system_identifier.as_deref() == Some(SYSID) {
                let demoted = matches!(a, Action::Demote { .. });
                prop_assert!(demoted, "{:?}", a);
            }
        }
    }

    /// The sync key never names a standby the server does not report synchronous, and a
    /// recorded standby leaves the key before it leaves synchronous_standby_names.
    #[test]
    fn sync_key_only_names_a_synchronous_standby(
        recorded in prop::option::of(prop_oneof![Just("b"), Just("c")]),
        ssn in prop_oneof![Just(""), Just("b"), Just("c")],
        b in (any::<bool>(), any::<bool>(), 0u64..100),
        c in (any::<bool>(), any::<bool>(), 0u64..100),
    ) {
        let senders = vec![sender("b", b.0, b.0 && b.1, b.2), sender("c", c.0, c.0 && c.1, c.2)];
        let k = key("a", recorded);
        match sync_step("a", Some(&k), ssn, &senders, &[]) {
            SyncStep::WriteKey(SyncState { sync_standby: Some(s), .. }) => {
                prop_assert_eq!(s.as_str(), ssn);
                prop_assert!(senders.iter().any(|x| x.application_name == s && x.sync));
            }
            SyncStep::SetStandbyNames(_) => {
                prop_assert!(recorded.is_none(), "names change only while no standby is recorded");
            }
            _ => {}
        }
    }
}
