//! The operator's health and key figures for the admin page, read *as the person*: its
//! `/readyz` and Prometheus `/metrics` through the API server's service proxy
//! (`services/<name>:<port>/proxy/…`), so RBAC decides who may see them (`get` on
//! `services/proxy`, which the chart's `<release>-operator-health` Role grants for its metrics
//! Service only).
//!
//! The figures are parsed from the text format by a small parser that expects nothing of its
//! input: the body is capped, long or malformed lines are skipped, and every number may be
//! `NaN` or infinite.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use futures::AsyncReadExt;
use k8s_openapi::jiff::Timestamp;
use kube::Client;

/// The most of `/metrics` read (the operator's is a few tens of KiB).
pub const MAX_BODY: usize = 4 << 20;
/// Longer lines are skipped.
const MAX_LINE: usize = 64 << 10;
/// The most samples kept (only `vexa_…` ones are).
const MAX_SAMPLES: usize = 20_000;
/// A sample with more labels is skipped.
const MAX_LABELS: usize = 16;
/// How long the operator has to answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Where the operator's metrics Service is: `--operator-service <namespace>/<name>:<port>`
/// (port: the Service port's name or number).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorService {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// The Service port's name or number.
    pub port: String,
}

impl FromStr for OperatorService {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{s:?} is not <namespace>/<service>:<port> (e.g. vexa-system/vexa-metrics:http)"
            )
        };
        let (namespace, rest) = s.split_once('/').ok_or_else(bad)?;
        let (name, port) = rest.split_once(':').ok_or_else(bad)?;
        let label = |x: &str| {
            (1..=63).contains(&x.len())
                && x.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !x.starts_with('-')
                && !x.ends_with('-')
        };
        if !(label(namespace) && label(name) && label(port)) {
            return Err(bad());
        }
        Ok(Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            port: port.to_owned(),
        })
    }
}

impl fmt::Display for OperatorService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.name, self.port)
    }
}

impl OperatorService {
    fn proxy(&self, path: &str) -> String {
        format!(
            "/api/v1/namespaces/{}/services/{}:{}/proxy/{path}",
            self.namespace, self.name, self.port
        )
    }
}

/// `router` with its admin page showing the operator at `service` (without this, the page says
/// the console was not told where the operator is).
pub fn with_operator(router: axum::Router, service: OperatorService) -> axum::Router {
    router.layer(axum::Extension(std::sync::Arc::new(service)))
}

/// Why the operator could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server (or the operator through it) refused or failed.
    #[error(transparent)]
    Kube(#[from] kube::Error),
    /// The answer was larger than [`MAX_BODY`].
    #[error("the operator's answer is larger than {MAX_BODY} bytes")]
    TooLarge,
    /// No answer within [`TIMEOUT`].
    #[error("the operator did not answer within {} s", TIMEOUT.as_secs())]
    Timeout,
    /// The answer broke off.
    #[error("reading the operator's answer failed: {0}")]
    Body(std::io::Error),
}

/// What the admin page shows of the operator.
#[derive(Debug)]
pub struct Health {
    /// Where it was read.
    pub service: OperatorService,
    /// `/readyz`: ready, or what it (or the API server) said.
    pub ready: Result<(), String>,
    /// The key figures of `/metrics`.
    pub figures: Figures,
    /// When `/metrics` was read.
    pub read_at: Timestamp,
}

/// Reads `path` of the Service through the API server as the client's person, at most
/// [`MAX_BODY`] bytes of it, within [`TIMEOUT`].
async fn get(client: &Client, service: &OperatorService, path: &str) -> Result<String, Error> {
    let request = http::Request::get(service.proxy(path))
        .body(Vec::new())
        .map_err(kube::Error::HttpError)?;
    let read = async {
        let stream = client.request_stream(request).await?;
        let mut body = Vec::new();
        stream
            .take(MAX_BODY as u64 + 1)
            .read_to_end(&mut body)
            .await
            .map_err(Error::Body)?;
        if body.len() > MAX_BODY {
            return Err(Error::TooLarge);
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    };
    tokio::time::timeout(TIMEOUT, read)
        .await
        .map_err(|_| Error::Timeout)?
}

/// Reads the operator's readiness and metrics as the client's person. `Err` when `/metrics`
/// cannot be read (refused, unreachable); a `/readyz` that answers "not ready" is part of
/// [`Health`].
pub async fn read(client: &Client, service: &OperatorService) -> Result<Health, Error> {
    let (ready, metrics) = tokio::join!(
        get(client, service, "readyz"),
        get(client, service, "metrics")
    );
    let text = metrics?;
    let read_at = Timestamp::now();
    let ready = ready.map(drop).map_err(|e| match e {
        Error::Kube(kube::Error::Api(s)) => s.message.trim().to_owned(),
        other => other.to_string(),
    });
    Ok(Health {
        service: service.clone(),
        ready,
        figures: Figures::of(&parse(&text)),
        read_at,
    })
}

/// One sample of the text format.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The metric's name, with its `_bucket`, `_count`, `_total` suffix.
    pub name: String,
    /// Its labels, as given.
    pub labels: Vec<(String, String)>,
    /// Its value (may be NaN or infinite).
    pub value: f64,
}

impl Sample {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The `vexa_…` samples of a Prometheus or OpenMetrics text, at most [`MAX_SAMPLES`];
/// comments, long lines and lines that do not parse are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| l.len() <= MAX_LINE)
        .filter_map(sample)
        .filter(|s| s.name.starts_with("vexa_"))
        .take(MAX_SAMPLES)
        .collect()
}

fn sample(line: &str) -> Option<Sample> {
    let line = line.trim_start();
    if line.starts_with('#') {
        return None;
    }
    let end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let mut rest = &line[end..];
    let mut labels = Vec::new();
    if let Some(inside) = rest.strip_prefix('{') {
        rest = parse_labels(inside, &mut labels)?;
    }
    // The value follows whitespace; a timestamp or an exemplar after it is ignored.
    if !rest.starts_with([' ', '\t']) {
        return None;
    }
    let value = number(rest.split_ascii_whitespace().next()?)?;
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Parses `k="v",…}` into `out`; returns what follows the `}`.
fn parse_labels<'a>(mut rest: &'a str, out: &mut Vec<(String, String)>) -> Option<&'a str> {
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('}') {
            return Some(after);
        }
        let (key, after) = rest.split_once('=')?;
        let key = key.trim();
        let is_name = !key.is_empty()
            && !key.starts_with(|c: char| c.is_ascii_digit())
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !is_name || out.len() == MAX_LABELS {
            return None;
        }
        let quoted = after.trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        let close = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (_, c) => value.push(c),
            }
        };
        out.push((key.to_owned(), value));
        rest = quoted[close + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

fn number(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// A count from a sample's value: non-finite and negative values are not counts.
fn count(v: f64) -> Option<u64> {
    // `as` saturates; the value is finite and non-negative here.
    (v.is_finite() && v >= 0.0).then(|| v.round() as u64)
}

/// A quantile estimated from a histogram's buckets.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Quantile {
    /// About this many seconds (linear within its bucket, as Prometheus' `histogram_quantile`).
    About(f64),
    /// In the `+Inf` bucket: more than the highest finite bound.
    Above(f64),
}

/// The `q` quantile (0 < q ≤ 1) of cumulative `buckets` (upper bound, count), in any order.
/// `None` without observations or without the `+Inf` bucket (which holds the total).
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<Quantile> {
    if !(q > 0.0 && q <= 1.0) {
        return None;
    }
    let mut b: Vec<(f64, f64)> = buckets
        .iter()
        .copied()
        .filter(|&(le, n)| (le.is_finite() || le == f64::INFINITY) && n.is_finite() && n >= 0.0)
        .collect();
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    // Cumulative counts never fall; a bucket below the one before it is raised to it (as
    // Prometheus does with buckets scraped at slightly different moments).
    let mut most = 0.0_f64;
    for x in &mut b {
        most = most.max(x.1);
        x.1 = most;
    }
    let &(last, total) = b.last()?;
    if last != f64::INFINITY || total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0_f64, 0.0_f64);
    for (i, &(le, n)) in b.iter().enumerate() {
        if n >= rank {
            if le == f64::INFINITY {
                return Some(Quantile::Above(lower));
            }
            if i == 0 && le <= 0.0 {
                return Some(Quantile::About(le));
            }
            let share = if n > below {
                (rank - below) / (n - below)
            } else {
                1.0
            };
            return Some(Quantile::About(lower + (le - lower) * share));
        }
        (lower, below) = (le, n);
    }
    None
}

/// A latency histogram's figures.
#[derive(Clone, Debug, PartialEq)]
pub struct Latency {
    /// What it measures, for people.
    pub what: &'static str,
    /// The metric (without `_bucket`).
    pub metric: &'static str,
    /// How many were observed.
    pub count: u64,
    /// Their mean (`_sum` / `_count`): exact, where the quantiles are estimates.
    pub mean: Option<f64>,
    /// The median.
    pub p50: Option<Quantile>,
    /// The 95th percentile.
    pub p95: Option<Quantile>,
}

/// The latencies the admin page shows, first the dispatch start latency.
pub const LATENCIES: [(&str, &str); 4] = [
    (
        "Start: created → Job created",
        "vexa_dispatch_job_created_latency_seconds",
    ),
    (
        "Created → worker running",
        "vexa_dispatch_running_latency_seconds",
    ),
    (
        "Created → agent's first event",
        "vexa_dispatch_first_event_latency_seconds",
    ),
    (
        "Wait for a held workspace",
        "vexa_dispatch_queue_wait_seconds",
    ),
];

/// One controller's reconciles and their errors.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reconciles {
    /// Reconciles started.
    pub total: u64,
    /// Failed ones by reason (only reasons that happened).
    pub errors: BTreeMap<String, u64>,
}

/// The key figures of the operator's metrics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Figures {
    /// Dispatch latencies ([`LATENCIES`]).
    pub latencies: Vec<Latency>,
    /// Dispatches by phase (`vexa_dispatches`): the active runs and the queue.
    pub phases: BTreeMap<String, u64>,
    /// How long the Dispatch longest in phase starting has been there, in seconds.
    pub oldest_starting: Option<f64>,
    /// Each controller's reconciles (`vexa_<controller>_reconciles_total`, `…_errors_total`).
    pub controllers: BTreeMap<String, Reconciles>,
    /// Runs that ended, by stop reason (only reasons that happened).
    pub runs: BTreeMap<String, u64>,
}

impl Figures {
    /// The figures of `samples`; what is missing is left out.
    pub fn of(samples: &[Sample]) -> Self {
        let latencies = LATENCIES
            .iter()
            .map(|&(what, metric)| {
                let bucket = format!("{metric}_bucket");
                let buckets: Vec<(f64, f64)> = samples
                    .iter()
                    .filter(|s| s.name == bucket)
                    .filter_map(|s| Some((number(s.label("le")?)?, s.value)))
                    .collect();
                let value = |suffix: &str| {
                    let name = format!("{metric}_{suffix}");
                    samples.iter().find(|s| s.name == name).map(|s| s.value)
                };
                let count = value("count").and_then(count).unwrap_or(0);
                let mean = value("sum")
                    .filter(|sum| sum.is_finite() && count > 0)
                    .map(|sum| sum / count as f64);
                Latency {
                    what,
                    metric,
                    count,
                    mean,
                    p50: quantile(0.5, &buckets),
                    p95: quantile(0.95, &buckets),
                }
            })
            .collect();
        let mut figures = Self {
            latencies,
            ..Self::default()
        };
        for s in samples {
            let n = count(s.value);
            if s.name == "vexa_dispatches" {
                if let (Some(phase), Some(n)) = (s.label("phase"), n) {
                    figures.phases.insert(phase.to_owned(), n);
                }
            } else if s.name == "vexa_dispatch_oldest_starting_seconds" {
                figures.oldest_starting = Some(s.value).filter(|v| v.is_finite());
            } else if s.name == "vexa_dispatch_runs_total" {
                if let (Some(reason), Some(n @ 1..)) = (s.label("reason"), n) {
                    figures.runs.insert(reason.to_owned(), n);
                }
            } else if let Some(kind) = s
                .name
                .strip_prefix("vexa_")
                .and_then(|x| x.strip_suffix("_reconciles_total"))
            {
                figures
                    .controllers
                    .entry(kind.to_owned())
                    .or_default()
                    .total = n.unwrap_or(0);
            } else if let Some(kind) = s
                .name
                .strip_prefix("vexa_")
                .and_then(|x| x.strip_suffix("_reconcile_errors_total"))
            {
                let c = figures.controllers.entry(kind.to_owned()).or_default();
                if let (Some(reason), Some(n @ 1..)) = (s.label("reason"), n) {
                    c.errors.insert(reason.to_owned(), n);
                }
            }
        }
        figures
    }

    /// Dispatches in phase `phase`.
    pub fn in_phase(&self, phase: &str) -> u64 {
        self.phases.get(phase).copied().unwrap_or(0)
    }

    /// Runs that have a pod: starting, running or stopping.
    pub fn active(&self) -> u64 {
        ["starting", "running", "stopping"]
            .iter()
            .map(|p| self.in_phase(p))
            .sum()
    }

    /// Dispatches waiting to start: not yet taken up (pending) or behind a held workspace
    /// (queued).
    pub fn waiting(&self) -> u64 {
        self.in_phase("pending") + self.in_phase("queued")
    }
}

/// Seconds for people: `840 ms`, `2.4 s`, `3.5 min`.
pub fn seconds(s: f64) -> String {
    if !s.is_finite() {
        "–".to_owned()
    } else if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else if s < 60.0 {
        format!("{s:.1} s")
    } else if s < 3600.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

impl fmt::Display for Quantile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::About(s) => f.write_str(&seconds(s)),
            Self::Above(s) => write!(f, "> {}", seconds(s)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// What the operator serves (operator/src/runtime/metrics.rs, as encoded), trimmed.
    const OPERATOR: &str = r#"# HELP vexa_dispatch_reconciles Dispatch reconciles started.
# TYPE vexa_dispatch_reconciles counter
vexa_dispatch_reconciles_total 12
# HELP vexa_dispatch_reconcile_errors Dispatch reconciles that failed, by reason.
# TYPE vexa_dispatch_reconcile_errors counter
vexa_dispatch_reconcile_errors_total{reason="Conflict"} 2
vexa_dispatch_reconcile_errors_total{reason="Forbidden"} 0
vexa_tool_reconciles_total 3
# TYPE vexa_dispatch_job_created_latency_seconds histogram
# UNIT vexa_dispatch_job_created_latency_seconds seconds
vexa_dispatch_job_created_latency_seconds_sum 0.9
vexa_dispatch_job_created_latency_seconds_count 4
vexa_dispatch_job_created_latency_seconds_bucket{le="0.1"} 0
vexa_dispatch_job_created_latency_seconds_bucket{le="0.25"} 2
vexa_dispatch_job_created_latency_seconds_bucket{le="0.5"} 4
vexa_dispatch_job_created_latency_seconds_bucket{le="+Inf"} 4
vexa_dispatch_runs_total{reason="completed"} 3
vexa_dispatch_runs_total{reason="killed"} 0
# TYPE vexa_dispatches gauge
vexa_dispatches{phase="running"} 2
vexa_dispatches{phase="queued"} 1
vexa_dispatch_oldest_starting_seconds 0.0
# EOF
"#;

    #[test]
    fn the_operators_figures_are_read() {
        let f = Figures::of(&parse(OPERATOR));
        let start = &f.latencies[0];
        assert_eq!(start.metric, "vexa_dispatch_job_created_latency_seconds");
        assert_eq!(start.count, 4);
        assert_eq!(start.mean, Some(0.225));
        // Rank 2 of 4 is the top of the (0.1, 0.25] bucket; rank 3.8 is 90 % into (0.25, 0.5].
        assert_eq!(start.p50, Some(Quantile::About(0.25)));
        let Some(Quantile::About(p95)) = start.p95 else {
            panic!("{:?}", start.p95)
        };
        assert!((p95 - 0.475).abs() < 1e-9, "{p95}");
        assert_eq!(f.latencies[1].count, 0);
        assert_eq!(f.latencies[1].p50, None);
        assert_eq!(f.in_phase("running"), 2);
        assert_eq!(f.in_phase("queued"), 1);
        assert_eq!(f.in_phase("starting"), 0);
        assert_eq!((f.active(), f.waiting()), (2, 1));
        assert_eq!(f.oldest_starting, Some(0.0));
        assert_eq!(f.controllers["dispatch"].total, 12);
        assert_eq!(
            f.controllers["dispatch"].errors,
            BTreeMap::from([("Conflict".to_owned(), 2)])
        );
        assert_eq!(f.controllers["tool"].total, 3);
        assert_eq!(f.runs, BTreeMap::from([("completed".to_owned(), 3)]));
    }

    #[test]
    fn hostile_text_is_skipped_not_trusted() {
        let huge = format!("vexa_x{{a=\"{}\"}} 1", "y".repeat(MAX_LINE));
        let text = [
            huge.as_str(),
            "vexa_nan NaN",
            "vexa_inf +Inf",
            "vexa_neg -Inf 1700000000",
            r#"vexa_q{path="a\"b\\c\nd",other="x # y"} 7 # {trace_id="z"} 1"#,
            r#"vexa_open{a="never closed} 1"#,
            "vexa_novalue",
            "vexa_glued{}1",
            "9vexa 1",
            "{a=\"b\"} 1",
            "vexa_text hello",
            "other_metric 1",
            "\u{0}\u{1}garbage",
            r#"vexa_bad_key{9a="x"} 1"#,
        ]
        .join("\n");
        let samples = parse(&text);
        let names: Vec<&str> = samples.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["vexa_nan", "vexa_inf", "vexa_neg", "vexa_q"]);
        assert!(samples[0].value.is_nan());
        assert_eq!(samples[1].value, f64::INFINITY);
        assert_eq!(samples[2].value, f64::NEG_INFINITY);
        assert_eq!(
            samples[3].labels,
            [
                ("path".to_owned(), "a\"b\\c\nd".to_owned()),
                ("other".to_owned(), "x # y".to_owned()),
            ]
        );
        assert_eq!(samples[3].value, 7.0);
    }

    #[test]
    fn too_many_labels_or_samples_are_bounded() {
        let labels: Vec<String> = (0..=MAX_LABELS).map(|i| format!("l{i}=\"v\"")).collect();
        assert!(parse(&format!("vexa_x{{{}}} 1", labels.join(","))).is_empty());
        let many = "vexa_x 1\n".repeat(MAX_SAMPLES + 10);
        assert_eq!(parse(&many).len(), MAX_SAMPLES);
    }

    #[test]
    fn nonsense_numbers_never_become_figures() {
        let text = "vexa_dispatches{phase=\"running\"} NaN\n\
                    vexa_dispatches{phase=\"queued\"} -3\n\
                    vexa_dispatches{phase=\"starting\"} +Inf\n\
                    vexa_dispatch_oldest_starting_seconds NaN\n\
                    vexa_dispatch_job_created_latency_seconds_bucket{le=\"NaN\"} 5\n\
                    vexa_dispatch_job_created_latency_seconds_bucket{le=\"1\"} NaN\n\
                    vexa_dispatch_job_created_latency_seconds_bucket{le=\"+Inf\"} +Inf\n\
                    vexa_dispatch_job_created_latency_seconds_count +Inf\n";
        let f = Figures::of(&parse(text));
        assert!(f.phases.is_empty(), "{:?}", f.phases);
        assert_eq!(f.oldest_starting, None);
        assert_eq!(f.latencies[0].count, 0);
        assert_eq!(f.latencies[0].mean, None);
        assert_eq!(f.latencies[0].p50, None);
    }

    #[test]
    fn quantiles_follow_prometheus() {
        let inf = f64::INFINITY;
        // All in the +Inf bucket: above the highest bound.
        assert_eq!(
            quantile(0.5, &[(1.0, 0.0), (inf, 3.0)]),
            Some(Quantile::Above(1.0))
        );
        // Buckets out of order, and one that falls (raised to the one before).
        assert_eq!(
            quantile(0.5, &[(inf, 4.0), (2.0, 1.0), (1.0, 2.0), (4.0, 4.0)]),
            Some(Quantile::About(1.0))
        );
        // Interpolated from 0 in the first bucket.
        assert_eq!(
            quantile(0.5, &[(2.0, 4.0), (inf, 4.0)]),
            Some(Quantile::About(1.0))
        );
        assert_eq!(quantile(0.5, &[(1.0, 0.0), (inf, 0.0)]), None);
        assert_eq!(quantile(0.5, &[(1.0, 3.0)]), None);
        assert_eq!(quantile(0.5, &[]), None);
        assert_eq!(quantile(f64::NAN, &[(inf, 1.0)]), None);
        assert_eq!(
            quantile(0.5, &[(-inf, 1.0), (inf, 1.0)]),
            Some(Quantile::Above(0.0))
        );
    }

    #[test]
    fn seconds_read_well() {
        assert_eq!(seconds(0.0421), "42 ms");
        assert_eq!(seconds(2.44), "2.4 s");
        assert_eq!(seconds(210.0), "3.5 min");
        assert_eq!(seconds(f64::NAN), "–");
        assert_eq!(Quantile::Above(60.0).to_string(), "> 1.0 min");
    }

    #[test]
    fn the_flag_names_a_service_port() {
        let s: OperatorService = "vexa-system/vexa-metrics:http".parse().unwrap();
        assert_eq!(
            s.proxy("metrics"),
            "/api/v1/namespaces/vexa-system/services/vexa-metrics:http/proxy/metrics"
        );
        assert_eq!(s.to_string(), "vexa-system/vexa-metrics:http");
        for bad in [
            "vexa-metrics:http",
            "vexa-system/vexa-metrics",
            "a/../b:1",
            "a/b:c/d",
            "A/b:1",
            "a/b:",
            "a/b?x=1:80",
        ] {
            assert!(bad.parse::<OperatorService>().is_err(), "{bad}");
        }
    }
}
