//! The browser setup of the web console's tests works: `evals/browser/smoke.mjs` opens a page
//! served with a strict Content-Security-Policy in headless Chromium (Playwright), clicks, sees
//! the page's own script answer and its inline script refused, and saves a screenshot.
//!
//! Needs no cluster, only `hack/browser deps` and `eval "$(hack/browser env)"` (`hack/test`
//! does both before the evals).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use vexa_evals::browser::{run_script, script};

#[test]
#[ignore = "needs the browser: hack/browser deps and eval \"$(hack/browser env)\""]
fn chromium_renders_a_page() {
    let artifacts = std::env::temp_dir().join(format!("vexa-eval-browser-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&artifacts);

    let run = run_script(&script("smoke.mjs"), &[], &artifacts);
    run.assert_success();

    let smoke = run.result("smoke").unwrap_or_else(|| {
        panic!(
            "smoke.mjs reported nothing:\n{}\n{}",
            run.stdout, run.stderr
        )
    });
    assert_eq!(smoke["smoke"], "ok", "{smoke}");
    assert_eq!(smoke["status"], "clicked", "{smoke}");
    assert!(
        smoke["csp_violations"].as_u64().unwrap() >= 1,
        "the inline script was not reported as refused: {smoke}"
    );
    let png = std::fs::read(artifacts.join("smoke.png")).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG"), "smoke.png is not a PNG");
    eprintln!("chromium {} rendered the page: {smoke}", smoke["chromium"]);

    std::fs::remove_dir_all(&artifacts).unwrap();
}
