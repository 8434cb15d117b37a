//! What the engine knows besides tasks: process definitions (`ProcessDefinitionRegistered`,
//! once per definition id) and users with their groups (`IdentitySynced`, when it changed).

use std::collections::BTreeMap;
use std::sync::Mutex;

use taskpool_api::bus::{AppendRequest, NewEvent, NO_STREAM};
use taskpool_api::streams::{identity_stream, process_definition_stream};
use taskpool_api::tasks::{
    IdentitySynced, IdentityUser, ProcessDefinitionRegistered, IDENTITY_SYNCED,
    PROCESS_DEFINITION_REGISTERED,
};
use taskpool_api::BusClient;

use crate::emitter::EmitError;
use crate::engine::Engine;
use crate::lease::Fence;
use crate::metrics::Metrics;
use crate::poller::PollError;
use crate::store::Store;

pub struct Registry {
    pub engine: Engine,
    pub bus: BusClient,
    pub store: Store,
    pub metrics: Metrics,
    pub application: String,
    /// The largest event written (`--max-event-bytes`): an identity sync is split to fit.
    max_event_bytes: usize,
    /// Guards every append with this collector's lease (`lease.rs`).
    fence: Fence,
    /// The last identity announced by this process (a restart announces once more).
    last_identity: Mutex<Option<IdentitySynced>>,
}

/// Page size of the engine's user, group and member lists.
const PAGE: u32 = 1_000;

impl Registry {
    pub fn new(
        engine: Engine,
        bus: BusClient,
        store: Store,
        metrics: Metrics,
        application: &str,
        max_event_bytes: usize,
        fence: Fence,
    ) -> Self {
        Registry {
            engine,
            bus,
            store,
            metrics,
            application: application.to_owned(),
            max_event_bytes,
            fence,
            last_identity: Mutex::new(None),
        }
    }

    pub async fn sync(&self) -> Result<(), PollError> {
        self.definitions().await?;
        self.identity().await
    }

    async fn definitions(&self) -> Result<(), PollError> {
        let mut first = 0;
        loop {
            let page = self.engine.process_definitions(first, PAGE).await?;
            for d in &page {
                if self.store.definition_seen(&d.id).await? {
                    continue;
                }
                let start_form = self.engine.start_form(&d.id).await?;
                let starters = crate::authority::starters_of(
                    &self.engine.definition_xml(&d.id).await?,
                    &d.key,
                );
                let event = ProcessDefinitionRegistered {
                    application: self.application.clone(),
                    key: d.key.clone(),
                    id: d.id.clone(),
                    version: d.version,
                    name: d.name.clone(),
                    version_tag: d.version_tag.clone(),
                    startable_in_tasklist: d.startable_in_tasklist,
                    // From the BPMN: the REST API does not list candidate starters.
                    candidate_starter_users: starters.users,
                    candidate_starter_groups: starters.groups,
                    form_key: start_form.key,
                    form_ref: start_form.camunda_form_ref,
                    tenant_id: d.tenant_id.clone(),
                };
                let stream = process_definition_stream(&self.application, &d.id);
                let request = AppendRequest {
                    events: vec![
                        NewEvent::new(&stream, PROCESS_DEFINITION_REGISTERED, &event)
                            .expect("serializable"),
                    ],
                    expected_versions: BTreeMap::from([(stream, NO_STREAM)]),
                };
                match self.fence.append(&self.bus, request).await {
                    Ok(_) => {
                        self.metrics
                            .events_emitted
                            .with_label_values(&[PROCESS_DEFINITION_REGISTERED, "reconcile"])
                            .inc();
                    }
                    // Announced before (by us before a crash, or by the other collector).
                    Err(EmitError::Bus(e)) if e.code() == Some("wrong_expected_version") => {}
                    Err(e) => return Err(e.into()),
                }
                self.store.mark_definition_seen(&d.id).await?;
            }
            if page.len() < PAGE as usize {
                return Ok(());
            }
            first += PAGE;
        }
    }

    /// Every user with their groups: the users a page at a time, then each group's members
    /// (one call per group and page, not one per user: engines hold far more users than
    /// groups). Announced when it changed, split to fit `--max-event-bytes`.
    async fn identity(&self) -> Result<(), PollError> {
        let mut users: BTreeMap<String, IdentityUser> = BTreeMap::new();
        let mut first = 0;
        loop {
            let page = self.engine.users(first, PAGE).await?;
            for u in &page {
                users.insert(
                    u.id.clone(),
                    IdentityUser {
                        id: u.id.clone(),
                        first_name: u.first_name.clone(),
                        last_name: u.last_name.clone(),
                        email: u.email.clone(),
                        groups: Vec::new(),
                    },
                );
            }
            if page.len() < PAGE as usize {
                break;
            }
            first += PAGE;
        }
        let mut first_group = 0;
        loop {
            let groups = self.engine.groups(first_group, PAGE).await?;
            for g in &groups {
                let mut first = 0;
                loop {
                    let members = self.engine.members(&g.id, first, PAGE).await?;
                    for m in &members {
                        if let Some(u) = users.get_mut(&m.id) {
                            u.groups.push(g.id.clone());
                        }
                    }
                    if members.len() < PAGE as usize {
                        break;
                    }
                    first += PAGE;
                }
            }
            if groups.len() < PAGE as usize {
                break;
            }
            first_group += PAGE;
        }
        let synced = IdentitySynced {
            application: self.application.clone(),
            users: users
                .into_values()
                .map(|mut u| {
                    u.groups.sort();
                    u
                })
                .collect(),
            part: None,
        };
        if self.last_identity.lock().expect("identity lock").as_ref() == Some(&synced) {
            return Ok(());
        }
        let stream = identity_stream(&self.application);
        // Parts go one append each, in order; a sync cut short is whole again next time
        // (nothing is remembered as announced until every part is on the bus).
        let parts = synced.clone().split(self.max_event_bytes);
        for part in &parts {
            let request = AppendRequest {
                events: vec![NewEvent::new(&stream, IDENTITY_SYNCED, part).expect("serializable")],
                expected_versions: BTreeMap::new(),
            };
            self.fence.append(&self.bus, request).await?;
            self.metrics
                .events_emitted
                .with_label_values(&[IDENTITY_SYNCED, "reconcile"])
                .inc();
        }
        self.metrics.identity_parts.set(parts.len() as i64);
        *self.last_identity.lock().expect("identity lock") = Some(synced);
        Ok(())
    }
}
