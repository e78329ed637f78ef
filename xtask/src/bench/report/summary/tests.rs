//! Unit tests of report.md: figures, ratios, goals met and not met, dates, missing reports.

use super::*;
use crate::bench::report::Machine;

fn report(name: &str, results: &[(&str, f64)]) -> Report {
    Report {
        benchmark: name.to_string(),
        measured_at_unix: 1_795_475_026,
        machine: Machine { n_cpus: 2, kernel: "6.1.0".to_string(), cpu_model: String::new() },
        results: results.iter().map(|(key, value)| (key.to_string(), *value)).collect(),
        notes: vec!["a note".to_string()],
    }
}

#[test]
fn utc_dates_are_civil() {
    assert_eq!(utc(0), "1970-01-01 00:00 UTC");
    assert_eq!(utc(951_782_400), "2000-02-29 00:00 UTC");
    assert_eq!(utc(1_795_475_026), "2026-11-23 23:03 UTC");
}

#[test]
fn numbers_keep_a_few_significant_digits() {
    assert_eq!(number(42379.3, "req/s"), "42,379 req/s");
    assert_eq!(number(0.831, "µs"), "0.831 µs");
    assert_eq!(number(21.49, "ms"), "21.5 ms");
    assert_eq!(number(0.0, ""), "0");
    assert_eq!(number(2277.4, "/s"), "2277/s");
}

#[test]
fn the_report_has_figures_ratios_goals_and_missing_benchmarks() {
    let mut reports = BTreeMap::new();
    reports.insert(
        "runtime".to_string(),
        report(
            "runtime",
            &[
                ("spawn_run_ns_ctx", 260.0),
                ("spawn_run_ns_may", 1300.0),
                ("yield_ns_ctx", 25.0),
                ("resume_ns_generator", 12.5),
                ("syncpoint_rtt_us_p50", 0.8),
                ("thread_channel_rtt_us_p50", 0.5),
            ],
        ),
    );
    reports.insert("copy".to_string(), report("copy", &[("copy_mib_per_s", 2900.0), ("cp_mib_per_s", 3300.0)]));
    let skipped = vec![("failover".to_string(), "needs root and keepalived".to_string())];
    let dir = tempfile::tempdir().expect("temp dir");
    let (md, plots) = render(&reports, &skipped, dir.path()).expect("render");
    assert!(md.contains("| [runtime](#runtime) | 2026-11-23 23:03 UTC | 2 CPUs, Linux 6.1.0 | 2 of 3 |"), "{md}");
    assert!(
        md.contains(
            "| sched + run of an empty coroutine | 260 ns | may go! + join: 1300 ns | 0.20× | ratio ≤ 1.5 | met |"
        ),
        "{md}"
    );
    assert!(
        md.contains(
            "| yield/resume round trip | 25 ns | raw generator resume: 12.5 ns | 2.00× | ratio ≤ 1.5 | **not met** |"
        ),
        "{md}"
    );
    assert!(
        md.contains(
            "| CopyVolume engine | 2900 MiB/s | cp --sparse=always + fsync: 3300 MiB/s | 0.88× | ratio ≥ 0.8 | met |"
        ),
        "{md}"
    );
    assert!(md.contains("| failover | not measured: needs root and keepalived | | |"), "{md}");
    assert!(md.contains("| quorum | not measured: no report | | |"), "{md}");
    assert!(md.contains("| CoMutex uncontended | not in the report (`comutex_uncontended_ns`) |"), "{md}");
    assert!(md.contains("- a note"), "{md}");
    let names: Vec<&str> = plots.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["runtime-margins.svg", "copy-margins.svg"]);
    assert!(md.contains("![runtime: margins](runtime-margins.svg)"), "{md}");
}

#[test]
fn reports_read_back_with_nan_as_null() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut written = report("quorum", &[("handover_after_stop_ms_p50", 3.9)]);
    written.results.insert("ratio".to_string(), f64::NAN);
    std::fs::write(dir.path().join("quorum.json"), serde_json::to_string(&written).expect("encode")).expect("write");
    std::fs::write(dir.path().join("other.json"), "{\"not\": \"a report\"}").expect("write");
    let reports = load_reports(dir.path()).expect("load");
    assert_eq!(reports.len(), 1);
    assert!(reports["quorum"].results["ratio"].is_nan());
    assert_eq!(reports["quorum"].results["handover_after_stop_ms_p50"], 3.9);
    let path = write(dir.path(), &[]).expect("write the report");
    assert!(std::fs::read_to_string(path).expect("read").contains("## quorum"));
    assert!(dir.path().join("quorum-margins.svg").is_file());
}
