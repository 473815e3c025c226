//! The chart's mail settings (`mail.*` in `charts/vexa/values.yaml`), rendered by `helm
//! template` exactly as they ship: off by default (no config, no flags, no mounts); on, the
//! mailboxes become a ConfigMap the operator's own parser reads, each with a `passwordFile` in
//! the read-only mount of `mail.existingSecret` and no password anywhere, the flags
//! (`VEXA_MAIL_CONFIG`, `VEXA_MAIL_POLL_SECONDS`, `VEXA_MAIL_IDLE`) set, a changed mailbox list
//! rolling the pod; and an incomplete configuration refused with what is wrong.
//!
//! Needs helm on PATH (`eval "$(hack/cluster env)"`).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use serde_json::Value;
use vexa_evals::chart::{find, render};
use vexa_operator::mail::MailConfig;

const MAILBOXES: &str = r#"
mail:
  enabled: true
  existingSecret: vexa-mail
  mailboxes:
    - id: triage
      owner: alice
      address: triage@vexa.test
      imap: {host: mail.mail-system.svc, port: 1143}
      smtp: {host: mail.mail-system.svc, port: 2525}
      username: triage
    - id: sales
      owner: bob
      address: sales@vexa.test
      imap: {host: mail.mail-system.svc, port: 1143}
      smtp: {host: mail.mail-system.svc, port: 2525}
      username: sales
      passwordKey: bob-password
      inbox: Sales
"#;

fn operator(docs: &[Value]) -> &Value {
    find(docs, "Deployment", "vexa").expect("the operator Deployment")
}

fn container(docs: &[Value]) -> &Value {
    &operator(docs)["spec"]["template"]["spec"]["containers"][0]
}

fn env<'a>(c: &'a Value, name: &str) -> Option<&'a str> {
    c["env"].as_array()?.iter().find(|e| e["name"] == name)?["value"].as_str()
}

fn mount<'a>(c: &'a Value, name: &str) -> Option<&'a Value> {
    c["volumeMounts"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == name)
}

fn volume<'a>(docs: &'a [Value], name: &str) -> Option<&'a Value> {
    operator(docs)["spec"]["template"]["spec"]["volumes"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == name)
}

#[test]
#[ignore = "needs helm on PATH: eval \"$(hack/cluster env)\""]
fn mail_is_off_by_default() {
    let docs = render("", &[]).unwrap();
    assert!(find(&docs, "ConfigMap", "vexa-mail").is_none());
    let c = container(&docs);
    for name in [
        "VEXA_MAIL_CONFIG",
        "VEXA_MAIL_POLL_SECONDS",
        "VEXA_MAIL_IDLE",
    ] {
        assert!(env(c, name).is_none(), "{name}");
    }
    assert!(mount(c, "mail-config").is_none());
    assert!(mount(c, "mail-passwords").is_none());
    assert!(
        operator(&docs)["spec"]["template"]["metadata"]["annotations"]["checksum/mail-config"]
            .is_null()
    );
}

#[test]
#[ignore = "needs helm on PATH: eval \"$(hack/cluster env)\""]
fn the_mailboxes_reach_the_operator_with_their_passwords_only_in_the_secret_mount() {
    let docs = render(MAILBOXES, &[]).unwrap();
    let cm = find(&docs, "ConfigMap", "vexa-mail").expect("the mail ConfigMap");
    let text = cm["data"]["mail.yaml"].as_str().unwrap();
    assert!(!text.contains("passwordKey"), "{text}");

    // The operator's own parser reads what the chart wrote.
    let file = std::env::temp_dir().join(format!("vexa-chart-mail-{}.yaml", std::process::id()));
    std::fs::write(&file, text).unwrap();
    let config = MailConfig::load(&file);
    let _ = std::fs::remove_file(&file);
    let config = config.unwrap();
    let triage = config
        .watched_by("triage", "alice")
        .expect("alice's triage");
    assert_eq!(
        triage.mailbox.password_file,
        std::path::Path::new("/var/run/vexa/mail-passwords/triage")
    );
    assert_eq!(triage.mailbox.imap.port, 1143);
    let sales = config.watched_by("sales", "bob").expect("bob's sales");
    assert_eq!(
        sales.mailbox.password_file,
        std::path::Path::new("/var/run/vexa/mail-passwords/bob-password")
    );
    assert_eq!(sales.mailbox.inbox, "Sales");

    let c = container(&docs);
    assert_eq!(env(c, "VEXA_MAIL_CONFIG"), Some("/etc/vexa/mail/mail.yaml"));
    assert_eq!(env(c, "VEXA_MAIL_POLL_SECONDS"), Some("30"));
    assert_eq!(env(c, "VEXA_MAIL_IDLE"), Some("true"));
    let config_mount = mount(c, "mail-config").expect("the config mount");
    assert_eq!(config_mount["mountPath"], "/etc/vexa/mail");
    assert_eq!(config_mount["readOnly"], true);
    assert_eq!(
        volume(&docs, "mail-config").unwrap()["configMap"]["name"],
        "vexa-mail"
    );
    let secret_mount = mount(c, "mail-passwords").expect("the passwords' mount");
    assert_eq!(secret_mount["mountPath"], "/var/run/vexa/mail-passwords");
    assert_eq!(secret_mount["readOnly"], true);
    assert_eq!(
        volume(&docs, "mail-passwords").unwrap()["secret"]["secretName"],
        "vexa-mail"
    );
    // No other pod of the release mounts the passwords.
    for d in docs.iter().filter(|d| d["kind"] == "Deployment") {
        if d["metadata"]["name"] != "vexa" {
            assert!(
                !d.to_string().contains("vexa-mail"),
                "{}",
                d["metadata"]["name"]
            );
        }
    }

    let off = render(MAILBOXES, &["mail.idle=false", "mail.pollSeconds=120"]).unwrap();
    assert_eq!(env(container(&off), "VEXA_MAIL_IDLE"), Some("false"));
    assert_eq!(env(container(&off), "VEXA_MAIL_POLL_SECONDS"), Some("120"));
}

#[test]
#[ignore = "needs helm on PATH: eval \"$(hack/cluster env)\""]
fn a_changed_mailbox_list_rolls_the_operator() {
    let checksum = |docs: &[Value]| {
        operator(docs)["spec"]["template"]["metadata"]["annotations"]["checksum/mail-config"]
            .as_str()
            .map(str::to_owned)
    };
    let before = checksum(&render(MAILBOXES, &[]).unwrap()).expect("a checksum");
    let after = checksum(&render(MAILBOXES, &["mail.mailboxes[0].owner=carol"]).unwrap());
    assert_ne!(Some(before), after);
}

#[test]
#[ignore = "needs helm on PATH: eval \"$(hack/cluster env)\""]
fn an_incomplete_mail_configuration_is_refused_with_what_is_wrong() {
    let e = render(MAILBOXES, &["mail.existingSecret="]).unwrap_err();
    assert!(e.contains("mail.existingSecret"), "{e}");
    let e = render(MAILBOXES, &["mail.mailboxes[1].id=triage"]).unwrap_err();
    assert!(e.contains("appears twice"), "{e}");
    let e = render(MAILBOXES, &["mail.mailboxes[0].passwordFile=/etc/passwd"]).unwrap_err();
    assert!(e.contains("passwordKey"), "{e}");
    let e = render(MAILBOXES, &["mail.mailboxes[0].owner="]).unwrap_err();
    assert!(e.contains("mail.mailboxes[0].owner is required"), "{e}");
    let e = render(MAILBOXES, &["mail.pollSeconds=0"]).unwrap_err();
    assert!(e.contains("mail.pollSeconds"), "{e}");
    // Mail on without mailboxes renders (the operator then knows none) and needs no Secret.
    let docs = render("mail: {enabled: true}", &[]).unwrap();
    assert!(find(&docs, "ConfigMap", "vexa-mail").is_some());
    assert!(mount(container(&docs), "mail-passwords").is_none());
}
