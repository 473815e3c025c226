//! The pages, as HTML built by `maud` (every interpolated value is escaped; nothing is ever
//! inserted as raw HTML). Agent output is not in these pages at all: it arrives through the
//! live stream and `assets/console.js` paints it as text.

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use maud::{DOCTYPE, Markup, html};
use vexa_cli::dispatch as d;
use vexa_crds::card::Card;
use vexa_crds::{AgentRunner, Dispatch, Identity, Schedule, Tool, Workspace};

/// The person's view of the console's chrome.
#[derive(Debug, Clone)]
pub struct Frame<'a> {
    /// Who is signed in (`None` on the sign-in page).
    pub person: Option<&'a str>,
    /// The session's CSRF token, for the sign-out form.
    pub csrf: Option<&'a str>,
    /// The namespace the pages look at.
    pub namespace: &'a str,
}

/// A whole page.
pub fn page(frame: &Frame<'_>, title: &str, body: Markup) -> Markup {
    let ns = frame.namespace;
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Vexa" }
                link rel="stylesheet" href="/static/console.css";
                script src="/static/console.js" defer {}
            }
            body {
                header {
                    a.brand href="/" { "Vexa" }
                    @if let Some(person) = frame.person {
                        nav {
                            a href={"/chat?namespace=" (ns)} { "Chat" }
                            a href={"/dispatches?namespace=" (ns)} { "Dispatches" }
                            a href={"/knowledge?namespace=" (ns)} { "Knowledge" }
                            a href={"/cards?namespace=" (ns)} { "Cards" }
                            a href={"/schedules?namespace=" (ns)} { "Schedules" }
                            a href={"/identities?namespace=" (ns)} { "Identities" }
                            a href={"/admin?namespace=" (ns)} { "Admin" }
                        }
                        form.namespace method="get" action="/dispatches" {
                            label { "namespace " input name="namespace" value=(ns) size="16"; }
                        }
                        span #person { (person) }
                        @if let Some(csrf) = frame.csrf {
                            form.inline method="post" action="/signout" {
                                input type="hidden" name="csrf" value=(csrf);
                                button { "Sign out" }
                            }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// The sign-in page: the OpenID provider's button (`provider`: what it is called, when the
/// console has one), and the token form.
pub fn signin(error: Option<&str>, provider: Option<&str>) -> Markup {
    let frame = Frame {
        person: None,
        csrf: None,
        namespace: "",
    };
    page(
        &frame,
        "Sign in",
        html! {
            @if let Some(e) = error { p.error #signin-error role="alert" { (e) } }
            @if let Some(provider) = provider {
                p { a.button #signin-oidc href="/signin/oidc" { "Sign in with " (provider) } }
                p { "Or, with a token:" }
            }
            p { "Sign in with a bearer token the cluster accepts (your OIDC ID token, or a token \
                 your administrator gave you). The console asks the cluster who it belongs to, and \
                 acts only as you." }
            form method="post" action="/signin" {
                label { "Token " input #token type="password" name="token" autocomplete="off" required; }
                button #signin type="submit" { "Sign in" }
            }
        },
    )
}

/// After the provider's redirect back: a page of the console's own that moves on to `/`.
/// (The session cookie is `SameSite=Strict`, and a redirect chain that began at the provider
/// is cross-site, so a plain redirect would arrive without it.)
pub fn signed_in(person: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content="0; url=/";
                title { "Signed in · Vexa" }
                link rel="stylesheet" href="/static/console.css";
            }
            body {
                main {
                    p #signed-in { "Signed in as " strong { (person) } ". " a href="/" { "Continue" } }
                }
            }
        }
    }
}

/// A refusal or failure, said plainly.
pub fn problem(frame: &Frame<'_>, title: &str, message: &str) -> Markup {
    page(
        frame,
        title,
        html! { p.error #problem role="alert" { (message) } },
    )
}

fn age(t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>, now: Timestamp) -> String {
    t.map(|t| vexa_cli::cards::age(now.as_second() - t.0.as_second()))
        .unwrap_or_default()
}

/// The phase a person should read: `stopping` once a stop was asked, the refusal, the wait.
fn phase_text(x: &Dispatch) -> String {
    if x.spec.stop == Some(true) && !d::is_over(x) {
        "stopping".into()
    } else {
        d::phase_name(x)
    }
}

fn reason(x: &Dispatch) -> String {
    d::refusal(x)
        .or_else(|| d::waiting(x))
        .or_else(|| d::is_over(x).then(|| d::how_it_ended(x)))
        .unwrap_or_default()
}

/// Filters of the dispatch list.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct ListFilter {
    /// Only this phase.
    #[serde(default)]
    pub phase: Option<String>,
    /// Only this subject.
    #[serde(default)]
    pub subject: Option<String>,
}

impl ListFilter {
    fn keeps(&self, x: &Dispatch) -> bool {
        let some = |f: &Option<String>| f.as_deref().filter(|s| !s.is_empty()).map(str::to_owned);
        some(&self.phase).is_none_or(|p| phase_text(x) == p)
            && some(&self.subject).is_none_or(|s| x.spec.identity.subject == s)
    }
}

/// The dispatches of a namespace, newest first.
pub fn dispatches(
    frame: &Frame<'_>,
    list: &[Dispatch],
    filter: &ListFilter,
    now: Timestamp,
) -> Markup {
    let mut rows: Vec<&Dispatch> = list.iter().filter(|x| filter.keeps(x)).collect();
    rows.sort_by_key(|x| std::cmp::Reverse(x.metadata.creation_timestamp.clone().map(|t| t.0)));
    let ns = frame.namespace;
    page(
        frame,
        "Dispatches",
        html! {
            form.filters method="get" action="/dispatches" {
                input type="hidden" name="namespace" value=(ns);
                label { "phase " input name="phase" value=[filter.phase.as_deref()] size="10"; }
                label { "subject " input name="subject" value=[filter.subject.as_deref()] size="16"; }
                button { "Filter" }
            }
            table #dispatches data-refresh="5" {
                thead { tr { th { "Name" } th { "Phase" } th { "Reason" } th { "Trigger" } th { "Subject" } th { "Launcher" } th { "Age" } } }
                tbody {
                    @for x in &rows {
                        tr data-name=(x.name_any()) {
                            td { a href={"/n/" (ns) "/dispatches/" (x.name_any())} { (x.name_any()) } }
                            td.phase { (phase_text(x)) }
                            td { (reason(x)) }
                            td { (format!("{:?}", x.spec.trigger).to_lowercase()) }
                            td { (x.spec.identity.subject) }
                            td { (x.spec.identity.launcher) }
                            td { (age(x.metadata.creation_timestamp.as_ref(), now)) }
                        }
                    }
                }
            }
            @if rows.is_empty() { p.empty { "No dispatches here that you may see." } }
        },
    )
}

/// What the person may do on a dispatch (asked of the cluster as them).
#[derive(Debug, Clone, Copy, Default)]
pub struct DispatchRights {
    /// Send turns (and so stop it).
    pub send: bool,
}

/// One dispatch: its state, how it is served, its provenance, its events, and its live stream.
pub fn dispatch(
    frame: &Frame<'_>,
    x: &Dispatch,
    events: &[k8s_openapi::api::core::v1::Event],
    audit: &Result<Vec<String>, String>,
    rights: DispatchRights,
) -> Markup {
    let ns = frame.namespace;
    let name = x.name_any();
    let status = x.status.clone().unwrap_or_default();
    let base = format!("/n/{ns}/dispatches/{name}");
    page(
        frame,
        &format!("Dispatch {name}"),
        html! {
            dl.facts {
                dt { "Phase" } dd #phase { (phase_text(x)) }
                @let why = reason(x);
                @if !why.is_empty() { dt { "Reason" } dd #reason { (why) } }
                dt { "Subject" } dd { (x.spec.identity.subject) }
                dt { "Launcher" } dd { (x.spec.identity.launcher) }
                dt { "Runner" } dd { (x.spec.runner) }
                dt { "Workspaces" } dd { @for w in &x.spec.workspaces { span.ws { (w.name) } " " } }
                dt { "Job" } dd #job { (status.job_name.clone().unwrap_or_default()) }
                dt { "Pod" } dd #pod { (status.pod_name.clone().unwrap_or_default()) }
                @if let Some(t) = x.annotations().get(vexa_core::trace::ANNOTATION) {
                    dt { "Trace" } dd { (t) }
                }
            }
            @if !status.provenance.is_empty() {
                h2 { "Provenance" }
                table #provenance {
                    thead { tr { th { "Workspace" } th { "Base" } th { "Result" } } }
                    @for p in &status.provenance {
                        tr { td { (p.workspace) } td.sha { (p.base_commit.clone().unwrap_or_default()) } td.sha { (p.result_commit.clone().unwrap_or_default()) } }
                    }
                }
            }
            h2 { "Conversation" }
            div #stream data-src={(base) "/stream"} aria-live="polite" {}
            p #stream-state {}
            @if rights.send && !d::is_over(x) {
                form #turn method="post" action={(base) "/turns"} {
                    input type="hidden" name="csrf" value=[frame.csrf];
                    textarea name="prompt" rows="3" required placeholder="Your next message" {}
                    button #send type="submit" { "Send" }
                }
                form #stop method="post" action={(base) "/stop"} {
                    input type="hidden" name="csrf" value=[frame.csrf];
                    button.danger type="submit" { "Stop" }
                }
            }
            h2 { "Conditions" }
            table #conditions {
                thead { tr { th { "Type" } th { "Status" } th { "Reason" } th { "Message" } } }
                @for c in &status.conditions {
                    tr { td { (c.type_) } td { (c.status) } td { (c.reason) } td { (c.message) } }
                }
            }
            h2 { "Audit" }
            @match audit {
                Ok(lines) if lines.is_empty() => p.empty #audit { "No audit records yet." },
                Ok(lines) => ol #audit { @for l in lines { li.sha { (l) } } },
                Err(why) => p.empty #audit { (why) },
            }
            h2 { "Events" }
            table #events {
                thead { tr { th { "Type" } th { "Reason" } th { "Message" } th { "Count" } } }
                @for e in events {
                    tr {
                        td { (e.type_.clone().unwrap_or_default()) }
                        td { (e.reason.clone().unwrap_or_default()) }
                        td { (e.message.clone().unwrap_or_default()) }
                        td { (e.count.unwrap_or(1)) }
                    }
                }
            }
        },
    )
}

/// The chat form: runner, workspaces, thread, message.
pub fn chat(
    frame: &Frame<'_>,
    runners: &[AgentRunner],
    workspaces: &[Workspace],
    error: Option<&str>,
) -> Markup {
    page(
        frame,
        "Chat",
        html! {
            @if let Some(e) = error { p.error #problem role="alert" { (e) } }
            form #chat method="post" action={"/chat?namespace=" (frame.namespace)} {
                input type="hidden" name="csrf" value=[frame.csrf];
                label { "Runner "
                    @if runners.is_empty() {
                        input name="runner" required size="24";
                    } @else {
                        select name="runner" required {
                            @for r in runners { option value=(r.name_any()) { (r.name_any()) } }
                        }
                    }
                }
                fieldset {
                    legend { "Workspaces" }
                    @for w in workspaces {
                        label.ws { input type="checkbox" name="workspace" value=(w.name_any()); " " (w.name_any()) }
                    }
                    @if workspaces.is_empty() { span.empty { "none you may see" } }
                }
                label { "Thread " input name="thread" value="main" required size="16"; }
                textarea name="prompt" rows="4" required placeholder="Your message" {}
                button #send type="submit" { "Send" }
            }
        },
    )
}

/// A card and what the person may do with it.
#[derive(Debug)]
pub struct CardRow<'a> {
    /// The card.
    pub card: &'a Card,
    /// Whether the person may decide it (RBAC and ownership, both as the cluster enforces).
    pub may_decide: bool,
}

/// The cards of a namespace.
pub fn cards(frame: &Frame<'_>, rows: &[CardRow<'_>], now: Timestamp) -> Markup {
    let ns = frame.namespace;
    page(
        frame,
        "Cards",
        html! {
            table #cards {
                thead { tr { th { "Name" } th { "Title" } th { "Owner" } th { "Decision" } th { "Age" } th {} } }
                @for r in rows {
                    @let c = r.card;
                    tr data-name=(c.name_any()) {
                        td { (c.name_any()) }
                        td { (c.spec.title) }
                        td { (c.spec.owner) }
                        td.decision { @if let Some(x) = &c.spec.decision { (format!("{:?}", x.verdict).to_lowercase()) " by " (x.by.clone().unwrap_or_default()) } }
                        td { (age(c.metadata.creation_timestamp.as_ref(), now)) }
                        td {
                            @if r.may_decide && vexa_cli::cards::is_pending(c) {
                                @for verdict in ["approve", "reject"] {
                                    form.inline method="post" action={"/n/" (ns) "/cards/" (c.name_any()) "/" (verdict)} {
                                        input type="hidden" name="csrf" value=[frame.csrf];
                                        button.{(verdict)} type="submit" { (verdict) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if rows.is_empty() { p.empty { "No cards here that you may see." } }
        },
    )
}

/// The administrator's glance: the operator's health and key figures, runners and whether
/// they are ready, and the namespace's tools (each, or why the person may not see it).
/// `operator` is `None` when the console was not told where the operator's metrics are.
pub fn admin(
    frame: &Frame<'_>,
    operator: Option<Result<&crate::health::Health, &str>>,
    runners: Result<&[AgentRunner], &str>,
    dispatches: &[Dispatch],
    tools: Result<&[Tool], &str>,
) -> Markup {
    let live = dispatches.iter().filter(|x| d::is_live(x)).count();
    let queued = dispatches
        .iter()
        .filter(|x| d::phase_name(x) == "queued")
        .count();
    page(
        frame,
        "Admin",
        html! {
            dl.facts {
                dt { "Live dispatches" } dd #live { (live) }
                dt { "Queued" } dd #queued { (queued) }
            }
            h2 { "Operator" }
            (operator_health(operator))
            h2 { "Runners" }
            @match runners {
                Ok(runners) => {
                    table #runners {
                        thead { tr { th { "Name" } th { "Ready" } th { "Message" } } }
                        @for r in runners {
                            @let ready = r.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
                            tr { td { (r.name_any()) } td { (ready.map(|c| c.status.clone()).unwrap_or_default()) } td { (ready.map(|c| c.message.clone()).unwrap_or_default()) } }
                        }
                    }
                }
                Err(why) => p.error #runners-refused { (why) },
            }
            h2 { "Tools" }
            @match tools {
                Ok(tools) => {
                    table #tools {
                        thead { tr { th { "Name" } th { "Tool" } th { "Scope" } th { "Grant" } th { "Audience" } th { "Ready" } th { "Message" } } }
                        @for t in tools {
                            @let ready = t.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
                            tr data-name=(t.name_any()) {
                                td { (t.name_any()) }
                                td { (t.spec.tool_name) }
                                td { (t.spec.scope) }
                                td { (format!("{:?}", t.spec.grant).to_lowercase()) @if t.spec.irreversible { " · irreversible" } }
                                td { (t.spec.audience) }
                                td { (ready.map(|c| c.status.clone()).unwrap_or_default()) }
                                td { (ready.map(|c| c.message.clone()).unwrap_or_default()) }
                            }
                        }
                    }
                    @if tools.is_empty() { p.empty { "No tools in this namespace." } }
                }
                Err(why) => p.error { (why) },
            }
        },
    )
}

/// The operator's section of the admin page: ready or not, the dispatch latencies, runs by
/// phase, reconciles and their errors, and when it was read.
fn operator_health(operator: Option<Result<&crate::health::Health, &str>>) -> Markup {
    use crate::health;
    let h = match operator {
        None => {
            return html! { p.empty #operator-unknown { "The console was not told where the operator's metrics are (--operator-service)." } };
        }
        Some(Err(why)) => return html! { p.error #operator-refused { (why) } },
        Some(Ok(h)) => h,
    };
    let f = &h.figures;
    let quantile =
        |q: Option<health::Quantile>| q.map_or_else(|| "–".to_owned(), |q| q.to_string());
    html! {
        dl.facts #operator {
            dt { "Ready" }
            @match &h.ready {
                Ok(()) => dd #operator-ready { "yes" },
                Err(why) => dd.error #operator-ready { "no: " (why) },
            }
            dt { "Active runs" } dd #operator-active { (f.active()) }
            dt { "Waiting to start" } dd #operator-queued { (f.waiting()) }
            dt { "Longest starting" } dd { (f.oldest_starting.map_or_else(|| "–".to_owned(), health::seconds)) }
            dt { "Read" } dd #operator-read-at { (h.read_at.strftime("%Y-%m-%d %H:%M:%S UTC")) " from " (h.service) }
        }
        table #operator-latency {
            thead { tr { th { "Dispatch latency" } th { "Runs" } th { "Mean" } th { "p50" } th { "p95" } } }
            @for l in &f.latencies {
                tr data-metric=(l.metric) {
                    td { (l.what) } td { (l.count) }
                    td.mean { (l.mean.map_or_else(|| "–".to_owned(), health::seconds)) }
                    td.p50 { (quantile(l.p50)) } td.p95 { (quantile(l.p95)) }
                }
            }
        }
        @if !f.phases.is_empty() {
            table #operator-phases {
                thead { tr { th { "Phase" } th { "Dispatches" } } }
                @for (phase, n) in &f.phases { tr data-phase=(phase) { td { (phase) } td { (n) } } }
            }
        }
        table #operator-reconciles {
            thead { tr { th { "Controller" } th { "Reconciles" } th { "Errors" } } }
            @for (kind, r) in &f.controllers {
                tr data-controller=(kind) {
                    td { (kind) }
                    td { (r.total) }
                    td {
                        @if r.errors.is_empty() { "none" }
                        @for (i, (reason, n)) in r.errors.iter().enumerate() {
                            @if i > 0 { ", " }
                            (reason) ": " (n)
                        }
                    }
                }
            }
        }
        @if !f.runs.is_empty() {
            p #operator-runs {
                "Runs ended: "
                @for (i, (reason, n)) in f.runs.iter().enumerate() {
                    @if i > 0 { ", " }
                    (reason) " " (n)
                }
            }
        }
    }
}

fn time(t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> String {
    t.map(|t| t.0.to_string()).unwrap_or_default()
}

/// A schedule and whether the person may act on it (patch, asked of the cluster as them).
#[derive(Debug)]
pub struct ScheduleRow<'a> {
    /// The schedule.
    pub schedule: &'a Schedule,
    /// Run now, suspend, resume.
    pub may_act: bool,
}

/// The schedules of a namespace: when each fires next, what it ran, what it skipped and why.
pub fn schedules(frame: &Frame<'_>, rows: &[ScheduleRow<'_>]) -> Markup {
    let ns = frame.namespace;
    page(
        frame,
        "Schedules",
        html! {
            @for row in rows {
                @let sc = row.schedule;
                @let st = sc.status.clone().unwrap_or_default();
                section.schedule data-name=(sc.name_any()) {
                    h2 { (sc.name_any()) @if sc.spec.suspend { " (suspended)" } }
                    @if row.may_act {
                        @let actions: [(&str, &str); 3] = [("run-now", "Run now"), (if sc.spec.suspend { "unsuspend" } else { "suspend" }, if sc.spec.suspend { "Unsuspend" } else { "Suspend" }), ("resume", "Resume after a failure")];
                        @for (action, label) in actions {
                            form.inline method="post" action={"/n/" (ns) "/schedules/" (sc.name_any()) "/" (action)} {
                                input type="hidden" name="csrf" value=[frame.csrf];
                                button.{(action)} type="submit" { (label) }
                            }
                        }
                    }
                    dl.facts {
                        dt { "Cron" } dd { (sc.spec.schedule.clone().unwrap_or_default()) " " (sc.spec.time_zone.clone().unwrap_or_default()) }
                        dt { "Next" } dd.next { (time(st.next_schedule_time.as_ref())) }
                        dt { "Last" } dd { (time(st.last_schedule_time.as_ref())) }
                        dt { "Active" } dd { @for a in &st.active { a href={"/n/" (frame.namespace) "/dispatches/" (a)} { (a) } " " } }
                    }
                    @if !st.recent.is_empty() {
                        table.recent {
                            thead { tr { th { "Run" } th { "Due" } th { "Phase" } th { "Stop reason" } } }
                            @for r in &st.recent {
                                tr { td { a href={"/n/" (frame.namespace) "/dispatches/" (r.name)} { (r.name) } } td { (r.scheduled_time.0) } td { (r.phase.clone().unwrap_or_default()) } td { (r.stop_reason.clone().unwrap_or_default()) } }
                            }
                        }
                    }
                    @if !st.actions.is_empty() {
                        ul.actions { @for a in &st.actions { li { (vexa_cli::schedule::render_record(a)) } } }
                    }
                    @if !st.missed.is_empty() {
                        table.missed {
                            thead { tr { th { "Skipped run due" } th { "Reason" } th { "Message" } } }
                            @for m in &st.missed {
                                tr { td { (m.scheduled_time.0) } td { (m.reason) } td { (m.message.clone().unwrap_or_default()) } }
                            }
                        }
                    }
                }
            }
            @if rows.is_empty() { p.empty { "No schedules here that you may see." } }
        },
    )
}

/// The identities of a namespace: whose they are, which cluster users act as them, and what
/// each grant lets a launcher do on their behalf.
pub fn identities(frame: &Frame<'_>, list: &[Identity]) -> Markup {
    page(
        frame,
        "Identities",
        html! {
            @for id in list {
                section.identity data-name=(id.name_any()) {
                    h2 { (id.spec.subject) }
                    p { "Cluster users: " (id.spec.kubernetes_users.join(", ")) }
                    table.grants {
                        thead { tr { th { "Grant" } th { "Launcher" } th { "Workspaces" } th { "Tools" } th { "Expires" } } }
                        @for g in &id.spec.grants {
                            tr {
                                td { (g.name) }
                                td { (g.launcher) }
                                td { @for w in &g.workspaces { (w.name) ":" (w.mode.as_str()) " " } }
                                td { (g.tools.join(", ")) }
                                td { (time(g.expires.as_ref())) }
                            }
                        }
                    }
                }
            }
            @if list.is_empty() { p.empty { "No identities here that you may see." } }
        },
    )
}
