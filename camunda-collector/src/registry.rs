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
use crate::metrics::Metrics;
use crate::poller::PollError;
use crate::store::Store;

pub struct Registry {
    pub engine: Engine,
    pub bus: BusClient,
    pub store: Store,
    pub metrics: Metrics,
    pub application: String,
    /// The last identity announced by this process (a restart announces once more).
    last_identity: Mutex<Option<IdentitySynced>>,
}

const PAGE: u32 = 200;

impl Registry {
    pub fn new(
        engine: Engine,
        bus: BusClient,
        store: Store,
        metrics: Metrics,
        application: &str,
    ) -> Self {
        Registry {
            engine,
            bus,
            store,
            metrics,
            application: application.to_owned(),
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
                let form_key = self.engine.start_form_key(&d.id).await?;
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
                    form_key,
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
                match self.bus.append(&request).await {
                    Ok(_) => {
                        self.metrics
                            .events_emitted
                            .with_label_values(&[PROCESS_DEFINITION_REGISTERED, "reconcile"])
                            .inc();
                    }
                    // Announced before (by us before a crash, or by the other collector).
                    Err(e) if e.code() == Some("wrong_expected_version") => {}
                    Err(e) => return Err(EmitError::from(e).into()),
                }
                self.store.mark_definition_seen(&d.id).await?;
            }
            if page.len() < PAGE as usize {
                return Ok(());
            }
            first += PAGE;
        }
    }

    async fn identity(&self) -> Result<(), PollError> {
        let mut users = Vec::new();
        let mut first = 0;
        loop {
            let page = self.engine.users(first, PAGE).await?;
            for u in &page {
                let mut groups: Vec<String> = self
                    .engine
                    .groups_of(&u.id)
                    .await?
                    .into_iter()
                    .map(|g| g.id)
                    .collect();
                groups.sort();
                users.push(IdentityUser {
                    id: u.id.clone(),
                    first_name: u.first_name.clone(),
                    last_name: u.last_name.clone(),
                    email: u.email.clone(),
                    groups,
                });
            }
            if page.len() < PAGE as usize {
                break;
            }
            first += PAGE;
        }
        let synced = IdentitySynced {
            application: self.application.clone(),
            users,
        };
        if self.last_identity.lock().expect("identity lock").as_ref() == Some(&synced) {
            return Ok(());
        }
        let stream = identity_stream(&self.application);
        let request = AppendRequest {
            events: vec![NewEvent::new(&stream, IDENTITY_SYNCED, &synced).expect("serializable")],
            expected_versions: BTreeMap::new(),
        };
        self.bus.append(&request).await.map_err(EmitError::from)?;
        self.metrics
            .events_emitted
            .with_label_values(&[IDENTITY_SYNCED, "reconcile"])
            .inc();
        *self.last_identity.lock().expect("identity lock") = Some(synced);
        Ok(())
    }
}
