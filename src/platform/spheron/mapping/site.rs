//! Spheron sites: the pure planning of a static site's deployments, and the calls that carry
//! them out.

use super::*;

// ---------------------------------------------------------------------------------------------
// Pure planning: sites.

/// A repository URL as bosun compares them (pure): no surrounding space, no trailing `/` or
/// `.git`, lowercase (Git hosts treat owner and name case-insensitively).
pub fn repo_key(url: &str) -> String {
    url.trim()
        .trim_end_matches('/')
        .trim_end_matches(".git")
        .to_ascii_lowercase()
}

/// The Git provider Spheron needs for a repository URL (pure): `GITHUB`, `GITLAB` or
/// `BITBUCKET`, by host; `None` for any other host.
pub fn git_provider(url: &str) -> Option<&'static str> {
    let lower = url.trim().to_ascii_lowercase();
    let rest = match lower.split_once("://") {
        Some((_, rest)) => rest.to_string(),
        // `git@github.com:owner/name`
        None => lower
            .split_once('@')
            .map(|(_, r)| r.to_string())
            .unwrap_or(lower.clone()),
    };
    let host = rest
        .split(['/', ':'])
        .next()
        .unwrap_or_default()
        .rsplit('@')
        .next()
        .unwrap_or_default();
    match host {
        "github.com" | "www.github.com" => Some("GITHUB"),
        "gitlab.com" | "www.gitlab.com" => Some("GITLAB"),
        "bitbucket.org" | "www.bitbucket.org" => Some("BITBUCKET"),
        _ => None,
    }
}

/// The repository's name, its last path segment (pure).
pub fn repo_name(url: &str) -> String {
    let trimmed = url.trim().trim_end_matches('/').trim_end_matches(".git");
    trimmed
        .rsplit(['/', ':'])
        .next()
        .unwrap_or(trimmed)
        .to_string()
}

/// What Spheron builds for a ref (pure). Its start call takes a branch; a tag is passed as the
/// branch (Git resolves a tag by name the same way, an inference: the API documents only
/// branches). There is no way to ask for one commit.
pub fn site_branch(git_ref: GitRef<'_>) -> Result<String, String> {
    match git_ref {
        GitRef::Branch(b) | GitRef::Tag(b) => Ok(b.to_string()),
        GitRef::Commit(c) => Err(format!(
            "spec.source.commit: a Spheron site deploys the head of a branch or a tag, not commit {c}; set spec.source.branch or spec.source.tag"
        )),
    }
}

/// The build settings to deploy with (pure): the spec's, over the project's current ones
/// (a setting the spec leaves out is never changed), over Spheron's defaults for a new project.
pub fn build_configuration(
    site: Option<&SpheronSite>,
    project: Option<&BuildConfiguration>,
) -> BuildConfiguration {
    let mut c = project.cloned().unwrap_or_default();
    if c.framework.is_empty() {
        c.framework = "static".into();
    }
    if c.node_version.is_empty() {
        c.node_version = "V_16".into();
    }
    if let Some(s) = site {
        if let Some(f) = &s.framework {
            c.framework = f.clone();
        }
        if let Some(b) = &s.build_command {
            c.build_command = b.clone();
        }
        if let Some(p) = &s.publish_dir {
            c.publish_dir = p.clone();
        }
    }
    c
}

pub(super) fn fingerprint<T: Hash>(value: &T) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// A site deployment as the spec wants it. Holds resolved variables: never logged.
#[derive(Clone, PartialEq)]
pub struct SiteDesired {
    pub organization: String,
    pub repository: String,
    /// [`repo_key`] of the repository: the project's name for [`locate`].
    pub repo_key: String,
    pub repo_name: String,
    pub provider: &'static str,
    /// `branch:<name>` or `tag:<name>`, as `status.sourceRef` records it.
    pub git_ref: String,
    pub branch: String,
    pub protocol: String,
    pub configuration: BuildConfiguration,
    pub env: BTreeMap<String, String>,
    /// A fingerprint of all of the above.
    pub print: u64,
}

impl SiteDesired {
    /// Reads the spec (pure); `project` is the project's current build settings, if any.
    pub fn new(
        spec: &WorkspaceSpec,
        env: &BTreeMap<String, String>,
        organization: &str,
        project: Option<&BuildConfiguration>,
    ) -> Result<Self, ReconcileError> {
        let repository = spec.source.repository.trim().to_string();
        let provider = git_provider(&repository).ok_or_else(|| {
            ReconcileError::user(
                Reason::UnsupportedByProvider,
                format!("spec.source.repository: Spheron deploys sites from GitHub, GitLab or Bitbucket, not {repository}"),
            )
        })?;
        let branch = site_branch(spec.source.git_ref())
            .map_err(|m| ReconcileError::user(Reason::UnsupportedByProvider, m))?;
        let site = spec.spheron.as_ref().and_then(|s| s.site.as_ref());
        let protocol = site
            .and_then(|s| s.protocol.clone())
            .unwrap_or_else(|| "ipfs".into());
        let configuration = build_configuration(site, project);
        let git_ref = spec.source.git_ref().to_string();
        let print = fingerprint(&(
            organization,
            repo_key(&repository),
            &branch,
            &protocol,
            serde_json::to_string(&configuration).unwrap_or_default(),
            env,
        ));
        Ok(SiteDesired {
            organization: organization.to_string(),
            repo_key: repo_key(&repository),
            repo_name: repo_name(&repository),
            repository,
            provider,
            git_ref,
            branch,
            protocol,
            configuration,
            env: env.clone(),
            print,
        })
    }

    /// The start request (pure). The webhook stays off: bosun, not a push, decides when to
    /// deploy, so every deployment is one bosun tracks.
    pub fn start_body(&self, topic: &str) -> StartDeployment {
        StartDeployment {
            organization_id: self.organization.clone(),
            git_url: self.repository.clone(),
            repo_name: self.repo_name.clone(),
            branch: self.branch.clone(),
            protocol: self.protocol.clone(),
            provider: self.provider.to_string(),
            create_default_webhook: false,
            configuration: self.configuration.clone(),
            env: Some(self.env.clone()),
            unique_topic_id: Some(topic.to_string()),
        }
    }
}

/// The spec fields a finished deployment differs in (pure). Variables the deployment ran
/// with that the spec does not name are fine when they are the project's own variables (set
/// at Spheron); any other extra one was removed from the spec.
pub fn site_differences(
    deployment: &Deployment,
    desired: &SiteDesired,
    project_variables: &[String],
) -> Vec<String> {
    let mut fields = Vec::new();
    if deployment.branch.as_deref() != Some(desired.branch.as_str()) {
        fields.push("spec.source".to_string());
    }
    if deployment
        .protocol
        .as_deref()
        .is_some_and(|p| p != desired.protocol)
    {
        fields.push("spec.spheron.site.protocol".to_string());
    }
    if let Some(c) = &deployment.configuration {
        let d = &desired.configuration;
        for (field, ran, wanted) in [
            ("spec.spheron.site.framework", &c.framework, &d.framework),
            (
                "spec.spheron.site.buildCommand",
                &c.build_command,
                &d.build_command,
            ),
            (
                "spec.spheron.site.publishDir",
                &c.publish_dir,
                &d.publish_dir,
            ),
        ] {
            if ran != wanted {
                fields.push(field.to_string());
            }
        }
    }
    for (key, value) in &desired.env {
        if deployment.env.get(key) != Some(value) {
            fields.push(format!("spec.env[{key}]"));
        }
    }
    for key in deployment.env.keys() {
        if !desired.env.contains_key(key) && !project_variables.contains(key) {
            fields.push(format!("spec.env[{key}]"));
        }
    }
    fields
}

/// What a site Workspace needs next, once the deployment bosun follows has been looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SiteStep {
    /// A deployment is in progress: look again soon.
    Wait,
    /// The deployment waits for someone to authorize it at Spheron.
    Authorize,
    /// A deployment of an older spec is still in flight: cancel it, then start.
    Supersede,
    /// Start a deployment of the spec's source.
    Start,
    /// Redeploy the last deployment: the same commit with the project's latest variables.
    Redeploy,
    /// The last deployment of this spec did not succeed: wait for a change.
    Failed,
    /// The spec's source is deployed.
    Done,
}

/// Plans a site (pure). `op` is the deployment bosun follows, with Spheron's state as last
/// read; `matches` says whether its last successful deployment matches the spec. A
/// deployment bosun did not start (`generation: None`, found on an adopted project) is never
/// canceled and its failure is not this spec's: a new deployment follows it.
pub fn plan_site(
    op: Option<&OperationStatus>,
    generation: i64,
    requested: bool,
    matches: bool,
) -> SiteStep {
    let Some(op) = op.filter(|o| is_site_op(o) && o.state != REQUESTING) else {
        return SiteStep::Start;
    };
    let state = DeploymentStatus::parse(&op.state);
    let ours_now = op.generation == Some(generation);
    if !state.is_terminal() {
        return if op.generation.is_some() && !ours_now {
            SiteStep::Supersede
        } else if state.needs_authorization() {
            SiteStep::Authorize
        } else {
            SiteStep::Wait
        };
    }
    if state.is_success() {
        return match (matches, requested) {
            (false, _) => SiteStep::Start,
            (true, true) => SiteStep::Redeploy,
            (true, false) => SiteStep::Done,
        };
    }
    if ours_now && !requested {
        SiteStep::Failed
    } else {
        SiteStep::Start
    }
}

/// The condition reason for a deployment that ended without success (pure).
pub fn failure_reason_code(state: &DeploymentStatus) -> Reason {
    match state {
        DeploymentStatus::TimedOut => Reason::DeployTimedOut,
        DeploymentStatus::Canceled => Reason::DeployCanceled,
        _ => Reason::DeployFailed,
    }
}

fn is_site_op(op: &OperationStatus) -> bool {
    op.kind == DEPLOY || op.kind == REDEPLOY
}

/// The deployment a call announced as `requesting` turned into, if it reached Spheron (pure):
/// the one carrying the start's topic, or, for a redeploy, the newest one when it is newer
/// than the newest one recorded before the call. `recent` is newest first.
pub fn adopt_requested<'a>(
    op: &OperationStatus,
    recent: &'a [Deployment],
) -> Option<&'a Deployment> {
    let marker = op.id.as_deref()?;
    if let Some(topic) = marker.strip_prefix(TOPIC_PREFIX) {
        return recent.iter().find(|d| d.topic.as_deref() == Some(topic));
    }
    let before = marker.strip_prefix(AFTER_PREFIX)?;
    recent.first().filter(|d| d.id != before)
}

/// The deployment a compute call announced as `requesting` turned into (pure): the
/// instance's newest deployment, when it is not the one recorded before the call.
pub fn adopt_requested_update<'a>(
    op: &OperationStatus,
    newest: Option<&'a str>,
) -> Option<&'a str> {
    let before = op.id.as_deref()?.strip_prefix(AFTER_PREFIX)?;
    newest.filter(|n| *n != before)
}

/// Whether bosun has waited for its deployment past the deadline (pure).
pub fn past_deadline(op: &OperationStatus, now: Timestamp) -> bool {
    op.deadline
        .as_deref()
        .and_then(|d| d.parse::<Timestamp>().ok())
        .is_some_and(|d| now > d)
}

/// A `uniqueTopicId`: a random UUID (version 4), as the SDK sends.
pub fn topic_id() -> String {
    let n: u128 = rand::random();
    let hex = format!("{:032x}", n);
    format!(
        "{}-{}-4{}-{}{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        // The variant bits: 8, 9, a or b.
        ["8", "9", "a", "b"][usize::from(hex.as_bytes()[16] % 4)],
        &hex[17..20],
        &hex[20..32]
    )
}

pub(super) fn new_operation(kind: &str, id: String, generation: i64) -> OperationStatus {
    let now = Timestamp::now();
    OperationStatus {
        kind: kind.into(),
        id: Some(id),
        state: REQUESTING.into(),
        generation: Some(generation),
        started_at: Some(now.to_string()),
        deadline: now.checked_add(DEPLOY_DEADLINE).ok().map(|t| t.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// Sites.

impl SpheronClient {
    pub(super) async fn reconcile_site(
        &self,
        request: &WorkspaceRequest<'_>,
        guard: &dyn CreateGuard,
        organization: &str,
    ) -> Result<Report<WorkspaceStatus>, ReconcileError> {
        let spec = request.spec;
        if spec.replicas > 1 {
            return Err(unsupported(format!(
                "spec.replicas: a Spheron site is static content served by its storage protocol and has no replica count; set spec.replicas to 1 (not {}), or set spec.spheron.compute to run a compute instance with replicas",
                spec.replicas
            )));
        }
        if spec.plan.is_some() {
            return Err(unsupported(
                "spec.plan: a Spheron site has no machine size; remove spec.plan (a compute instance takes spec.spheron.compute.machine)",
            ));
        }
        // Validate the spec before anything is read or written.
        SiteDesired::new(spec, &request.env, organization, None)?;
        let observe_only = request.mode.observing();
        let act = request.mode.act();
        let mut status = request.previous.clone();
        let mut notes = Vec::new();
        status.selector = Some(selector(&request.key));

        let known = known_id(request);
        let wanted = repo_key(&spec.source.repository);
        let requesting = status
            .operation
            .as_ref()
            .is_some_and(|o| o.state == REQUESTING);
        // An earlier create may have gone through unseen: only a fresh listing can tell.
        if request.create_pending || requesting {
            self.forget_projects(organization).await;
        }
        let adopt = spec.adopt_by_name || observe_only;
        let projects = self.projects_of(organization).await?;
        let fresh;
        let mut located = locate(
            &projects,
            known.clone(),
            &wanted,
            request.create_pending,
            adopt,
        );
        if act && matches!(located, Located::Absent | Located::Gone(_)) {
            // About to create: look again in a fresh listing, never a shared one.
            self.forget_projects(organization).await;
            fresh = self.projects_of(organization).await?;
            located = locate(
                &fresh,
                known.clone(),
                &wanted,
                request.create_pending,
                adopt,
            );
        }
        let project = match located {
            Located::Found(p) => p.clone(),
            Located::NameTaken(p) => {
                return Err(ReconcileError::user(
                    Reason::NameTaken,
                    format!(
                        "organization {organization} already has Spheron project {} ({}) for repository {}, which bosun did not create: set spec.adoptByName: true or spec.externalId: \"{}\" to manage it",
                        p.id, p.name, spec.source.repository, p.id
                    ),
                ));
            }
            Located::Ambiguous(n) => {
                return Err(ReconcileError::user(
                    Reason::CreateOutcomeUnknown,
                    format!(
                        "organization {organization} has {n} Spheron projects for repository {}: set spec.externalId to the one to manage",
                        spec.source.repository
                    ),
                ));
            }
            Located::Gone(id) if self.owned_by_other_kind(organization, &id, false).await? => {
                return Err(unsupported(format!(
                    "spec.spheron.compute: this Workspace manages compute instance {id}, and a compute instance cannot become a site; create a new Workspace for the site"
                )));
            }
            Located::Gone(id) if spec.external_id.is_some() || !act => {
                return Err(ReconcileError::user(
                    Reason::ExternalObjectNotFound,
                    format!("organization {organization} has no Spheron project {id}"),
                ));
            }
            Located::Absent | Located::Gone(_) if !act => {
                let msg = format!(
                    "organization {organization} has no Spheron project for repository {}",
                    spec.source.repository
                );
                return Ok(not_found(status, notes, observe_only, msg));
            }
            gone_or_absent => {
                if let Located::Gone(id) = gone_or_absent {
                    notes.push(Note::warning(
                        Reason::DriftCorrected,
                        "Create",
                        format!("Spheron project {id} is gone at the platform; deploying again"),
                    ));
                    status.operation = None;
                }
                return self
                    .create_site(request, guard, organization, status, notes)
                    .await;
            }
        };
        let desired = SiteDesired::new(
            spec,
            &request.env,
            organization,
            project.configuration.as_ref(),
        )?;

        if status.external_id.as_deref() != Some(project.id.as_str()) {
            if act {
                guard.created(&project.id).await?;
            }
            notes.push(Note::normal(
                Reason::Adopted,
                "Adopt",
                format!("manages Spheron project {} ({})", project.id, project.name),
            ));
            status.external_id = Some(project.id.clone());
        }
        if project.state == ProjectState::Archived {
            if !act {
                let msg = format!("Spheron project {} is archived", project.id);
                return Ok(Report::settled(
                    status,
                    notes,
                    Readiness::not_ready(Reason::Archived, msg),
                    observe_only,
                ));
            }
            self.set_project_state(&project.id, &ProjectState::Maintained)
                .await?;
            self.forget_projects(organization).await;
            notes.push(Note::warning(
                Reason::DriftCorrected,
                "Correct",
                format!(
                    "Spheron project {} was archived at the platform: set back to MAINTAINED",
                    project.id
                ),
            ));
        }

        // The deployment bosun follows: one it may have started before a restart, else the
        // one in status, else (an adopted project) the project's newest.
        let mut seen: Option<Deployment> = None;
        if let Some(op) = status.operation.clone().filter(|o| o.state == REQUESTING) {
            let recent = self
                .list_project_deployments_page(&project.id, 0, RECENT_DEPLOYMENTS, None)
                .await?;
            status.operation = adopt_requested(&op, &recent).map(|d| {
                seen = Some(d.clone());
                OperationStatus {
                    id: Some(d.id.clone()),
                    state: d.status.to_string(),
                    ..op
                }
            });
        }
        if !status.operation.as_ref().is_some_and(is_site_op) {
            let newest = self
                .list_project_deployments_page(&project.id, 0, 1, None)
                .await?
                .into_iter()
                .next();
            status.operation = newest.as_ref().map(|d| OperationStatus {
                kind: DEPLOY.into(),
                id: Some(d.id.clone()),
                state: d.status.to_string(),
                generation: None,
                started_at: d.created_at.clone(),
                deadline: None,
            });
            seen = newest;
        }
        if let Some(op) = status
            .operation
            .clone()
            .filter(|o| !DeploymentStatus::parse(&o.state).is_terminal())
        {
            let id = op.id.clone().unwrap_or_default();
            // A deployment read by this reconcile is fresh; any other is read now.
            let current = match seen.take().filter(|d| d.id == id) {
                Some(d) => Some(d),
                None => self.site_deployment(&id).await?,
            };
            status.operation = current.as_ref().map(|d| OperationStatus {
                state: d.status.to_string(),
                ..op.clone()
            });
            seen = current;
        }

        // Whether the last successful deployment is the spec's: known without a call while
        // nothing changed since bosun last found so.
        let op = status.operation.clone();
        let mut matches = false;
        if let Some(op) = op
            .as_ref()
            .filter(|o| DeploymentStatus::parse(&o.state).is_success())
        {
            let id = op.id.clone().unwrap_or_default();
            if self.shared.confirmed(&project.id) == Some((id.clone(), desired.print)) {
                matches = true;
            } else {
                let dep = match seen.clone().filter(|d| d.id == id) {
                    Some(d) => Some(d),
                    None => self.site_deployment(&id).await?,
                };
                if let Some(dep) = dep {
                    let variables: Vec<String> = project
                        .environment_variables
                        .iter()
                        .map(|v| v.name.clone())
                        .collect();
                    matches = site_differences(&dep, &desired, &variables).is_empty();
                    if let Some(url) = dep.site_preview.clone().filter(|u| !u.is_empty()) {
                        status.url = Some(url);
                    }
                    if dep.commit_id.is_some() {
                        status.deployed_revision = dep.commit_id.clone();
                    }
                    status.replicas = Some(1);
                    if matches {
                        status.source_ref = Some(desired.git_ref.clone());
                        self.shared.confirm(&project.id, &id, desired.print);
                    }
                }
            }
        }

        let mut step = plan_site(
            op.as_ref(),
            request.generation,
            request.mode.requested,
            matches,
        );
        if step == SiteStep::Wait
            && op
                .as_ref()
                .is_some_and(|o| past_deadline(o, Timestamp::now()))
        {
            if !(request.mode.requested && act) {
                let id = op.as_ref().and_then(|o| o.id.clone()).unwrap_or_default();
                let msg = format!(
                    "deployment {id} did not finish within {} minutes; set bosun.dev/reconcile-requested-at to cancel it and deploy again",
                    DEPLOY_DEADLINE.as_secs() / 60
                );
                return Ok(Report::stalled(
                    status,
                    notes,
                    Reason::DeploymentDeadlineExceeded,
                    msg,
                ));
            }
            step = SiteStep::Supersede;
        }
        let dep_id = op.as_ref().and_then(|o| o.id.clone()).unwrap_or_default();
        let dep_state = op.as_ref().map(|o| o.state.clone()).unwrap_or_default();
        match step {
            SiteStep::Wait => Ok(Report::progressing(
                status,
                notes,
                Reason::Deploying,
                format!("deployment {dep_id} of {} is {dep_state}", desired.git_ref),
                DEPLOY_POLL,
            )),
            SiteStep::Authorize => {
                // One Event when the condition starts saying so (the start call itself may
                // already have answered AuthorizationNeeded).
                let announced = request.previous.conditions.iter().any(|c| {
                    c.type_ == crate::api::condition_types::READY
                        && c.reason == Reason::AuthorizationNeeded.as_str()
                });
                if !announced {
                    notes.push(Note::warning(
                        Reason::AuthorizationNeeded,
                        "Deploy",
                        format!("Spheron deployment {dep_id} waits for authorization: the repository's owner must authorize it in the Spheron dashboard"),
                    ));
                }
                Ok(Report::progressing(
                    status,
                    notes,
                    Reason::AuthorizationNeeded,
                    format!("deployment {dep_id} of {} waits for authorization at Spheron: authorize it in the Spheron dashboard (the repository's owner must approve it)", desired.git_ref),
                    AUTHORIZATION_POLL,
                ))
            }
            SiteStep::Failed => {
                let dep = match seen.filter(|d| d.id == dep_id) {
                    Some(d) => Some(d),
                    None => self.site_deployment(&dep_id).await?,
                };
                let state = DeploymentStatus::parse(&dep_state);
                let why = dep
                    .and_then(|d| d.failure_reason())
                    .unwrap_or_else(|| state.to_string());
                let msg = format!(
                    "deployment {dep_id} of {} ended {state} ({why}); change the spec or set bosun.dev/reconcile-requested-at to deploy again",
                    desired.git_ref
                );
                Ok(Report::stalled(
                    status,
                    notes,
                    failure_reason_code(&state),
                    msg,
                ))
            }
            SiteStep::Done => {
                let url = status.url.clone().unwrap_or_default();
                Ok(Report::settled(
                    status,
                    notes,
                    Readiness::ready(
                        Reason::Deployed,
                        format!(
                            "Spheron project {} serves {} at {url}",
                            project.id, desired.git_ref
                        ),
                    ),
                    observe_only,
                ))
            }
            SiteStep::Start | SiteStep::Redeploy | SiteStep::Supersede if !act => {
                let msg = format!(
                    "Spheron project {} does not serve {} as the spec says",
                    project.id, desired.git_ref
                );
                Ok(Report::settled(
                    status,
                    notes,
                    Readiness::not_ready(Reason::NotDeployed, msg),
                    observe_only,
                ))
            }
            SiteStep::Redeploy => {
                let mut op = new_operation(
                    REDEPLOY,
                    format!("{AFTER_PREFIX}{dep_id}"),
                    request.generation,
                );
                guard.save_operation(&op).await?;
                let started = self.redeploy(&dep_id).await?;
                op.id = Some(started.deployment_id.clone());
                op.state = started_state(started.deployment.as_ref());
                status.operation = Some(op);
                self.shared.unconfirm(&project.id);
                notes.push(Note::normal(
                    Reason::DeployStarted,
                    "Deploy",
                    format!(
                        "redeploying deployment {dep_id} as {} (the same commit, the project's latest variables)",
                        started.deployment_id
                    ),
                ));
                Ok(Report::progressing(
                    status,
                    notes,
                    Reason::Deploying,
                    format!("redeployment {} started", started.deployment_id),
                    DEPLOY_POLL,
                ))
            }
            SiteStep::Supersede | SiteStep::Start => {
                if step == SiteStep::Supersede {
                    self.cancel_quietly(&dep_id).await?;
                    notes.push(Note::normal(
                        Reason::DeployCanceled,
                        "Deploy",
                        format!("canceled deployment {dep_id}: it was for an older spec"),
                    ));
                }
                let topic = topic_id();
                let mut op =
                    new_operation(DEPLOY, format!("{TOPIC_PREFIX}{topic}"), request.generation);
                guard.save_operation(&op).await?;
                let started = self.start_deployment(&desired.start_body(&topic)).await?;
                op.id = Some(started.deployment_id.clone());
                op.state = started_state(started.deployment.as_ref());
                status.operation = Some(op);
                self.shared.unconfirm(&project.id);
                notes.push(Note::normal(
                    Reason::DeployStarted,
                    "Deploy",
                    format!(
                        "started deployment {} of {} to Spheron project {}",
                        started.deployment_id, desired.git_ref, project.id
                    ),
                ));
                Ok(Report::progressing(
                    status,
                    notes,
                    Reason::Deploying,
                    format!(
                        "deployment {} of {} started",
                        started.deployment_id, desired.git_ref
                    ),
                    DEPLOY_POLL,
                ))
            }
        }
    }

    /// The first deployment of a repository, which creates its project.
    async fn create_site(
        &self,
        request: &WorkspaceRequest<'_>,
        guard: &dyn CreateGuard,
        organization: &str,
        mut status: WorkspaceStatus,
        mut notes: Vec<Note>,
    ) -> Result<Report<WorkspaceStatus>, ReconcileError> {
        let desired = SiteDesired::new(request.spec, &request.env, organization, None)?;
        guard.before_create().await?;
        let topic = topic_id();
        let mut op = new_operation(DEPLOY, format!("{TOPIC_PREFIX}{topic}"), request.generation);
        guard.save_operation(&op).await?;
        let started = self.start_deployment(&desired.start_body(&topic)).await?;
        self.forget_projects(organization).await;
        let project_id = started
            .project_id
            .clone()
            .or_else(|| started.deployment.as_ref().and_then(|d| d.project.clone()))
            .ok_or_else(|| {
                PlatformError::new(
                    ErrorKind::Protocol,
                    "spheron startDeployment: the answer names no project",
                )
            })?;
        guard.created(&project_id).await?;
        op.id = Some(started.deployment_id.clone());
        op.state = started_state(started.deployment.as_ref());
        status.external_id = Some(project_id.clone());
        status.operation = Some(op);
        status.source_ref = None;
        status.url = None;
        status.deployed_revision = None;
        notes.push(Note::normal(
            Reason::Created,
            "Create",
            format!(
                "created Spheron project {project_id} for {} with deployment {} of {}",
                desired.repository, started.deployment_id, desired.git_ref
            ),
        ));
        Ok(Report::progressing(
            status,
            notes,
            Reason::Deploying,
            format!(
                "deployment {} of {} started",
                started.deployment_id, desired.git_ref
            ),
            DEPLOY_POLL,
        ))
    }

    /// Cancels a deployment; one that already ended (400) or is gone (404) needs nothing.
    async fn cancel_quietly(&self, id: &str) -> Result<(), ReconcileError> {
        match self.cancel_deployment(id).await {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.kind, ErrorKind::Invalid | ErrorKind::NotFound) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub(super) async fn delete_site(
        &self,
        request: &WorkspaceRequest<'_>,
    ) -> Result<Cleanup, ReconcileError> {
        let mut ids: Vec<String> = known_id(request).into_iter().collect();
        if ids.is_empty() && request.create_pending {
            // An interrupted create left no id: find its project by repository.
            let org = self
                .organization_for(
                    request
                        .spec
                        .spheron
                        .as_ref()
                        .and_then(|s| s.organization_id.as_deref()),
                )
                .await?;
            self.forget_projects(&org).await;
            let wanted = repo_key(&request.spec.source.repository);
            ids.extend(
                self.projects_of(&org)
                    .await?
                    .iter()
                    .filter(|p| p.url.as_deref() == Some(wanted.as_str()))
                    .map(|p| p.id.clone()),
            );
        }
        let mut notes = Vec::new();
        for id in ids {
            // Deployments still in flight would go on building for a removed project.
            let recent = match self
                .list_project_deployments_page(&id, 0, RECENT_DEPLOYMENTS, None)
                .await
            {
                Ok(r) => r,
                Err(e) if e.kind == ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            for d in recent.iter().filter(|d| !d.status.is_terminal()) {
                self.cancel_quietly(&d.id).await?;
                notes.push(Note::normal(
                    Reason::DeployCanceled,
                    "Delete",
                    format!("canceled deployment {} ({})", d.id, d.status),
                ));
            }
            // Spheron cannot delete a project: archiving is how one is removed.
            let note = match self.archive_project(&id).await? {
                crate::platform::spheron::client::Deleted::Done => {
                    format!("archived Spheron project {id}")
                }
                crate::platform::spheron::client::Deleted::AlreadyGone => {
                    format!("Spheron project {id} is gone")
                }
            };
            self.shared.unconfirm(&id);
            notes.push(Note::normal(Reason::Deleted, "Delete", note));
        }
        Ok(Cleanup::Done(notes))
    }
}

fn started_state(deployment: Option<&Deployment>) -> String {
    deployment
        .map(|d| d.status.to_string())
        .unwrap_or_else(|| DeploymentStatus::PreQueue.to_string())
}
