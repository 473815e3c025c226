//! `kubectl vexa version`: what this build is. The commit is stamped by `hack/release`
//! (`VEXA_GIT_COMMIT` at build time); a build without it says `unknown`.

use serde_json::json;

/// This build's version, commit and platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// The crate version, as released (`v0.1.0`).
    pub version: String,
    /// The git commit it was built from, or `unknown`.
    pub commit: String,
    /// `<os>/<arch>` as Go and krew name them (`linux/amd64`).
    pub platform: String,
}

impl Version {
    /// The version of the running binary.
    pub fn of_this_build() -> Self {
        Self {
            version: format!("v{}", env!("CARGO_PKG_VERSION")),
            commit: option_env!("VEXA_GIT_COMMIT")
                .filter(|c| !c.is_empty())
                .unwrap_or("unknown")
                .to_owned(),
            platform: platform(std::env::consts::OS, std::env::consts::ARCH),
        }
    }

    /// One line, as `kubectl version --client` prints.
    pub fn text(&self) -> String {
        format!(
            "kubectl-vexa {} (commit {}, {})",
            self.version, self.commit, self.platform
        )
    }

    /// The same, as JSON.
    pub fn json(&self) -> String {
        json!({"version": self.version, "commit": self.commit, "platform": self.platform})
            .to_string()
    }
}

/// Rust's `(os, arch)` in the names krew's selectors and release archives use.
pub fn platform(os: &str, arch: &str) -> String {
    let arch = match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    format!("{os}/{arch}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_use_krews_names() {
        assert_eq!(platform("linux", "x86_64"), "linux/amd64");
        assert_eq!(platform("linux", "aarch64"), "linux/arm64");
        assert_eq!(platform("darwin", "aarch64"), "darwin/arm64");
    }

    #[test]
    fn this_build_is_the_crate_version() {
        let v = Version::of_this_build();
        assert_eq!(v.version, format!("v{}", env!("CARGO_PKG_VERSION")));
        assert!(v.text().starts_with("kubectl-vexa v"), "{}", v.text());
        let parsed: serde_json::Value = serde_json::from_str(&v.json()).unwrap();
        assert_eq!(parsed["platform"], v.platform);
    }
}
