//! What the bench binaries (`evals/src/bin/*-bench.rs`) share: percentiles and the lines they
//! print.

/// The `p` quantile (0..=1) of `sorted`, nearest rank.
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Prints `what: n=… p50=… ms p99=… ms max=… ms` for the samples `v` (milliseconds); returns
/// (p50, p99). Nothing is printed for no samples: (NaN, NaN).
pub fn report(what: &str, mut v: Vec<f64>) -> (f64, f64) {
    if v.is_empty() {
        println!("{what}: no samples");
        return (f64::NAN, f64::NAN);
    }
    v.sort_by(f64::total_cmp);
    let (p50, p99) = (pct(&v, 0.5), pct(&v, 0.99));
    println!(
        "{what}: n={} p50={p50:.1} ms p99={p99:.1} ms max={:.1} ms",
        v.len(),
        v[v.len() - 1]
    );
    (p50, p99)
}
