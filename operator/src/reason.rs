//! Every condition and event reason the operator writes. Reasons are
//! user-facing API (alerts and scripts match on them), so they live in one
//! list, and a test checks that docs/operator.md documents each one.

use std::fmt;

macro_rules! reasons {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[$doc])* $name),*
        }

        impl Reason {
            pub const ALL: &'static [Reason] = &[$(Reason::$name),*];

            /// The CamelCase word Kubernetes shows.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$name => stringify!($name)),*
                }
            }
        }
    };
}

reasons! {
    // Available
    QuorumAvailable,
    NotInitialized,
    NoLeader,
    QuorumUnhealthy,
    // Progressing
    Scaling,
    Converged,
    Held,
    Paused,
    WaitingForNodes,
    WaitingForPod,
    WaitingForCatchUp,
    MembershipChangeInProgress,
    RollingUpdate,
    // Degraded: holds
    ClusterLost,
    InvalidSpec,
    NoTransferTarget,
    WouldLoseQuorum,
    RolloutStuck,
    QuorumLost,
    // Degraded: trouble that holds nothing
    Healthy,
    ForeignNode,
    MembersUnhealthy,
    StorageChangeNotApplied,
    TlsChangeNotApplied,
    CertManagerMissing,
    AuthUnsupported,
    AuthNotApplied,
    AuthChangeNotApplied,
    RecoveryRefused,
    StaleMember,
    // Events: one per membership step
    InitializeCluster,
    RestoreFromBackup,
    AddLearner,
    PromoteVoter,
    TransferLeadership,
    DemoteVoter,
    RemoveMember,
    RemoveLostMember,
    EnableAuth,
    ReplacePod,
    ForceNewCluster,
    // Events: other
    MembershipStepFailed,
    RestoreFailed,
    DeletedVolume,
    ExpandVolume,
    ReplaceStatefulSet,
    IssuedCertificates,
    CreatedRootSecret,
    PodDisruptionBudgetUnsupported,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<Reason> for String {
    fn eq(&self, other: &Reason) -> bool {
        self == other.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_documented_in_operator_md() {
        let doc = include_str!("../../docs/operator.md");
        let missing: Vec<&str> = Reason::ALL
            .iter()
            .map(|r| r.as_str())
            .filter(|r| !doc.contains(&format!("`{r}`")))
            .collect();
        assert!(
            missing.is_empty(),
            "docs/operator.md does not mention {missing:?}"
        );
    }
}
