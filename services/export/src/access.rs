//! Who may do what: the access rules of compliance exports, as pure functions over a company's
//! access state (folded from its access commands), tested with a table of cases.
//!
//! The seed's rules: exports are turned on per company by an admin; that admin is at first the
//! only one with access; any admin with access can grant access to other admins (and, we add,
//! revoke it). Nobody else — and no admin of another company — can see anything. The company is
//! always the caller's, from the verified token.
//!
//! [`AccessState::allows`] is the one rule: the RPC layer calls it (through
//! [`AccessState::authorize`], which adds the token's admin flag) before it acts, and the fold
//! (`crate::state`) calls it again when it applies the command, so a command racing a revoke
//! loses.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::auth::Caller;

/// Every RPC, as far as access is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    EnableExports,
    GetSettings,
    GrantAccess,
    RevokeAccess,
    ListAccess,
    CreateExport,
    ReadExports,
    CancelExport,
    GetDownloadUrl,
    ListAuditEvents,
}

/// Why a call is refused, mapped to a gRPC status in one place (`Denied::into_status`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidArgument(String),
    /// A fair-share limit (queued exports per company, watches per admin) is reached.
    #[error("{0}")]
    ResourceExhausted(String),
}

impl Denied {
    pub fn into_status(self) -> tonic::Status {
        match self {
            Self::PermissionDenied(m) => tonic::Status::permission_denied(m),
            Self::FailedPrecondition(m) => tonic::Status::failed_precondition(m),
            Self::NotFound(m) => tonic::Status::not_found(m),
            Self::InvalidArgument(m) => tonic::Status::invalid_argument(m),
            Self::ResourceExhausted(m) => tonic::Status::resource_exhausted(m),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Enabled {
    pub by: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Grant {
    pub by: String,
    pub at: DateTime<Utc>,
}

/// A change to a company's access, as recorded (and audited).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessCommand {
    Enable {
        by: String,
        at: DateTime<Utc>,
    },
    Grant {
        admin: String,
        by: String,
        at: DateTime<Utc>,
    },
    Revoke {
        admin: String,
        by: String,
        at: DateTime<Utc>,
    },
}

/// One company's access state.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AccessState {
    pub enabled: Option<Enabled>,
    /// Admins with access, by admin id.
    pub grants: BTreeMap<String, Grant>,
}

impl AccessState {
    /// Whether `caller` may perform `action` now: an administrator (from the token) whom
    /// [`Self::allows`] allows.
    pub fn authorize(&self, caller: &Caller, action: Action) -> Result<(), Denied> {
        if !caller.is_admin {
            return Err(Denied::PermissionDenied(
                "only company administrators can use compliance exports".into(),
            ));
        }
        self.allows(&caller.admin_id, action)
    }

    /// The access rule: whether the administrator `admin_id` may perform `action` now. The RPC
    /// layer and the fold both decide with it.
    pub fn allows(&self, admin_id: &str, action: Action) -> Result<(), Denied> {
        match action {
            Action::EnableExports | Action::GetSettings => return Ok(()),
            _ => {}
        }
        if self.enabled.is_none() {
            return Err(Denied::FailedPrecondition(
                "compliance exports are not enabled for your company: an administrator must \
                 enable them first (EnableExports)"
                    .into(),
            ));
        }
        if !self.grants.contains_key(admin_id) {
            return Err(Denied::PermissionDenied(
                "you do not have access to compliance exports: ask an administrator who has \
                 access to grant it to you"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Applies a command that `authorize` allowed. Idempotent where the API says so.
    pub fn apply(&mut self, command: &AccessCommand) -> Result<(), Denied> {
        match command {
            AccessCommand::Enable { by, at } => {
                if self.enabled.is_none() {
                    self.enabled = Some(Enabled {
                        by: by.clone(),
                        at: *at,
                    });
                    self.grants.insert(
                        by.clone(),
                        Grant {
                            by: by.clone(),
                            at: *at,
                        },
                    );
                }
            }
            AccessCommand::Grant { admin, by, at } => {
                if admin.trim().is_empty() {
                    return Err(Denied::InvalidArgument(
                        "admin_id is empty: name the admin to grant access to".into(),
                    ));
                }
                self.grants.entry(admin.clone()).or_insert(Grant {
                    by: by.clone(),
                    at: *at,
                });
            }
            AccessCommand::Revoke { admin, .. } => {
                if !self.grants.contains_key(admin) {
                    return Err(Denied::NotFound(format!(
                        "admin {admin:?} has no access to revoke"
                    )));
                }
                if self.grants.len() == 1 {
                    return Err(Denied::FailedPrecondition(
                        "that is the last admin with access: grant access to another admin first"
                            .into(),
                    ));
                }
                self.grants.remove(admin);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(id: &str) -> Caller {
        Caller {
            admin_id: id.into(),
            company_id: "acme".into(),
            is_admin: true,
            email: None,
        }
    }

    fn at() -> DateTime<Utc> {
        "2026-11-25T00:00:00Z".parse().unwrap()
    }

    fn enabled_by_ann() -> AccessState {
        let mut state = AccessState::default();
        state
            .apply(&AccessCommand::Enable {
                by: "ann".into(),
                at: at(),
            })
            .unwrap();
        state
    }

    #[test]
    fn the_seed_access_rules() {
        use Action::*;
        let not_admin = Caller {
            admin_id: "eve".into(),
            company_id: "acme".into(),
            is_admin: false,
            email: None,
        };
        let mut granted = enabled_by_ann();
        granted
            .apply(&AccessCommand::Grant {
                admin: "bob".into(),
                by: "ann".into(),
                at: at(),
            })
            .unwrap();
        type Case = (
            &'static str,
            AccessState,
            Caller,
            Action,
            Result<(), &'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "a non-admin can do nothing",
                enabled_by_ann(),
                not_admin.clone(),
                GetSettings,
                Err("permission"),
            ),
            (
                "a non-admin cannot enable",
                AccessState::default(),
                not_admin,
                EnableExports,
                Err("permission"),
            ),
            (
                "any admin may enable",
                AccessState::default(),
                admin("ann"),
                EnableExports,
                Ok(()),
            ),
            (
                "before enabling, creating fails the precondition",
                AccessState::default(),
                admin("ann"),
                CreateExport,
                Err("precondition"),
            ),
            (
                "before enabling, nobody can grant",
                AccessState::default(),
                admin("ann"),
                GrantAccess,
                Err("precondition"),
            ),
            (
                "the enabler has access",
                enabled_by_ann(),
                admin("ann"),
                CreateExport,
                Ok(()),
            ),
            (
                "another admin has none at first",
                enabled_by_ann(),
                admin("bob"),
                ReadExports,
                Err("permission"),
            ),
            (
                "another admin cannot grant themself",
                enabled_by_ann(),
                admin("bob"),
                GrantAccess,
                Err("permission"),
            ),
            (
                "a granted admin can read",
                granted.clone(),
                admin("bob"),
                ReadExports,
                Ok(()),
            ),
            (
                "a granted admin can grant",
                granted.clone(),
                admin("bob"),
                GrantAccess,
                Ok(()),
            ),
            (
                "a granted admin can get links",
                granted.clone(),
                admin("bob"),
                GetDownloadUrl,
                Ok(()),
            ),
            (
                "a granted admin can read the audit",
                granted,
                admin("bob"),
                ListAuditEvents,
                Ok(()),
            ),
            (
                "settings are visible to every admin",
                enabled_by_ann(),
                admin("cy"),
                GetSettings,
                Ok(()),
            ),
        ];
        for (name, state, caller, action, want) in cases {
            let got = state.authorize(&caller, action);
            match (want, got) {
                (Ok(()), Ok(())) => {}
                (Err("permission"), Err(Denied::PermissionDenied(m)))
                | (Err("precondition"), Err(Denied::FailedPrecondition(m))) => {
                    assert!(!m.is_empty(), "{name}")
                }
                (want, got) => panic!("{name}: wanted {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn revoking_takes_effect_and_never_leaves_nobody() {
        let mut state = enabled_by_ann();
        state
            .apply(&AccessCommand::Grant {
                admin: "bob".into(),
                by: "ann".into(),
                at: at(),
            })
            .unwrap();
        assert!(state.authorize(&admin("bob"), Action::CreateExport).is_ok());
        state
            .apply(&AccessCommand::Revoke {
                admin: "bob".into(),
                by: "ann".into(),
                at: at(),
            })
            .unwrap();
        assert!(matches!(
            state.authorize(&admin("bob"), Action::CreateExport),
            Err(Denied::PermissionDenied(_))
        ));
        assert!(matches!(
            state.apply(&AccessCommand::Revoke {
                admin: "bob".into(),
                by: "ann".into(),
                at: at()
            }),
            Err(Denied::NotFound(_))
        ));
        assert!(matches!(
            state.apply(&AccessCommand::Revoke {
                admin: "ann".into(),
                by: "ann".into(),
                at: at()
            }),
            Err(Denied::FailedPrecondition(_))
        ));
        // Enabling again changes nothing: the first enabler stays the record.
        state
            .apply(&AccessCommand::Enable {
                by: "bob".into(),
                at: at(),
            })
            .unwrap();
        assert_eq!(state.enabled.as_ref().map(|e| e.by.as_str()), Some("ann"));
        assert!(!state.grants.contains_key("bob"));
    }
}
