//! Checks on objects left in a bad state: prepared transactions left open, constraints
//! not validated, disabled triggers, and sequences judged against the columns they feed.
//! Each test plants the problem, sees the finding, runs the remediation the finding gave,
//! and sees the finding gone.

use pgw_cluster::Cluster;
use pgw_doctor::{Options, Severity, Thresholds};

use crate::{doctor, found, remediate};

#[tokio::test]
async fn prepared_transaction_found_and_rolled_back() {
    let c = Cluster::builder()
        .setting("max_prepared_transactions", "5")
        .start()
        .expect("start a cluster with max_prepared_transactions");
    c.psql("postgres", "CREATE DATABASE \"Two phase\";")
        .unwrap();
    c.psql(
        "Two phase",
        r#"CREATE ROLE mon LOGIN PASSWORD 'mon-pw' IN ROLE pg_monitor;
           CREATE TABLE public.t (id int);
           BEGIN; INSERT INTO public.t VALUES (1); PREPARE TRANSACTION 'it''s pending';"#,
    )
    .unwrap();
    // Not old enough under the default limit.
    let report = doctor(&c, "prepared_transactions", &[]).await;
    assert!(report.findings.is_empty(), "{:#?}", report.findings);

    let report = doctor(
        &c,
        "prepared_transactions",
        &["prepared_xact_warning_secs=0"],
    )
    .await;
    let f = found(&report, "prepared_transactions", "pending");
    assert_eq!(f.len(), 1, "{:#?}", report.findings);
    let f = f[0].clone();
    assert_eq!(f.severity, Severity::Warning, "{f:#?}");
    assert_eq!(f.database.as_deref(), Some("Two phase"));
    assert_eq!(
        f.object.as_deref(),
        Some("prepared transaction 'it''s pending'")
    );
    assert!(f.detail.contains("owner "), "{}", f.detail);
    assert!(f.detail.contains("\"Two phase\""), "{}", f.detail);
    assert_eq!(f.remediation, ["ROLLBACK PREPARED 'it''s pending';"]);
    let report = doctor(
        &c,
        "prepared_transactions",
        &[
            "prepared_xact_warning_secs=0",
            "prepared_xact_critical_secs=0",
        ],
    )
    .await;
    assert_eq!(
        found(&report, "prepared_transactions", "pending")[0].severity,
        Severity::Critical
    );
    // pg_prepared_xacts is readable by a pg_monitor role.
    let mut t = Thresholds::default();
    t.set("prepared_xact_warning_secs=0").unwrap();
    let opts = Options {
        dsn: Some(c.dsn_for("mon", "mon-pw", "postgres")),
        dbname: None,
        only: Some("prepared_transactions".to_string()),
        thresholds: t,
        host: Default::default(),
    };
    let report = pgw_doctor::run(&opts).await.expect("doctor runs as mon");
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert_eq!(found(&report, "prepared_transactions", "pending").len(), 1);

    remediate(&c, &f);
    let report = doctor(
        &c,
        "prepared_transactions",
        &["prepared_xact_warning_secs=0"],
    )
    .await;
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    assert_eq!(
        c.psql("Two phase", "SELECT count(*) FROM public.t;")
            .unwrap()
            .trim(),
        "0"
    );
}

#[tokio::test]
async fn not_valid_constraints_found_and_validated() {
    let c = crate::cluster();
    c.psql(
        "postgres",
        r#"CREATE ROLE mon LOGIN PASSWORD 'mon-pw' IN ROLE pg_monitor;
           CREATE SCHEMA "Shop";
           CREATE TABLE "Shop"."Customer" (id int PRIMARY KEY);
           CREATE TABLE "Shop".orders (id int, customer_id int, qty int);
           INSERT INTO "Shop"."Customer" VALUES (1);
           INSERT INTO "Shop".orders VALUES (1, 1, 5);
           ALTER TABLE "Shop".orders ADD CONSTRAINT "orders customer fk"
                 FOREIGN KEY (customer_id) REFERENCES "Shop"."Customer" NOT VALID;
           ALTER TABLE "Shop".orders ADD CONSTRAINT qty_positive CHECK (qty > 0) NOT VALID;
           -- validated ones are not reported
           ALTER TABLE "Shop".orders ADD CONSTRAINT id_positive CHECK (id > 0) NOT VALID;
           ALTER TABLE "Shop".orders VALIDATE CONSTRAINT id_positive;
           ALTER TABLE "Shop".orders ADD CONSTRAINT qty_small CHECK (qty < 1000);"#,
    )
    .unwrap();
    let report = doctor(&c, "not_valid_constraints", &[]).await;
    assert_eq!(report.findings.len(), 2, "{:#?}", report.findings);
    let fk = found(&report, "not_valid_constraints", "customer fk");
    assert_eq!(fk.len(), 1, "{:#?}", report.findings);
    let fk = fk[0].clone();
    assert_eq!(fk.severity, Severity::Warning);
    assert_eq!(fk.database.as_deref(), Some("postgres"));
    assert_eq!(
        fk.object.as_deref(),
        Some("\"Shop\".orders.\"orders customer fk\"")
    );
    assert!(fk.detail.contains("foreign key"), "{}", fk.detail);
    assert_eq!(
        fk.remediation,
        ["ALTER TABLE \"Shop\".\"orders\" VALIDATE CONSTRAINT \"orders customer fk\";"]
    );
    let check = found(&report, "not_valid_constraints", "qty_positive");
    assert_eq!(check.len(), 1, "{:#?}", report.findings);
    let check = check[0].clone();
    assert_eq!(
        check.remediation,
        ["ALTER TABLE \"Shop\".\"orders\" VALIDATE CONSTRAINT \"qty_positive\";"]
    );

    // A pg_monitor role sees the same.
    let mon = doctor_as(&c, "not_valid_constraints").await;
    assert!(mon.skipped.is_empty(), "{:?}", mon.skipped);
    assert_eq!(mon.findings, report.findings);

    remediate(&c, &fk);
    remediate(&c, &check);
    let report = doctor(&c, "not_valid_constraints", &[]).await;
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
}

#[tokio::test]
async fn disabled_triggers_found_and_enabled() {
    let c = crate::cluster();
    c.psql(
        "postgres",
        r#"CREATE ROLE mon LOGIN PASSWORD 'mon-pw' IN ROLE pg_monitor;
           CREATE TABLE public."Audit" (id int PRIMARY KEY, n int);
           CREATE TABLE public.child (id int REFERENCES public."Audit");
           CREATE FUNCTION public.bump() RETURNS trigger LANGUAGE plpgsql
                  AS $$ BEGIN NEW.n := coalesce(NEW.n, 0) + 1; RETURN NEW; END $$;
           CREATE TRIGGER "Bump it" BEFORE INSERT ON public."Audit"
                  FOR EACH ROW EXECUTE FUNCTION public.bump();
           CREATE TRIGGER on_replica BEFORE INSERT ON public."Audit"
                  FOR EACH ROW EXECUTE FUNCTION public.bump();
           CREATE TRIGGER enabled_one BEFORE INSERT ON public."Audit"
                  FOR EACH ROW EXECUTE FUNCTION public.bump();
           ALTER TABLE public."Audit" DISABLE TRIGGER "Bump it";
           ALTER TABLE public."Audit" ENABLE REPLICA TRIGGER on_replica;
           -- the foreign key's internal triggers, disabled too: not reported
           ALTER TABLE public.child DISABLE TRIGGER ALL;"#,
    )
    .unwrap();
    let report = doctor(&c, "disabled_triggers", &[]).await;
    assert_eq!(report.findings.len(), 1, "{:#?}", report.findings);
    let f = report.findings[0].clone();
    assert_eq!(f.check, "disabled_triggers");
    assert_eq!(f.severity, Severity::Warning);
    assert_eq!(f.database.as_deref(), Some("postgres"));
    assert_eq!(f.object.as_deref(), Some("public.\"Audit\".\"Bump it\""));
    assert_eq!(
        f.remediation,
        ["ALTER TABLE \"public\".\"Audit\" ENABLE TRIGGER \"Bump it\";"]
    );

    let mon = doctor_as(&c, "disabled_triggers").await;
    assert!(mon.skipped.is_empty(), "{:?}", mon.skipped);
    assert_eq!(mon.findings, report.findings);

    remediate(&c, &f);
    let report = doctor(&c, "disabled_triggers", &[]).await;
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    assert_eq!(
        c.psql(
            "postgres",
            "INSERT INTO public.\"Audit\" (id) VALUES (1) RETURNING n;"
        )
        .unwrap()
        .trim(),
        "2"
    );
}

/// Runs one check as the pg_monitor role `mon` (password `mon-pw`), default thresholds; the
/// caller looks at what was skipped.
async fn doctor_as(c: &Cluster, check: &str) -> pgw_doctor::Report {
    let opts = Options {
        dsn: Some(c.dsn_for("mon", "mon-pw", "postgres")),
        dbname: None,
        only: Some(check.to_string()),
        thresholds: Thresholds::default(),
        host: Default::default(),
    };
    pgw_doctor::run(&opts).await.expect("doctor runs as mon")
}

/// A sequence feeding columns through a plain `DEFAULT nextval(..)` (no OWNED BY) is judged
/// against the narrowest of them; a pg_monitor role gets each sequence it cannot read as a
/// skipped entry of its own.
#[tokio::test]
async fn sequence_judged_against_its_narrowest_default_column() {
    let c = crate::cluster();
    c.psql(
        "postgres",
        r#"CREATE ROLE mon LOGIN PASSWORD 'mon-pw' IN ROLE pg_monitor;
           CREATE SCHEMA "S";
           CREATE SEQUENCE public.plain_seq;
           CREATE TABLE public.wide (id bigint DEFAULT nextval('public.plain_seq'));
           CREATE TABLE "S"."Narrow" (id int DEFAULT nextval('public.plain_seq'));
           SELECT setval('public.plain_seq', 2040109466);
           CREATE SEQUENCE "S"."other seq";
           SELECT nextval('"S"."other seq"');"#,
    )
    .unwrap();
    let report = doctor(&c, "sequence_exhaustion", &[]).await;
    let f = found(&report, "sequence_exhaustion", "plain_seq");
    assert_eq!(f.len(), 1, "{:#?}", report.findings);
    let f = f[0].clone();
    assert_eq!(f.severity, Severity::Critical, "{f:#?}");
    assert!(f.detail.contains("\"S\".\"Narrow\".id"), "{}", f.detail);
    assert!(f.detail.contains("column type"), "{}", f.detail);
    assert_eq!(
        f.remediation,
        [
            "ALTER TABLE \"S\".\"Narrow\" ALTER COLUMN \"id\" TYPE bigint;",
            "ALTER SEQUENCE \"public\".\"plain_seq\" AS bigint NO MAXVALUE;"
        ]
    );
    assert_eq!(report.findings.len(), 1, "{:#?}", report.findings);

    // pg_monitor cannot read either sequence: one skipped entry each, no finding.
    let mon = doctor_as(&c, "sequence_exhaustion").await;
    assert!(mon.findings.is_empty(), "{:#?}", mon.findings);
    let mut objects: Vec<&str> = mon
        .skipped
        .iter()
        .filter(|s| s.check == "sequence_exhaustion")
        .filter_map(|s| s.object.as_deref())
        .collect();
    objects.sort();
    assert_eq!(
        objects,
        ["\"S\".\"other seq\"", "public.plain_seq"],
        "{:#?}",
        mon.skipped
    );
    let plain = mon
        .skipped
        .iter()
        .find(|s| s.object.as_deref() == Some("public.plain_seq"))
        .unwrap();
    assert_eq!(plain.database.as_deref(), Some("postgres"));
    assert!(
        plain
            .reason
            .contains("GRANT SELECT ON SEQUENCE \"public\".\"plain_seq\""),
        "{}",
        plain.reason
    );
    // Granted, the role judges it as the superuser does.
    c.psql(
        "postgres",
        "GRANT SELECT ON SEQUENCE public.plain_seq TO mon;",
    )
    .unwrap();
    let mon = doctor_as(&c, "sequence_exhaustion").await;
    assert_eq!(mon.findings, report.findings);
    assert_eq!(mon.skipped.len(), 1, "{:#?}", mon.skipped);

    remediate(&c, &f);
    let report = doctor(&c, "sequence_exhaustion", &[]).await;
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    c.psql(
        "postgres",
        r#"SELECT setval('public.plain_seq', 3000000000);
           INSERT INTO "S"."Narrow" DEFAULT VALUES;"#,
    )
    .unwrap();
}
