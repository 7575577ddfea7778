//! Authentication and authorization state, replicated through raft so that
//! every node enforces the same rules (etcd's model: users, roles holding
//! key-range permissions, a built-in `root` role).
//!
//! This module is pure: `AuthState` is data, `apply` is the one function
//! that changes it (run by the state machine for each committed `AuthOp`),
//! and `perm` answers "may this user touch these keys". Password hashing
//! (`password`) and tokens (`token`) are here too; no I/O happens in any
//! of them.

pub mod password;
pub mod perm;
pub mod token;

use std::collections::{BTreeMap, BTreeSet};

use kvapi::ROOT;
use serde::{Deserialize, Serialize};

pub use perm::{Access, Grant, GrantEnd, KeySpan};

/// Everything the auth API changes. Kept in the state machine (and in
/// snapshots), published to the API as an `Arc` after each apply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthState {
    pub enabled: bool,
    /// Advances by one with every successful change.
    pub revision: u64,
    /// HMAC key of the tokens, created by the first `enable` and kept
    /// across disable/enable so that tokens stay verifiable.
    #[serde(with = "serde_bytes")]
    pub signing_key: Vec<u8>,
    pub users: BTreeMap<String, User>,
    /// Roles other than `root`, which is built in and holds every right.
    pub roles: BTreeMap<String, Role>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// PHC string (argon2id); `None` for a certificate-only user.
    pub password_hash: Option<String>,
    pub roles: BTreeSet<String>,
    /// Tokens name the generation they were issued for; a new password
    /// (or deleting and re-adding the user) starts a new one, which
    /// retires the user's older tokens and nobody else's.
    pub generation: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    pub grants: Vec<Grant>,
}

/// A change to the auth state, proposed through raft. Passwords travel
/// only as hashes: the node that receives the request hashes them, so no
/// plaintext reaches the raft log, a snapshot or a peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthOp {
    /// `signing_key` is used only if the cluster has none yet.
    Enable {
        #[serde(with = "serde_bytes")]
        signing_key: Vec<u8>,
    },
    Disable,
    UserAdd {
        name: String,
        password_hash: Option<String>,
        roles: Vec<String>,
    },
    UserDelete {
        name: String,
    },
    UserPassword {
        name: String,
        password_hash: Option<String>,
    },
    UserGrantRole {
        name: String,
        role: String,
    },
    UserRevokeRole {
        name: String,
        role: String,
    },
    RoleAdd {
        name: String,
    },
    RoleDelete {
        name: String,
    },
    RoleGrant {
        name: String,
        grant: Grant,
    },
    RoleRevoke {
        name: String,
        key: String,
        end: GrantEnd,
    },
}

/// Why an `AuthOp` changed nothing. Decided at apply time, identically on
/// every node, and carried back to the client in the command result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AuthError {
    #[error("user {0:?} already exists")]
    UserExists(String),
    #[error("user {0:?} not found")]
    UserNotFound(String),
    #[error("role {0:?} already exists")]
    RoleExists(String),
    #[error("role {0:?} not found")]
    RoleNotFound(String),
    #[error("user {user:?} does not have role {role:?}")]
    RoleNotGranted { user: String, role: String },
    #[error("role {role:?} has no permission on these keys")]
    PermissionNotGranted { role: String },
    #[error("auth enable needs a user \"root\" that has the role \"root\"")]
    RootUserMissing,
    #[error(
        "while auth is enabled the root user and its root role cannot be removed; disable auth first"
    )]
    RootNeeded,
    #[error("the root role is built in: it has every permission and cannot be changed")]
    RootRoleFixed,
}

impl AuthState {
    /// Whether `user` holds the root role.
    pub fn is_root(&self, user: &str) -> bool {
        self.users.get(user).is_some_and(|u| u.roles.contains(ROOT))
    }

    /// Whether `user` may perform `access` on every key of `span`.
    pub fn allows(&self, user: &str, access: Access, span: &KeySpan) -> bool {
        let Some(u) = self.users.get(user) else {
            return false;
        };
        if u.roles.contains(ROOT) {
            return true;
        }
        let grants = u
            .roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .flat_map(|r| r.grants.iter())
            .filter(|g| g.kind.allows(access));
        perm::covers(grants, span)
    }

    /// Role names, `root` included.
    pub fn role_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.roles.keys().cloned().collect();
        v.push(ROOT.to_owned());
        v.sort();
        v
    }

    fn role_exists(&self, name: &str) -> bool {
        name == ROOT || self.roles.contains_key(name)
    }

    fn user_mut(&mut self, name: &str) -> Result<&mut User, AuthError> {
        self.users
            .get_mut(name)
            .ok_or_else(|| AuthError::UserNotFound(name.to_owned()))
    }

    /// A role whose grants may change (any but the built-in `root`).
    fn custom_role_mut(&mut self, name: &str) -> Result<&mut Role, AuthError> {
        if name == ROOT {
            return Err(AuthError::RootRoleFixed);
        }
        self.roles
            .get_mut(name)
            .ok_or_else(|| AuthError::RoleNotFound(name.to_owned()))
    }

    /// Applies one change; on error the state is untouched.
    pub fn apply(&mut self, op: AuthOp) -> Result<(), AuthError> {
        let next = self.revision + 1;
        match op {
            AuthOp::Enable { signing_key } => {
                if !self.is_root(ROOT) {
                    return Err(AuthError::RootUserMissing);
                }
                if self.signing_key.is_empty() {
                    self.signing_key = signing_key;
                }
                self.enabled = true;
            }
            AuthOp::Disable => self.enabled = false,
            AuthOp::UserAdd {
                name,
                password_hash,
                roles,
            } => {
                if self.users.contains_key(&name) {
                    return Err(AuthError::UserExists(name));
                }
                if let Some(r) = roles.iter().find(|r| !self.role_exists(r)) {
                    return Err(AuthError::RoleNotFound(r.clone()));
                }
                self.users.insert(
                    name,
                    User {
                        password_hash,
                        roles: roles.into_iter().collect(),
                        generation: next,
                    },
                );
            }
            AuthOp::UserDelete { name } => {
                if self.enabled && name == ROOT {
                    return Err(AuthError::RootNeeded);
                }
                if self.users.remove(&name).is_none() {
                    return Err(AuthError::UserNotFound(name));
                }
            }
            AuthOp::UserPassword {
                name,
                password_hash,
            } => {
                let u = self.user_mut(&name)?;
                u.password_hash = password_hash;
                u.generation = next;
            }
            AuthOp::UserGrantRole { name, role } => {
                if !self.role_exists(&role) {
                    return Err(AuthError::RoleNotFound(role));
                }
                self.user_mut(&name)?.roles.insert(role);
            }
            AuthOp::UserRevokeRole { name, role } => {
                if self.enabled && name == ROOT && role == ROOT {
                    return Err(AuthError::RootNeeded);
                }
                let u = self.user_mut(&name)?;
                if !u.roles.remove(&role) {
                    return Err(AuthError::RoleNotGranted { user: name, role });
                }
            }
            AuthOp::RoleAdd { name } => {
                if self.role_exists(&name) {
                    return Err(AuthError::RoleExists(name));
                }
                self.roles.insert(name, Role::default());
            }
            AuthOp::RoleDelete { name } => {
                if name == ROOT {
                    return Err(AuthError::RootRoleFixed);
                }
                if self.roles.remove(&name).is_none() {
                    return Err(AuthError::RoleNotFound(name));
                }
                // As etcd: users keep no grant of a role that is gone.
                for u in self.users.values_mut() {
                    u.roles.remove(&name);
                }
            }
            AuthOp::RoleGrant { name, grant } => {
                let role = self.custom_role_mut(&name)?;
                // Granting the same keys again replaces the kind, as etcd.
                role.grants
                    .retain(|g| !(g.key == grant.key && g.end == grant.end));
                role.grants.push(grant);
                role.grants.sort();
            }
            AuthOp::RoleRevoke { name, key, end } => {
                let role = self.custom_role_mut(&name)?;
                let before = role.grants.len();
                role.grants.retain(|g| !(g.key == key && g.end == end));
                if role.grants.len() == before {
                    return Err(AuthError::PermissionNotGranted { role: name });
                }
            }
        }
        self.revision = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::perm::GrantKind;

    fn user_add(name: &str, roles: &[&str]) -> AuthOp {
        AuthOp::UserAdd {
            name: name.into(),
            password_hash: Some("h".into()),
            roles: roles.iter().map(|r| r.to_string()).collect(),
        }
    }

    fn grant(key: &str, end: GrantEnd, kind: GrantKind) -> Grant {
        Grant {
            kind,
            key: key.into(),
            end,
        }
    }

    #[test]
    fn enable_needs_root_with_the_root_role_and_keeps_the_first_key() {
        let mut s = AuthState::default();
        let enable = |k: u8| AuthOp::Enable {
            signing_key: vec![k; 32],
        };
        assert_eq!(s.apply(enable(1)), Err(AuthError::RootUserMissing));
        s.apply(user_add("root", &[])).expect("add root");
        assert_eq!(s.apply(enable(1)), Err(AuthError::RootUserMissing));
        s.apply(AuthOp::UserGrantRole {
            name: "root".into(),
            role: "root".into(),
        })
        .expect("grant");
        s.apply(enable(1)).expect("enable");
        assert!(s.enabled);
        s.apply(AuthOp::Disable).expect("disable");
        s.apply(enable(2)).expect("enable again");
        assert_eq!(s.signing_key, vec![1; 32], "tokens must stay verifiable");
        assert_eq!(s.revision, 5);
    }

    #[test]
    fn root_cannot_be_removed_while_enabled() {
        let mut s = AuthState::default();
        s.apply(user_add("root", &["root"])).expect("root");
        s.apply(AuthOp::Enable {
            signing_key: vec![0; 32],
        })
        .expect("enable");
        let rev = s.revision;
        let del = AuthOp::UserDelete {
            name: "root".into(),
        };
        assert_eq!(s.apply(del.clone()), Err(AuthError::RootNeeded));
        let revoke = AuthOp::UserRevokeRole {
            name: "root".into(),
            role: "root".into(),
        };
        assert_eq!(s.apply(revoke), Err(AuthError::RootNeeded));
        assert_eq!(s.revision, rev, "a refused change is no change");
        s.apply(AuthOp::Disable).expect("disable");
        s.apply(del).expect("delete once disabled");
    }

    #[test]
    fn password_change_starts_a_new_generation_for_that_user_only() {
        let mut s = AuthState::default();
        s.apply(user_add("a", &[])).expect("a");
        s.apply(user_add("b", &[])).expect("b");
        let (ga, gb) = (s.users["a"].generation, s.users["b"].generation);
        s.apply(AuthOp::UserPassword {
            name: "a".into(),
            password_hash: Some("h2".into()),
        })
        .expect("passwd");
        assert!(s.users["a"].generation > ga);
        assert_eq!(s.users["b"].generation, gb);
        // Re-creating a user never reuses an old generation.
        s.apply(AuthOp::UserDelete { name: "b".into() })
            .expect("delete");
        s.apply(user_add("b", &[])).expect("b again");
        assert!(s.users["b"].generation > gb);
    }

    #[test]
    fn role_errors_and_deleting_a_role_removes_it_from_users() {
        let mut s = AuthState::default();
        assert_eq!(
            s.apply(user_add("a", &["app"])),
            Err(AuthError::RoleNotFound("app".into()))
        );
        s.apply(AuthOp::RoleAdd { name: "app".into() })
            .expect("role");
        assert_eq!(
            s.apply(AuthOp::RoleAdd { name: "app".into() }),
            Err(AuthError::RoleExists("app".into()))
        );
        assert_eq!(
            s.apply(AuthOp::RoleAdd {
                name: "root".into()
            }),
            Err(AuthError::RoleExists("root".into()))
        );
        s.apply(user_add("a", &["app"])).expect("user");
        s.apply(AuthOp::RoleDelete { name: "app".into() })
            .expect("delete role");
        assert!(s.users["a"].roles.is_empty());
        assert_eq!(s.role_names(), vec!["root".to_string()]);
    }

    #[test]
    fn grants_replace_same_keys_and_revoke_names_exact_keys() {
        let mut s = AuthState::default();
        s.apply(AuthOp::RoleAdd { name: "r".into() }).expect("role");
        let g = |kind| AuthOp::RoleGrant {
            name: "r".into(),
            grant: grant("app/", GrantEnd::Prefix, kind),
        };
        s.apply(g(GrantKind::Read)).expect("read");
        s.apply(g(GrantKind::Readwrite)).expect("readwrite");
        assert_eq!(s.roles["r"].grants.len(), 1);
        assert_eq!(s.roles["r"].grants[0].kind, GrantKind::Readwrite);
        let revoke = |end| AuthOp::RoleRevoke {
            name: "r".into(),
            key: "app/".into(),
            end,
        };
        assert_eq!(
            s.apply(revoke(GrantEnd::Key)),
            Err(AuthError::PermissionNotGranted { role: "r".into() })
        );
        s.apply(revoke(GrantEnd::Prefix)).expect("revoke");
        assert!(s.roles["r"].grants.is_empty());
        assert_eq!(
            s.apply(AuthOp::RoleGrant {
                name: "root".into(),
                grant: grant("x", GrantEnd::Key, GrantKind::Read),
            }),
            Err(AuthError::RootRoleFixed)
        );
    }

    #[test]
    fn allows_combines_roles_and_root_allows_everything() {
        let mut s = AuthState::default();
        for (role, key, kind) in [
            ("reader", "a", GrantKind::Read),
            ("writer", "m", GrantKind::Write),
        ] {
            s.apply(AuthOp::RoleAdd { name: role.into() })
                .expect("role");
            s.apply(AuthOp::RoleGrant {
                name: role.into(),
                grant: grant(key, GrantEnd::Prefix, kind),
            })
            .expect("grant");
        }
        s.apply(user_add("u", &["reader", "writer"])).expect("u");
        s.apply(user_add("root", &["root"])).expect("root");
        let key = |k: &str| KeySpan::key(k);
        assert!(s.allows("u", Access::Read, &key("a1")));
        assert!(!s.allows("u", Access::Write, &key("a1")));
        assert!(s.allows("u", Access::Write, &key("m1")));
        assert!(!s.allows("u", Access::Read, &key("m1")));
        assert!(!s.allows("u", Access::Read, &KeySpan::all()));
        assert!(!s.allows("nobody", Access::Read, &key("a1")));
        assert!(s.allows("root", Access::Write, &KeySpan::all()));
    }
}
