//! The cluster's ceilings on a run (chart values, operator flags): a Dispatch, or its runner's
//! defaults, asking for a longer life, a longer idle wait or more CPU or memory than the
//! cluster allows is refused with what it asked and what is allowed. Pure.

use k8s_openapi::api::core::v1::ResourceRequirements;
use vexa_policy::Refusal;

/// The most a run may have. `None`: no ceiling.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ceilings {
    /// Longest lifetime, in seconds.
    pub max_lifetime_seconds: Option<i64>,
    /// Longest idle timeout, in seconds.
    pub idle_timeout_seconds: Option<i64>,
    /// Most CPU (cores) a request or limit may name.
    pub cpu: Option<String>,
    /// Most memory (bytes) a request or limit may name.
    pub memory: Option<String>,
}

/// Checks the limits in force (after the runner's and the operator's defaults) against the
/// ceilings.
pub fn check(
    ceilings: &Ceilings,
    lifetime: i64,
    idle: i64,
    resources: Option<&ResourceRequirements>,
) -> Result<(), Refusal> {
    let refuse = |what: &str, asked: String, most: String, value: &str| Refusal {
        reason: "LimitAboveCeiling",
        message: format!(
            "the run asks for {what} {asked}, above this cluster's ceiling of {most} (chart \
             value ceilings.{value}): ask for less, in the Dispatch or its AgentRunner's defaults"
        ),
    };
    if let Some(most) = ceilings.max_lifetime_seconds
        && lifetime > most
    {
        return Err(refuse(
            "a maximum lifetime of",
            format!("{lifetime} s"),
            format!("{most} s"),
            "maxLifetimeSeconds",
        ));
    }
    if let Some(most) = ceilings.idle_timeout_seconds
        && idle > most
    {
        return Err(refuse(
            "an idle timeout of",
            format!("{idle} s"),
            format!("{most} s"),
            "idleTimeoutSeconds",
        ));
    }
    let Some(r) = resources else {
        return Ok(());
    };
    for (resource, ceiling, value) in [
        ("cpu", &ceilings.cpu, "cpu"),
        ("memory", &ceilings.memory, "memory"),
    ] {
        let Some(most) = ceiling.as_deref().filter(|c| !c.is_empty()) else {
            continue;
        };
        let Some(most_n) = amount(most) else {
            continue;
        };
        for (kind, list) in [("request", &r.requests), ("limit", &r.limits)] {
            let Some(asked) = list.as_ref().and_then(|l| l.get(resource)) else {
                continue;
            };
            // An amount that does not parse was accepted by the API server; it is compared
            // as unbounded, so it never slips under a ceiling.
            if amount(&asked.0).is_none_or(|a| a > most_n) {
                return Err(refuse(
                    &format!("a {resource} {kind} of"),
                    asked.0.clone(),
                    most.to_owned(),
                    value,
                ));
            }
        }
    }
    Ok(())
}

/// The value of a Kubernetes quantity (`500m` = 0.5, `2Gi` = 2·2³⁰, `1e3` = 1000).
pub fn amount(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let n: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        s if s.starts_with('e') || s.starts_with('E') => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    Some(n * factor)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use rstest::rstest;

    fn ceilings() -> Ceilings {
        Ceilings {
            max_lifetime_seconds: Some(3600),
            idle_timeout_seconds: Some(600),
            cpu: Some("2".into()),
            memory: Some("4Gi".into()),
        }
    }

    fn resources(kind: &str, cpu: &str, memory: &str) -> ResourceRequirements {
        let map = [
            ("cpu".to_string(), Quantity(cpu.into())),
            ("memory".to_string(), Quantity(memory.into())),
        ]
        .into_iter()
        .collect();
        match kind {
            "requests" => ResourceRequirements {
                requests: Some(map),
                ..Default::default()
            },
            _ => ResourceRequirements {
                limits: Some(map),
                ..Default::default()
            },
        }
    }

    #[rstest]
    #[case::within(3600, 600, resources("limits", "2", "4Gi"), None)]
    #[case::millicores(60, 60, resources("requests", "1500m", "512Mi"), None)]
    #[case::long_life(
        7200,
        60,
        resources("limits", "1", "1Gi"),
        Some("maximum lifetime of 7200 s")
    )]
    #[case::long_idle(
        60,
        601,
        resources("limits", "1", "1Gi"),
        Some("idle timeout of 601 s")
    )]
    #[case::cpu_limit(
        60,
        60,
        resources("limits", "2100m", "1Gi"),
        Some("cpu limit of 2100m")
    )]
    #[case::memory_request(60, 60, resources("requests", "1", "5G"), Some("memory request of 5G"))]
    #[case::unparsable(60, 60, resources("limits", "1", "lots"), Some("memory limit of lots"))]
    fn a_run_stays_under_the_ceilings(
        #[case] life: i64,
        #[case] idle: i64,
        #[case] r: ResourceRequirements,
        #[case] refused: Option<&str>,
    ) {
        let got = check(&ceilings(), life, idle, Some(&r));
        match refused {
            None => got.unwrap(),
            Some(text) => {
                let e = got.unwrap_err();
                assert_eq!(e.reason, "LimitAboveCeiling");
                assert!(e.message.contains(text), "{}", e.message);
                assert!(e.message.contains("chart value ceilings."), "{}", e.message);
            }
        }
    }

    #[test]
    fn no_ceiling_no_refusal() {
        check(
            &Ceilings::default(),
            i64::MAX,
            i64::MAX,
            Some(&resources("limits", "64", "1Ti")),
        )
        .unwrap();
    }

    #[rstest]
    #[case("500m", 0.5)]
    #[case("2", 2.0)]
    #[case("2Gi", 2147483648.0)]
    #[case("1e3", 1000.0)]
    #[case("256M", 256e6)]
    fn amounts(#[case] q: &str, #[case] n: f64) {
        assert!((amount(q).unwrap() - n).abs() < 1e-6, "{q}");
    }
}
