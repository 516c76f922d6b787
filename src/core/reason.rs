//! Why a condition or an Event says what it says: one typed reason, never a string that code
//! matches by prefix or suffix. The text of each is what users, alerts and Argo CD see, so it
//! never changes for a variant.

use std::fmt;

macro_rules! reasons {
    ($($variant:ident = $text:literal,)*) => {
        /// A condition or Event reason.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($variant,)*
        }

        impl Reason {
            /// Every reason, for tests and documentation.
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)*];

            /// The text written into conditions and Events.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$variant => $text,)*
                }
            }
        }
    };
}

reasons! {
    // The loop's own states.
    ReconcileSuccess = "ReconcileSuccess",
    ReconcilePaused = "ReconcilePaused",
    Observing = "Observing",
    Idle = "Idle",
    NotStalled = "NotStalled",
    InvalidAnnotation = "InvalidAnnotation",
    KubernetesApiError = "KubernetesAPIError",
    NotImplemented = "NotImplemented",
    UnsupportedByProvider = "UnsupportedByProvider",
    DriftCorrected = "DriftCorrected",
    // What an object refers to.
    ProviderNotFound = "ProviderNotFound",
    ProviderNotReady = "ProviderNotReady",
    ProviderInUse = "ProviderInUse",
    ProviderNotAllowed = "ProviderNotAllowed",
    SecretNotFound = "SecretNotFound",
    SecretKeyNotFound = "SecretKeyNotFound",
    SecretValueInvalid = "SecretValueInvalid",
    SecretNamespaceMissing = "SecretNamespaceMissing",
    CredentialsEmpty = "CredentialsEmpty",
    CredentialRequired = "CredentialRequired",
    CredentialsVerified = "CredentialsVerified",
    EndpointRequired = "EndpointRequired",
    EndpointRefused = "EndpointRefused",
    EndpointNotAllowed = "EndpointNotAllowed",
    TlsConfigInvalid = "TLSConfigInvalid",
    PlatformNotSupported = "PlatformNotSupported",
    WorkspaceNotFound = "WorkspaceNotFound",
    WorkspaceNotCreated = "WorkspaceNotCreated",
    WorkspaceNotRunning = "WorkspaceNotRunning",
    WorkspaceOnAnotherProvider = "WorkspaceOnAnotherProvider",
    ServiceNotFound = "ServiceNotFound",
    ScaledByWorkspace = "ScaledByWorkspace",
    TeamRequired = "TeamRequired",
    OrganizationRequired = "OrganizationRequired",
    EnvironmentRequired = "EnvironmentRequired",
    ComputeSettingsRequired = "ComputeSettingsRequired",
    // What the platform answered (see `PlatformError::reason`).
    InvalidCredentials = "InvalidCredentials",
    PermissionDenied = "PermissionDenied",
    NotFoundAtPlatform = "NotFoundAtPlatform",
    PlatformConflict = "PlatformConflict",
    RejectedByPlatform = "RejectedByPlatform",
    QuotaExceeded = "QuotaExceeded",
    RateLimited = "RateLimited",
    PlatformUnavailable = "PlatformUnavailable",
    PlatformTimeout = "PlatformTimeout",
    TlsError = "TLSError",
    UnexpectedAnswer = "UnexpectedAnswer",
    // Finding the platform object.
    ExternalObjectNotFound = "ExternalObjectNotFound",
    ExternalIdInvalid = "ExternalIdInvalid",
    NameTaken = "NameTaken",
    CreateOutcomeUnknown = "CreateOutcomeUnknown",
    NotAComputeInstance = "NotAComputeInstance",
    NotFound = "NotFound",
    UnknownPlan = "UnknownPlan",
    PlanLimitExceeded = "PlanLimitExceeded",
    Adopted = "Adopted",
    // Its life cycle.
    Available = "Available",
    Creating = "Creating",
    Created = "Created",
    Updated = "Updated",
    Deleting = "Deleting",
    Deleted = "Deleted",
    NotDeletedAtPlatform = "NotDeletedAtPlatform",
    Orphaned = "Orphaned",
    Archived = "Archived",
    Retired = "Retired",
    Starting = "Starting",
    Stopping = "Stopping",
    Running = "Running",
    NotRunning = "NotRunning",
    NotServing = "NotServing",
    Unknown = "Unknown",
    Differs = "Differs",
    ReplicasDiffer = "ReplicasDiffer",
    Scaling = "Scaling",
    Scaled = "Scaled",
    EnvUpdated = "EnvUpdated",
    VariablesUpdated = "VariablesUpdated",
    SourcePulled = "SourcePulled",
    // Long operations: pipeline stages, deploys and rollouts.
    StageStarted = "StageStarted",
    StageRunning = "StageRunning",
    StageStopped = "StageStopped",
    StageFailed = "StageFailed",
    StageTimeout = "StageTimeout",
    DeployQueued = "DeployQueued",
    DeployStarted = "DeployStarted",
    Deploying = "Deploying",
    Deployed = "Deployed",
    NotDeployed = "NotDeployed",
    DeployFailed = "DeployFailed",
    DeployCanceled = "DeployCanceled",
    DeployTimeout = "DeployTimeout",
    DeployTimedOut = "DeployTimedOut",
    DeploymentDeadlineExceeded = "DeploymentDeadlineExceeded",
    RevisionMismatch = "RevisionMismatch",
    AuthorizationNeeded = "AuthorizationNeeded",
    CandidateCreated = "CandidateCreated",
    CandidateStarting = "CandidateStarting",
    SwitchingTraffic = "SwitchingTraffic",
    Switched = "Switched",
    RolledOut = "RolledOut",
    ClusterUnreadable = "ClusterUnreadable",
    // Domains and certificates.
    RoutesDiffer = "RoutesDiffer",
    RoutesUpdated = "RoutesUpdated",
    RoutesRemoved = "RoutesRemoved",
    HostDeployStarted = "HostDeployStarted",
    DomainNotVerified = "DomainNotVerified",
    WaitingForDns = "WaitingForDNS",
    Verified = "Verified",
    VerificationFailed = "VerificationFailed",
    CertificateRequested = "CertificateRequested",
    CertificatePending = "CertificatePending",
    CertificateRetry = "CertificateRetry",
    CertificateFailed = "CertificateFailed",
}

impl Reason {
    /// Something the object depends on is missing or not ready yet: worth an Event the first
    /// time it is seen, though bosun only waits.
    pub fn is_missing_dependency(self) -> bool {
        matches!(
            self,
            Reason::ProviderNotFound
                | Reason::ProviderNotReady
                | Reason::SecretNotFound
                | Reason::SecretKeyNotFound
                | Reason::WorkspaceNotFound
                | Reason::ServiceNotFound
                | Reason::ExternalObjectNotFound
                | Reason::NotFound
        )
    }

    /// The credential's Secret (or its key) is gone.
    pub fn is_missing_secret(self) -> bool {
        matches!(self, Reason::SecretNotFound | Reason::SecretKeyNotFound)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn reasons_are_unique_upper_camel_case_words() {
        let mut seen = HashSet::new();
        for r in Reason::ALL {
            let text = r.as_str();
            assert!(seen.insert(text), "{text} twice");
            assert!(
                text.chars().next().is_some_and(|c| c.is_ascii_uppercase()),
                "{text}"
            );
            assert!(text.chars().all(|c| c.is_ascii_alphanumeric()), "{text}");
            // kube's Condition reasons must match this (metav1.Condition validation).
            assert!(text.len() <= 1024);
        }
    }

    #[test]
    fn missing_dependencies_are_the_reasons_that_name_something_missing() {
        // The rule the string matching used to apply ("...NotFound" or "...NotReady"), now
        // written down once per reason.
        for r in Reason::ALL {
            let by_name = r.as_str().ends_with("NotFound") || r.as_str().ends_with("NotReady");
            assert_eq!(r.is_missing_dependency(), by_name, "{r}");
        }
    }
}
