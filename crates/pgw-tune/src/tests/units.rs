//! Unit tests of `units.rs`.

use super::*;

#[test]
fn format_kb_table() {
    let cases = [
        (2_097_152, "2GB"),
        (1_572_864, "1536MB"),
        (10_280, "10280kB"),
        (16_384, "16MB"),
        (4_096, "4MB"),
        (8_388_608, "8GB"),
        (32, "32kB"),
        (7_864, "7864kB"),
        (102_400, "100MB"),
        (1_048_575, "1048575kB"),
    ];
    for (kb, want) in cases {
        assert_eq!(format_kb(kb), want, "{kb}");
    }
}

#[test]
fn parse_memory_accepts_sizes_with_units() {
    let cases = [
        ("8GB", 8 * KB_PER_GB),
        ("8 GB", 8 * KB_PER_GB),
        ("  8gb ", 8 * KB_PER_GB),
        ("512MB", 512 * KB_PER_MB),
        ("2048MB", 2 * KB_PER_GB),
        ("1TB", 1024 * KB_PER_GB),
        ("16G", 16 * KB_PER_GB),
        ("16GiB", 16 * KB_PER_GB),
        ("1.5GB", 1_572_864),
        ("1048576kB", KB_PER_GB),
        ("1024K", 1024),
        ("2147483648B", 2 * KB_PER_GB),
        ("+4GB", 4 * KB_PER_GB),
    ];
    for (s, want) in cases {
        assert_eq!(parse_memory(s), Ok(want), "{s}");
    }
}

#[test]
fn parse_memory_rejects_with_one_line_messages() {
    let cases = [
        ("8", "invalid memory size '8': add a unit: 8GB"),
        ("2048", "invalid memory size '2048': add a unit: 2048GB"),
        (
            "-3GB",
            "invalid memory size '-3GB': must be a positive size like 8GB",
        ),
        (
            "0GB",
            "invalid memory size '0GB': must be a positive size like 8GB",
        ),
        (
            "0.0001kB",
            "invalid memory size '0.0001kB': must be a positive size like 8GB",
        ),
        (
            "",
            "invalid memory size '': must be a positive size like 8GB",
        ),
        (
            "abc",
            "invalid memory size 'abc': must be a positive size like 8GB",
        ),
        (
            "GB",
            "invalid memory size 'GB': must be a positive size like 8GB",
        ),
        (
            "1.2.3GB",
            "invalid memory size '1.2.3GB': must be a positive size like 8GB",
        ),
        (
            "8XB",
            "invalid memory size '8XB': unknown unit 'XB' (use kB, MB, GB or TB)",
        ),
        (
            "8 GB extra",
            "invalid memory size '8 GB extra': unknown unit 'GB extra' (use kB, MB, GB or TB)",
        ),
        (
            "99999999999999TB",
            "invalid memory size '99999999999999TB': too large",
        ),
    ];
    for (s, want) in cases {
        let err = parse_memory(s).unwrap_err().to_string();
        assert_eq!(err, want, "{s}");
        assert!(!err.contains('\n'));
    }
}

#[test]
fn to_unit_table() {
    let cases: &[(&str, &str, Option<f64>)] = &[
        ("2GB", "8kB", Some(262_144.0)),
        ("2GB", "kB", Some(2_097_152.0)),
        ("2GB", "MB", Some(2048.0)),
        ("2GB", "B", Some(2_147_483_648.0)),
        ("10280kB", "kB", Some(10_280.0)),
        ("10280kB", "8kB", Some(1285.0)),
        ("16MB", "8kB", Some(2048.0)),
        ("1GB", "16MB", Some(64.0)),
        ("30s", "s", Some(30.0)),
        ("1min", "s", Some(60.0)),
        ("1min", "ms", Some(60_000.0)),
        ("2ms", "ms", Some(2.0)),
        ("500us", "ms", Some(0.5)),
        ("1h", "min", Some(60.0)),
        ("1d", "h", Some(24.0)),
        ("0.9", "", Some(0.9)),
        ("200", "", Some(200.0)),
        ("-1", "kB", Some(-1.0)),
        ("16384", "8kB", Some(16_384.0)),
        ("2 GB", "MB", Some(2048.0)),
        ("lz4", "", None),
        ("on", "", None),
        ("2GB", "", None),
        ("2GB", "ms", None),
        ("30s", "kB", None),
        ("5parsecs", "kB", None),
        ("", "", None),
    ];
    for &(value, unit, want) in cases {
        assert_eq!(to_unit(value, unit), want, "{value} in {unit:?}");
    }
}

#[test]
fn display_setting_table() {
    let cases = [
        (("16384", "8kB"), "128MB"),
        (("4096", "kB"), "4MB"),
        (("1024", "MB"), "1GB"),
        (("60", "s"), "1min"),
        (("2", "ms"), "2ms"),
        (("-1", "kB"), "-1"),
        (("0", "ms"), "0"),
        (("0.9", ""), "0.9"),
        (("lz4", ""), "lz4"),
        (("200", ""), "200"),
        (("1285", "8kB"), "10280kB"),
        (("262144", "8kB"), "2GB"),
        (("3600", "s"), "1h"),
        (("90", "s"), "90s"),
        (("86400", "s"), "1d"),
        (("0.5", "ms"), "500us"),
        (("1", "B"), "1B"),
        (("1536", "MB"), "1536MB"),
        (("64", "16MB"), "1GB"),
        (("100", "weird"), "100"),
    ];
    for ((setting, unit), want) in cases {
        assert_eq!(display_setting(setting, unit), want, "({setting}, {unit})");
    }
}

#[test]
fn same_value_table() {
    let cases = [
        ("2GB", "262144", "8kB", true),
        ("2GB", "262143", "8kB", false),
        ("10280kB", "10280", "kB", true),
        ("16MB", "2048", "8kB", true),
        // The server rounds a kB value to whole 8kB pages.
        ("12345kB", "1543", "8kB", true),
        ("12345kB", "1542", "8kB", false),
        ("30s", "30", "s", true),
        ("1min", "60", "s", true),
        ("30s", "60", "s", false),
        ("2ms", "2", "ms", true),
        ("0.9", "0.9", "", true),
        ("1.1", "4", "", false),
        ("200", "200", "", true),
        ("lz4", "LZ4", "", true),
        ("lz4", "pglz", "", false),
        ("on", "true", "", true),
        ("off", "0", "", true),
        ("yes", "on", "", true),
        ("try", "off", "", false),
        ("off", "on", "", false),
        ("minimal", "replica", "", false),
    ];
    for (rec, cur, unit, want) in cases {
        assert_eq!(same_value(rec, cur, unit), want, "{rec} vs {cur} ({unit})");
    }
}

#[test]
fn conf_numbers_are_read_as_the_server_reads_them() {
    let cases: [(&str, &str, Option<f64>); 18] = [
        ("1e3", "kB", Some(1000.0)),
        ("2.5E-1", "", Some(0.25)),
        ("64MB", "kB", Some(65536.0)),
        ("64 MB", "kB", Some(65536.0)),
        ("1.5GB", "kB", Some(1572864.0)),
        ("4096", "kB", Some(4096.0)),
        ("128MB", "8kB", Some(16384.0)),
        ("1GB", "MB", Some(1024.0)),
        ("-1", "8kB", Some(-1.0)),
        ("30s", "s", Some(30.0)),
        ("1min", "s", Some(60.0)),
        ("2ms", "ms", Some(2.0)),
        ("0.5", "", Some(0.5)),
        // The server's units are case-sensitive, and only its own spellings.
        ("64mb", "kB", None),
        ("16G", "kB", None),
        // Another kind of unit, a unit on a unitless setting, no number.
        ("30s", "kB", None),
        ("5MB", "", None),
        ("abc", "kB", None),
    ];
    for (value, unit, want) in cases {
        assert_eq!(
            parse_conf_number(value, unit),
            want,
            "{value:?} in {unit:?}"
        );
    }
}
