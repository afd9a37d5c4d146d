//! Merging, refusing and encoding families from several services.

use super::*;
use strata_proto::methods::sys::MetricSample;

fn scalar(name: &str, kind: MetricType, labels: &[(&str, &str)], value: f64) -> MetricFamily {
    MetricFamily {
        name: name.into(),
        help: format!("help of {name}"),
        kind,
        samples: vec![MetricSample {
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            value: SampleValue::Scalar { value },
        }],
    }
}

fn histogram(name: &str, buckets: Vec<(f64, u64)>, count: u64) -> MetricFamily {
    MetricFamily {
        name: name.into(),
        help: "latency".into(),
        kind: MetricType::Histogram,
        samples: vec![MetricSample {
            labels: [("method".to_owned(), "fs.read".to_owned())].into(),
            value: SampleValue::Histogram {
                buckets,
                sum: 0.5,
                count,
            },
        }],
    }
}

#[test]
fn families_of_one_name_merge_with_the_service_label_and_one_header() {
    let mut m = Merged::default();
    let requests = |n| {
        scalar(
            "strata_requests_total",
            MetricType::Counter,
            &[("code", "OK")],
            n,
        )
    };
    assert!(m.add(Some("fs"), vec![requests(3.0)]).is_empty());
    assert!(m.add(Some("identity"), vec![requests(5.0)]).is_empty());
    let text = m.encode(false);
    assert_eq!(
        text.matches("# TYPE strata_requests_total counter").count(),
        1,
        "{text}"
    );
    assert_eq!(
        text.matches("# HELP strata_requests_total ").count(),
        1,
        "{text}"
    );
    assert!(
        text.contains("strata_requests_total{service=\"fs\",code=\"OK\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("strata_requests_total{service=\"identity\",code=\"OK\"} 5"),
        "{text}"
    );
}

#[test]
fn a_histogram_is_encoded_cumulative_with_its_inf_bucket() {
    let mut m = Merged::default();
    let refused = m.add(
        Some("fs"),
        vec![histogram("strata_x_seconds", vec![(0.1, 2), (1.0, 1)], 4)],
    );
    assert!(refused.is_empty(), "{refused:?}");
    let text = m.encode(false);
    for line in [
        "strata_x_seconds_bucket{service=\"fs\",method=\"fs.read\",le=\"0.1\"} 2",
        "strata_x_seconds_bucket{service=\"fs\",method=\"fs.read\",le=\"1\"} 3",
        "strata_x_seconds_bucket{service=\"fs\",method=\"fs.read\",le=\"+Inf\"} 4",
        "strata_x_seconds_sum{service=\"fs\",method=\"fs.read\"} 0.5",
        "strata_x_seconds_count{service=\"fs\",method=\"fs.read\"} 4",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
}

#[test]
fn label_values_are_escaped() {
    let mut m = Merged::default();
    let family = scalar(
        "strata_g",
        MetricType::Gauge,
        &[("path", "a\"b\\c\nd")],
        1.0,
    );
    assert!(m.add(Some("svc"), vec![family]).is_empty());
    let text = m.encode(false);
    assert!(
        text.contains(r#"strata_g{service="svc",path="a\"b\\c\nd"} 1"#),
        "{text}"
    );
}

#[test]
fn bad_families_are_refused_whole_and_good_ones_kept() {
    use MetricType::{Counter, Gauge};
    let bad = vec![
        scalar("process_cpu_seconds_total", Counter, &[], 1.0),
        scalar("strata_Bad", Gauge, &[], 1.0),
        scalar("strata_x-y", Gauge, &[], 1.0),
        scalar("strata_", Gauge, &[], 1.0),
        scalar("strata_requests", Counter, &[], 1.0),
        scalar("strata_g_total", Gauge, &[], 1.0),
        scalar("strata_g_count", Gauge, &[], 1.0),
        scalar("strata_neg_total", Counter, &[], -1.0),
        scalar("strata_g", Gauge, &[("service", "forged")], 1.0),
        scalar("strata_g", Gauge, &[("__name__", "x")], 1.0),
        scalar("strata_g", Gauge, &[("bad-label", "x")], 1.0),
        scalar(
            "strata_g",
            Gauge,
            &[("l", &"v".repeat(MAX_LABEL_VALUE_LEN + 1))],
            1.0,
        ),
        histogram("strata_h_seconds", vec![(1.0, 1), (0.5, 1)], 2),
        histogram("strata_h_seconds", vec![(1.0, 3)], 2),
        histogram("strata_h_seconds", vec![(f64::INFINITY, 1)], 2),
        MetricFamily {
            kind: Gauge,
            ..histogram("strata_h_seconds", vec![], 0)
        },
    ];
    let n = bad.len();
    let mut m = Merged::default();
    let mut families = bad;
    families.push(scalar("strata_good", Gauge, &[], 1.0));
    let refused = m.add(Some("svc"), families);
    assert_eq!(refused.len(), n, "{refused:?}");
    assert_eq!(m.names().collect::<Vec<_>>(), ["strata_good"]);
}

#[test]
fn a_type_clash_or_a_repeated_label_set_is_refused() {
    let mut m = Merged::default();
    assert!(m
        .add(
            Some("a"),
            vec![scalar("strata_n", MetricType::Gauge, &[], 1.0)]
        )
        .is_empty());
    let clash = m.add(
        Some("b"),
        vec![scalar("strata_n", MetricType::Counter, &[], 1.0)],
    );
    assert_eq!(
        clash.len(),
        1,
        "counter `strata_n` cannot join gauge `strata_n`"
    );
    let twice = m.add(
        Some("a"),
        vec![scalar("strata_n", MetricType::Gauge, &[], 2.0)],
    );
    assert_eq!(twice.len(), 1, "the same series twice");
    let mut dup = scalar("strata_m", MetricType::Gauge, &[], 1.0);
    dup.samples.push(dup.samples[0].clone());
    assert_eq!(m.add(Some("a"), vec![dup]).len(), 1);
}

#[test]
fn a_service_is_held_to_its_family_and_sample_bounds() {
    let mut m = Merged::default();
    let many: Vec<MetricFamily> = (0..MAX_FAMILIES_PER_SERVICE + 3)
        .map(|i| scalar(&format!("strata_f{i}"), MetricType::Gauge, &[], 1.0))
        .collect();
    assert_eq!(m.add(Some("a"), many).len(), 3);
    let mut big = scalar("strata_big", MetricType::Gauge, &[], 1.0);
    big.samples = (0..MAX_SAMPLES_PER_SERVICE + 1)
        .map(|i| MetricSample {
            labels: [("i".to_owned(), i.to_string())].into(),
            value: SampleValue::Scalar { value: 1.0 },
        })
        .collect();
    assert_eq!(m.add(Some("b"), vec![big]).len(), 1);
}

#[test]
fn openmetrics_is_served_on_request() {
    let mut m = Merged::default();
    m.add(
        Some("fs"),
        vec![scalar(
            "strata_requests_total",
            MetricType::Counter,
            &[],
            1.0,
        )],
    );
    let text = m.encode(true);
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(
        text.contains("strata_requests_total{service=\"fs\"} 1"),
        "{text}"
    );
}

#[test]
fn help_that_could_write_lines_of_its_own_is_refused() {
    let forged = "x\n# TYPE strata_fs_forged gauge\nstrata_fs_forged{service=\"fs\"} 42";
    for help in [forged, "x\r# EOF", "x\\n", "tab\there", "\u{7f}", "naïve"] {
        let mut family = scalar("strata_aaa", MetricType::Gauge, &[], 1.0);
        family.help = help.to_owned();
        let mut m = Merged::default();
        let refused = m.add(Some("aaa"), vec![family]);
        assert_eq!(refused.len(), 1, "{help:?} taken");
        for openmetrics in [true, false] {
            let mut m = Merged::default();
            let mut family = scalar("strata_aaa", MetricType::Gauge, &[], 1.0);
            family.help = help.to_owned();
            m.add(Some("aaa"), vec![family]);
            let text = m.encode(openmetrics);
            assert!(!text.contains("forged"), "{text}");
            assert!(!openmetrics || text.matches("# EOF").count() == 1, "{text}");
        }
    }
    let mut plain = scalar("strata_aaa", MetricType::Gauge, &[], 1.0);
    plain.help = "Printable: ASCII, (with) \"quotes\" & ~punctuation~.".into();
    assert!(Merged::default().add(Some("aaa"), vec![plain]).is_empty());
}

#[test]
fn openmetrics_histograms_have_their_inf_bucket_once() {
    let family = || histogram("strata_x_seconds", vec![(0.1, 2), (1.0, 1)], 5);
    // (le, cumulative count) of every bucket line, whichever order the labels are in.
    let buckets = |text: &str| -> Vec<(String, u64)> {
        text.lines()
            .filter(|l| l.starts_with("strata_x_seconds_bucket{"))
            .map(|l| {
                let le = l.split("le=\"").nth(1).unwrap().split('"').next().unwrap();
                let n = l.rsplit_once(' ').unwrap().1.parse().unwrap();
                (le.to_owned(), n)
            })
            .collect()
    };
    for (openmetrics, one) in [(true, "1.0"), (false, "1")] {
        let mut m = Merged::default();
        assert!(m.add(Some("fs"), vec![family()]).is_empty());
        let text = m.encode(openmetrics);
        let expected = [("0.1", 2), (one, 3), ("+Inf", 5)].map(|(le, n)| (le.to_owned(), n));
        assert_eq!(buckets(&text), expected, "{text}");
    }
}

#[test]
fn a_service_is_held_to_its_bytes_of_exposition() {
    // Few samples and families, each label long, every one repeated on every bucket line.
    let labels: Vec<(String, String)> = (0..MAX_LABELS - 1)
        .map(|j| {
            (
                format!("l{j:02}{}", "a".repeat(100)),
                "v".repeat(MAX_LABEL_VALUE_LEN),
            )
        })
        .collect();
    let sample = |i: usize| MetricSample {
        labels: labels
            .iter()
            .cloned()
            .chain([("i".to_owned(), i.to_string())])
            .collect(),
        value: SampleValue::Histogram {
            buckets: (0..MAX_BUCKETS).map(|k| (k as f64 + 1.0, 0)).collect(),
            sum: 0.0,
            count: 0,
        },
    };
    let families: Vec<MetricFamily> = (0..40)
        .map(|f| MetricFamily {
            name: format!("strata_big{f}_seconds"),
            help: "big".into(),
            kind: MetricType::Histogram,
            samples: (0..4).map(&sample).collect(),
        })
        .collect();
    let mut m = Merged::default();
    let refused = m.add(Some("big"), families);
    assert!(!refused.is_empty(), "everything taken");
    let text = m.encode(false);
    assert!(text.len() <= MAX_BYTES_PER_SERVICE, "{} bytes", text.len());
    // The estimate counts every label value escaped at worst (twice its length).
    assert!(
        text.len() > MAX_BYTES_PER_SERVICE / 4,
        "{} bytes",
        text.len()
    );
    // Another service still has its own budget.
    let mut small = Merged::default();
    assert!(small
        .add(
            Some("ok"),
            vec![scalar("strata_g", MetricType::Gauge, &[], 1.0)]
        )
        .is_empty());
}

#[test]
fn the_supervisors_names_and_the_request_families_types_are_not_a_services_to_take() {
    use MetricType::{Counter, Gauge};
    let node = || {
        scalar(
            "strata_service_state",
            Gauge,
            &[("service", "fs"), ("state", "Healthy")],
            1.0,
        )
    };
    let taken = vec![
        scalar("strata_service_state", Gauge, &[("state", "Healthy")], 1.0),
        scalar("strata_service_restarts_total", Counter, &[], 0.0),
        histogram("strata_service_uptime_seconds", vec![(1.0, 0)], 0),
        scalar("strata_supervisor_uptime_seconds", Gauge, &[], 1.0),
        scalar("strata_scrape_errors_total", Counter, &[], 1.0),
        scalar("strata_request_duration_seconds", Gauge, &[], 1.0),
        MetricFamily {
            kind: Gauge,
            ..scalar("strata_requests_total", Gauge, &[], 1.0)
        },
    ];
    let n = taken.len();
    // Whichever comes first, the node's families stand and the service's are refused.
    let mut m = Merged::default();
    let refused = m.add(Some("aaa"), taken.clone());
    assert_eq!(refused.len(), n, "{refused:?}");
    assert!(m.add(None, vec![node()]).is_empty());
    let mut m = Merged::default();
    assert!(m.add(None, vec![node()]).is_empty());
    assert_eq!(m.add(Some("aaa"), taken).len(), n);
    // The request families are still everyone's, with their declared types.
    assert!(m
        .add(
            Some("fs"),
            vec![histogram(
                "strata_request_duration_seconds",
                vec![(1.0, 1)],
                1
            )]
        )
        .is_empty());
    let text = m.encode(false);
    assert!(
        text.contains("# TYPE strata_request_duration_seconds histogram"),
        "{text}"
    );
    assert!(
        text.contains("strata_service_state{service=\"fs\",state=\"Healthy\"} 1"),
        "{text}"
    );
}

/// Each limit a service's answer is held to: at the limit it is taken, one past it the
/// family is refused whole.
#[test]
fn every_limit_takes_its_limit_and_refuses_one_more() {
    use MetricType::Gauge;
    let refused_names = |m: &mut Merged, service: &str, families: Vec<MetricFamily>| {
        m.add(Some(service), families)
            .into_iter()
            .map(|r| r.name)
            .collect::<Vec<_>>()
    };
    let mut m = Merged::default();

    // A family name of MAX_NAME_LEN bytes, and one of one more.
    let at = format!("strata_{}", "n".repeat(MAX_NAME_LEN - "strata_".len()));
    let past = format!("{at}n");
    let families = vec![scalar(&at, Gauge, &[], 1.0), scalar(&past, Gauge, &[], 1.0)];
    // (A refused name is reported cut to MAX_NAME_LEN.)
    assert_eq!(
        refused_names(&mut m, "a", families),
        [&past[..MAX_NAME_LEN]]
    );
    assert!(m.names().any(|n| n == at));

    // Help of MAX_HELP_LEN bytes, and of one more.
    let mut help_at = scalar("strata_help_at", Gauge, &[], 1.0);
    help_at.help = "h".repeat(MAX_HELP_LEN);
    let mut help_past = scalar("strata_help_past", Gauge, &[], 1.0);
    help_past.help = "h".repeat(MAX_HELP_LEN + 1);
    assert_eq!(
        refused_names(&mut m, "b", vec![help_at, help_past]),
        ["strata_help_past"]
    );

    // MAX_LABELS labels on a sample, and one more.
    let labels = |n: usize| -> Vec<(String, String)> {
        (0..n).map(|i| (format!("l{i}"), "v".to_owned())).collect()
    };
    let with_labels = |name: &str, n: usize| {
        let mut f = scalar(name, Gauge, &[], 1.0);
        f.samples[0].labels = labels(n).into_iter().collect();
        f
    };
    assert_eq!(
        refused_names(
            &mut m,
            "c",
            vec![
                with_labels("strata_labels_at", MAX_LABELS),
                with_labels("strata_labels_past", MAX_LABELS + 1),
            ]
        ),
        ["strata_labels_past"]
    );

    // A label name of MAX_NAME_LEN bytes, and of one more.
    let long_label = "l".repeat(MAX_NAME_LEN);
    let longer_label = "l".repeat(MAX_NAME_LEN + 1);
    assert_eq!(
        refused_names(
            &mut m,
            "d",
            vec![
                scalar("strata_lname_at", Gauge, &[(&long_label, "v")], 1.0),
                scalar("strata_lname_past", Gauge, &[(&longer_label, "v")], 1.0),
            ]
        ),
        ["strata_lname_past"]
    );

    // MAX_BUCKETS buckets in a histogram, and one more.
    let buckets = |n: usize| (0..n).map(|k| (k as f64 + 1.0, 0)).collect::<Vec<_>>();
    let mut bucket_at = histogram("strata_buckets_at_seconds", buckets(MAX_BUCKETS), 0);
    bucket_at.samples[0].labels.clear();
    let mut bucket_past = histogram("strata_buckets_past_seconds", buckets(MAX_BUCKETS + 1), 0);
    bucket_past.samples[0].labels.clear();
    assert_eq!(
        refused_names(&mut m, "e", vec![bucket_at, bucket_past]),
        ["strata_buckets_past_seconds"]
    );

    // Exactly MAX_SAMPLES_PER_SERVICE samples in all, then one more family of one sample
    // (a short name, so the byte budget is not what stops it).
    let mut full = scalar("strata_s", Gauge, &[], 1.0);
    full.samples = (0..MAX_SAMPLES_PER_SERVICE)
        .map(|i| MetricSample {
            labels: [("i".to_owned(), i.to_string())].into(),
            value: SampleValue::Scalar { value: 1.0 },
        })
        .collect();
    let one_more = scalar("strata_one_more", Gauge, &[], 1.0);
    assert_eq!(
        refused_names(&mut m, "f", vec![full, one_more]),
        ["strata_one_more"]
    );

    // Exactly MAX_FAMILIES_PER_SERVICE families are taken.
    let families: Vec<MetricFamily> = (0..MAX_FAMILIES_PER_SERVICE)
        .map(|i| scalar(&format!("strata_fam{i}"), Gauge, &[], 1.0))
        .collect();
    assert!(refused_names(&mut m, "g", families).is_empty());
}
