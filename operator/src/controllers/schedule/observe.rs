//! Reads what a Schedule's decision depends on: the Schedule itself as the API server has it
//! now (its status is the plan's cursor, so a stale cached copy would plan a time twice), the
//! Dispatches it controls and its subject's Identity. I/O only.

use kube::api::ListParams;
use kube::{Api, ResourceExt};
use std::collections::BTreeMap;
use vexa_core::names::SCHEDULE_LABEL;

use vexa_crds::{Dispatch, EventCursor, EventTrigger, EventType, Identity, Schedule, Transcript};
use vexa_email::Filter;

use super::decide::Observed;
use super::error::Error;
use super::events::{
    Event, MAX_EVENT_RUNS, email_events, email_position, email_source, mail_cursor,
    transcript_events,
};
use super::run::label_value;
use crate::mail::MailConfig;
use crate::runtime::owned::is_controlled_by;

/// The current Schedule (`None`: deleted) and what it depends on.
pub async fn observe(
    client: &kube::Client,
    mail: Option<&MailConfig>,
    schedule: &Schedule,
) -> Result<Option<(Schedule, Observed)>, Error> {
    let ns = schedule.namespace().ok_or(Error::Malformed)?;
    let name = schedule.name_any();
    let Some(current) = Api::<Schedule>::namespaced(client.clone(), &ns)
        .get_opt(&name)
        .await?
    else {
        return Ok(None);
    };
    let uid = current.uid().unwrap_or_default();
    let selector = format!("{SCHEDULE_LABEL}={}", label_value(&name));
    let dispatches = Api::<Dispatch>::namespaced(client.clone(), &ns)
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .into_iter()
        // A label can be set by anyone who may create Dispatches: only the owner UID counts.
        .filter(|d| is_controlled_by(&d.metadata, &uid))
        .collect();
    let identity = Api::<Identity>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .find(|i| i.spec.subject == current.spec.subject);
    let binds_transcripts = current
        .spec
        .events
        .iter()
        .any(|e| e.event_type == EventType::TranscriptCompleted);
    let mut events = if binds_transcripts {
        let transcripts = Api::<Transcript>::namespaced(client.clone(), &ns)
            .list(&ListParams::default())
            .await?
            .items;
        transcript_events(&current, &transcripts)
    } else {
        Vec::new()
    };
    let (mail_events, advance, source_errors) = read_mail(&current, mail).await;
    events.extend(mail_events);
    Ok(Some((
        current,
        Observed {
            dispatches,
            identity,
            events,
            advance,
            source_errors,
        },
    )))
}

/// The new mail of each mailbox `schedule` watches, from its cursor, as events (those its
/// filters keep), with the cursor to keep; and the mailboxes that could not be read.
async fn read_mail(
    schedule: &Schedule,
    mail: Option<&MailConfig>,
) -> (Vec<Event>, Vec<EventCursor>, Vec<String>) {
    let mut events = Vec::new();
    let mut advance = Vec::new();
    let mut errors = Vec::new();
    let mut by_mailbox: BTreeMap<&str, Vec<&EventTrigger>> = BTreeMap::new();
    for e in &schedule.spec.events {
        if e.event_type == EventType::EmailReceived {
            match &e.mailbox {
                Some(m) => by_mailbox.entry(m.as_str()).or_default().push(e),
                None => errors
                    .push("an email.received trigger names no mailbox: it never fires".to_owned()),
            }
        }
    }
    let subject = &schedule.spec.subject;
    for (id, triggers) in by_mailbox {
        let Some(entry) = mail.and_then(|m| m.watched_by(id, subject)) else {
            errors.push(format!(
                "mailbox {id:?} is not one of {subject:?}'s mailboxes in the operator's --mail-config: it is not read"
            ));
            continue;
        };
        let filters: Vec<Filter> = triggers
            .iter()
            .filter_map(|t| Filter::new(t.from.as_deref(), t.subject_pattern.as_deref()).ok())
            .collect();
        let source = email_source(id);
        let Some(cursor) = mail_cursor(schedule, id) else {
            // The first look: from the mailbox's current end.
            match vexa_email::current_cursor(&entry.mailbox).await {
                Ok(c) => advance.push(EventCursor {
                    source,
                    position: email_position(c),
                }),
                Err(e) => errors.push(format!("mailbox {id:?}: {e}")),
            }
            continue;
        };
        match vexa_email::fetch_new(&entry.mailbox, Some(cursor), MAX_EVENT_RUNS).await {
            Ok(f) => {
                events.extend(email_events(
                    id,
                    f.cursor.uid_validity,
                    &f.headers,
                    |h| filters.iter().any(|f| f.matches(h)),
                    chrono::Utc::now(),
                ));
                advance.push(EventCursor {
                    source,
                    position: email_position(f.cursor),
                });
            }
            Err(e) => errors.push(format!("mailbox {id:?}: {e}")),
        }
    }
    (events, advance, errors)
}
