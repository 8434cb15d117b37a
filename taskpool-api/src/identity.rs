//! The users and groups an engine knows (`IdentitySynced`, stream `identity/{application}`):
//! the event, how a sync too large for one event is split into parts, and how a part is
//! applied to what a reader holds.

use serde::{Deserialize, Serialize};

/// `IdentitySynced`, stream `identity/{application}`: every user the engine knows and the ids
/// of its groups — in one event, or, when that would be too large, in parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct IdentitySynced {
    pub application: String,
    pub users: Vec<IdentityUser>,
    /// Present when one sync is split: this event holds exactly the users whose ids lie in
    /// the part's range and leaves the application's other users as they are. Each part
    /// stands on its own, so a reader that sees only some parts (a sync cut short) holds
    /// every user as one sync or the other told it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<IdentityPart>,
}

/// A range of user ids (by byte order) and where it stands in its sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct IdentityPart {
    /// The first id the part covers; absent: from the first.
    pub from: Option<String>,
    /// The first id after the part; absent: to the last.
    pub until: Option<String>,
    /// Which part of how many (from 0), for readers and operators.
    pub index: u32,
    pub count: u32,
}

impl IdentityPart {
    pub fn covers(&self, user_id: &str) -> bool {
        self.from.as_deref().is_none_or(|f| user_id >= f)
            && self.until.as_deref().is_none_or(|u| user_id < u)
    }
}

impl IdentitySynced {
    /// The application's identity once this event is applied to `current`: the event's users
    /// where it is whole; `current`'s users outside the part's range plus the part's where it
    /// is a part. Users sorted by id.
    pub fn applied_to(self, current: Option<&IdentitySynced>) -> IdentitySynced {
        let Some(part) = self.part else {
            return self;
        };
        let mut users: Vec<IdentityUser> = current
            .map(|c| {
                c.users
                    .iter()
                    .filter(|u| !part.covers(&u.id))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        users.extend(self.users.into_iter().filter(|u| part.covers(&u.id)));
        users.sort_by(|a, b| a.id.cmp(&b.id));
        IdentitySynced {
            application: self.application,
            users,
            part: None,
        }
    }

    /// This identity as events of at most about `max_bytes` each (JSON): itself when it fits,
    /// else parts over consecutive id ranges that together cover every id. A single user
    /// larger than that still goes, alone.
    pub fn split(mut self, max_bytes: usize) -> Vec<IdentitySynced> {
        let whole = crate::bus::json_len(&self);
        if whole <= max_bytes {
            return vec![self];
        }
        self.users.sort_by(|a, b| a.id.cmp(&b.id));
        // Room for the application and the part's two ids besides the users.
        let longest_id = self.users.iter().map(|u| u.id.len()).max().unwrap_or(0);
        let budget = max_bytes.saturating_sub(self.application.len() + 2 * longest_id + 160);
        let mut chunks: Vec<Vec<IdentityUser>> = vec![Vec::new()];
        let mut size = 0;
        for user in self.users {
            let user_len = crate::bus::json_len(&user) + 1;
            let current = chunks.last_mut().expect("one chunk at least");
            if !current.is_empty() && size + user_len > budget {
                chunks.push(Vec::new());
                size = 0;
            }
            size += user_len;
            chunks.last_mut().expect("one chunk at least").push(user);
        }
        let firsts: Vec<String> = chunks.iter().map(|c| c[0].id.clone()).collect();
        let count = chunks.len() as u32;
        chunks
            .into_iter()
            .enumerate()
            .map(|(i, users)| IdentitySynced {
                application: self.application.clone(),
                users,
                part: Some(IdentityPart {
                    from: (i > 0).then(|| firsts[i].clone()),
                    until: firsts.get(i + 1).cloned(),
                    index: i as u32,
                    count,
                }),
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct IdentityUser {
    pub id: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
    pub groups: Vec<String>,
}
