//! Whose groups count where. Groups from a user's credentials (JWT, gateway headers) count in
//! every application; groups an engine's identity gives the user count only for that
//! application's tasks and definitions, or for every application of the same identity realm
//! when the operator says that some applications share one (`--identity-realm local,billing`).

use std::collections::{HashMap, HashSet};

use crate::view::{group_principal, user_principal};

/// Which applications share one identity realm. An application not named in any realm is a
/// realm of its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Realms {
    /// Application → the other applications of its realm.
    shared: HashMap<String, Vec<String>>,
}

impl Realms {
    /// From the realms as configured: each a list of application names.
    pub fn new(realms: &[Vec<String>]) -> Result<Realms, String> {
        let mut shared: HashMap<String, Vec<String>> = HashMap::new();
        for realm in realms {
            for app in realm {
                taskpool_api::streams::valid_application(app)?;
                if shared.contains_key(app) {
                    return Err(format!(
                        "application {app} is named in two identity realms; merge them into one"
                    ));
                }
            }
            for app in realm {
                let others = realm.iter().filter(|a| *a != app).cloned().collect();
                shared.insert(app.clone(), others);
            }
        }
        Ok(Realms { shared })
    }

    /// `application` and the applications sharing its realm.
    pub fn of<'a>(&'a self, application: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        std::iter::once(application).chain(
            self.shared
                .get(application)
                .into_iter()
                .flatten()
                .map(String::as_str),
        )
    }
}

/// What a user may see tasks by, per application: `user:{u}` and `group:{g}` principals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Principals {
    /// The user and the groups of their credentials: they count in every application.
    everywhere: Vec<String>,
    /// Per application, the further groups its identity realm gives the user.
    by_application: HashMap<String, Vec<String>>,
}

impl Principals {
    /// `user` with `groups` from their credentials, and per application the groups its
    /// identity realm gives them.
    pub fn new(
        user: &str,
        groups: &[String],
        by_application: impl IntoIterator<Item = (String, Vec<String>)>,
    ) -> Principals {
        let everywhere: Vec<String> = std::iter::once(user_principal(user))
            .chain(groups.iter().map(|g| group_principal(g)))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let by_application = by_application
            .into_iter()
            .filter_map(|(app, groups)| {
                let extra: Vec<String> = groups
                    .iter()
                    .map(|g| group_principal(g))
                    .filter(|p| !everywhere.contains(p))
                    .collect::<HashSet<_>>()
                    .into_iter()
                    .collect();
                (!extra.is_empty()).then_some((app, extra))
            })
            .collect();
        Principals {
            everywhere,
            by_application,
        }
    }

    /// Principals that count in every application alike (for tests and tools).
    pub fn everywhere(principals: impl IntoIterator<Item = impl Into<String>>) -> Principals {
        Principals {
            everywhere: principals.into_iter().map(Into::into).collect(),
            by_application: HashMap::new(),
        }
    }

    /// The principals that count in `application`, each once.
    pub fn in_application<'a>(&'a self, application: &str) -> impl Iterator<Item = &'a str> + 'a {
        self.everywhere
            .iter()
            .chain(self.by_application.get(application).into_iter().flatten())
            .map(String::as_str)
    }

    /// Whether one of `authorized` (a task's principals in `application`) is ours there.
    pub fn allows<'a>(
        &self,
        application: &str,
        authorized: impl IntoIterator<Item = &'a String>,
    ) -> bool {
        let extra = self.by_application.get(application);
        authorized
            .into_iter()
            .any(|p| self.everywhere.contains(p) || extra.is_some_and(|e| e.contains(p)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn realms_share_groups_only_where_declared() {
        let realms = Realms::new(&[vec!["local".into(), "billing".into()]]).expect("realms");
        let mut of_local: Vec<&str> = realms.of("local").collect();
        of_local.sort();
        assert_eq!(of_local, ["billing", "local"]);
        assert_eq!(realms.of("hr").collect::<Vec<_>>(), ["hr"]);
        assert!(Realms::new(&[vec!["a".into()], vec!["a".into(), "b".into()]]).is_err());
        assert!(Realms::new(&[vec!["Bad".into()]]).is_err());
    }

    #[test]
    fn engine_groups_count_in_their_application_only() {
        let p = Principals::new(
            "mary",
            &["jwt".into()],
            [("billing".to_owned(), vec!["clerks".into(), "jwt".into()])],
        );
        let names = |app: &str| {
            let mut v: Vec<&str> = p.in_application(app).collect();
            v.sort();
            v
        };
        assert_eq!(names("billing"), ["group:clerks", "group:jwt", "user:mary"]);
        assert_eq!(names("local"), ["group:jwt", "user:mary"]);
        let clerks = ["group:clerks".to_owned()];
        assert!(p.allows("billing", &clerks));
        assert!(!p.allows("local", &clerks));
        assert!(p.allows("local", &["group:jwt".to_owned()]));
    }
}
