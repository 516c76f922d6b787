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
    secret_backed: &[String],
) -> Vec<Change> {
    let mut changes = Vec::new();
    if deployment.branch.as_deref() != Some(desired.branch.as_str()) {
        changes.push(Change::new(
            "spec.source",
            deployment.branch.as_ref().map(|b| format!("branch:{b}")),
            Some(desired.git_ref.clone()),
        ));
    }
    if let Some(p) = deployment
        .protocol
        .as_deref()
        .filter(|p| *p != desired.protocol)
    {
        changes.push(Change::new(
            "spec.spheron.site.protocol",
            Some(p.to_string()),
            Some(desired.protocol.clone()),
        ));
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
                let (ran, wanted) = (plan::shown(ran, false), plan::shown(wanted, false));
                changes.push(Change::new(field, Some(ran), Some(wanted)));
            }
        }
    }
    let shown_env =
        |key: &str, value: &String| plan::shown(value, secret_backed.iter().any(|k| k == key));
    for (key, value) in &desired.env {
        let ran = deployment.env.get(key);
        if ran != Some(value) {
            changes.push(Change::new(
                &format!("spec.env[{key}]"),
                ran.map(|v| shown_env(key, v)),
                Some(shown_env(key, value)),
            ));
        }
    }
    for (key, value) in &deployment.env {
        if !desired.env.contains_key(key) && !project_variables.contains(key) {
            changes.push(Change::new(
                &format!("spec.env[{key}]"),
                Some(shown_env(key, value)),
                None,
            ));
        }
    }
    changes
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

/// A read the site plan needs before it can decide.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SiteRead {
    /// The organization's projects again, not a shared listing from before a create.
    FreshListing,
    /// Whether an id bosun knew is a compute instance: a Workspace cannot switch kinds.
    OtherKind(String),
    /// A project's recent deployments, newest first: where a start sent before a crash went.
    Recent(String),
    /// A project's newest deployment.
    Newest(String),
    Deployment(String),
    /// What bosun last confirmed a project serves (bosun's memory, not the platform).
    Confirmed(String),
}

pub type SiteHalt = plan::Halt<SiteRead>;

/// What Spheron showed for one site Workspace.
#[derive(Clone, Debug)]
pub struct SiteObserved {
    pub organization: String,
    pub projects: Arc<Vec<Project>>,
    pub fresh: bool,
    pub other_kind: BTreeMap<String, bool>,
    pub recent: BTreeMap<String, Vec<Deployment>>,
    pub newest: BTreeMap<String, Option<Deployment>>,
    /// Deployments read by this reconcile (those of `recent` and `newest` too).
    pub deployments: BTreeMap<String, Option<Deployment>>,
    pub confirmed: BTreeMap<String, Option<(String, u64)>>,
    /// The `uniqueTopicId` a start carries, chosen here so the plan is a function of the
    /// observation.
    pub topic: String,
    pub at: Timestamp,
}

impl SiteObserved {
    /// The organization's projects, before any other read.
    pub fn new(organization: &str, projects: Arc<Vec<Project>>, topic: String) -> Self {
        SiteObserved {
            organization: organization.to_string(),
            projects,
            fresh: false,
            other_kind: BTreeMap::new(),
            recent: BTreeMap::new(),
            newest: BTreeMap::new(),
            deployments: BTreeMap::new(),
            confirmed: BTreeMap::new(),
            topic,
            at: Timestamp::now(),
        }
    }

    /// Records a project's recent deployments. They were read now, so they are fresh: none is
    /// read a second time.
    pub fn read_recent(&mut self, project: String, recent: Vec<Deployment>) {
        for d in &recent {
            self.deployments.insert(d.id.clone(), Some(d.clone()));
        }
        self.recent.insert(project, recent);
    }

    /// Records a project's newest deployment, fresh as [`Self::read_recent`].
    pub fn read_newest(&mut self, project: String, newest: Option<Deployment>) {
        if let Some(d) = &newest {
            self.deployments.insert(d.id.clone(), Some(d.clone()));
        }
        self.newest.insert(project, newest);
    }
}

/// The request a site step carries.
#[derive(Clone, Debug, PartialEq)]
pub enum SiteOp {
    /// Set an archived project back to MAINTAINED.
    Unarchive,
    /// Cancel a deployment of an older spec.
    Cancel {
        notes: Vec<Note>,
    },
    Start {
        body: Box<StartDeployment>,
        /// `status.operation` once the deployment id is known.
        operation: OperationStatus,
        git_ref: String,
    },
    Redeploy {
        deployment: String,
        operation: OperationStatus,
    },
    Await,
}

/// What Spheron answers a site step with.
#[derive(Clone, Debug)]
pub enum SiteAnswer {
    Started(Box<DeploymentStarted>),
    Done,
}

/// The project a start answer names.
fn started_project(started: &DeploymentStarted) -> Option<String> {
    started
        .project_id
        .clone()
        .or_else(|| started.deployment.as_ref().and_then(|d| d.project.clone()))
}

/// The plan for a site Workspace (pure): the first deployment (which creates the project), or
/// a new deployment, a redeploy or a cancel-and-start when what is served differs from the
/// spec, or following the deployment in flight.
pub fn decide_site(
    request: &WorkspaceRequest<'_>,
    o: &SiteObserved,
) -> Result<Decided<SiteOp>, SiteHalt> {
    let spec = request.spec;
    let organization = o.organization.as_str();
    if spec.replicas > 1 {
        return Err(unsupported(format!(
            "spec.replicas: a Spheron site is static content served by its storage protocol and has no replica count; set spec.replicas to 1 (not {}), or set spec.spheron.compute to run a compute instance with replicas",
            spec.replicas
        )).into());
    }
    if spec.plan.is_some() {
        return Err(unsupported(
            "spec.plan: a Spheron site has no machine size; remove spec.plan (a compute instance takes spec.spheron.compute.machine)",
        ).into());
    }
    // Validate the spec before anything else.
    SiteDesired::new(spec, &request.env, organization, None)?;
    let observe_only = request.mode.observing();
    let act = request.mode.act();
    let mut status = request.previous.clone();
    let mut notes = Vec::new();
    let mut plan = Plan::default();
    let mut adopt = None;
    status.selector = Some(selector(&request.key));
    let done = |plan, report, adopt, confirm| Ok(Decided::new(plan, report, adopt, confirm));

    let wanted = repo_key(&spec.source.repository);
    let known = known_id(request);
    // A project bosun knew that is not among the sites may be a compute instance: a kind a
    // Workspace cannot change to, said before anything is concluded from its absence.
    if let Some(id) = known.as_ref() {
        if o.fresh
            && !o.projects.iter().any(|p| &p.id == id)
            && *need(o.other_kind.get(id), SiteRead::OtherKind(id.clone()))?
        {
            return Err(unsupported(format!(
                "spec.spheron.compute: this Workspace manages compute instance {id}, and a compute instance cannot become a site; create a new Workspace for the site"
            )).into());
        }
    }
    let (within, by) = (
        format!("organization {organization}"),
        format!("for repository {}", spec.source.repository),
    );
    let words = Words {
        kind: "Spheron project",
        within: &within,
        by: &by,
        renamable: false,
        extra: "archive",
    };
    let placed = place(
        &o.projects,
        request,
        known,
        &wanted,
        (!o.fresh).then_some(SiteRead::FreshListing),
        &words,
        Record {
            external_id: &mut status.external_id,
            notes: &mut notes,
            adopt: &mut adopt,
        },
    )?;
    let project = match placed {
        Placement::Found(object) => object,
        Placement::Missing(msg) => {
            return done(plan, not_found(status, notes, true, msg), adopt, None);
        }
        Placement::Create { gone } => {
            if let Some(id) = gone {
                notes.push(Note::warning(
                    Reason::DriftCorrected,
                    "Create",
                    format!("Spheron project {id} is gone at the platform; deploying again"),
                ));
                status.operation = None;
            }
            let report = plan_create_site(request, o, &mut plan, status, notes)?;
            // Paused: the create waits, and the plan shows it.
            let report = if act {
                report
            } else {
                not_found(report.status, report.notes, false, String::new())
            };
            return done(plan, report, adopt, None);
        }
    };
    let desired = SiteDesired::new(
        spec,
        &request.env,
        organization,
        project.configuration.as_ref(),
    )?;
    let target = spheron_target(
        "project",
        ObjectId::Known(project.id.clone()),
        &project.name,
    );

    if project.state == ProjectState::Archived {
        plan.push(Step {
            action: StepAction::Update,
            target: target.clone(),
            changes: vec![Change::new(
                "project state",
                Some(ProjectState::Archived.to_string()),
                Some(ProjectState::Maintained.to_string()),
            )],
            // Archived at the platform, never by a spec: always drift, and its Event comes
            // from the funnel like every other drift correction.
            drift: true,
            summary: "set the project back to MAINTAINED".into(),
            deadline: None,
            record: None,
            op: SiteOp::Unarchive,
        });
        if !act {
            let msg = format!("Spheron project {} is archived", project.id);
            let readiness = Readiness::not_ready(Reason::Archived, msg);
            return done(
                plan,
                Report::settled(status, notes, readiness, observe_only),
                adopt,
                None,
            );
        }
    }

    // The deployment bosun follows: one it may have started before a restart, else the one
    // in status, else (an adopted project) the project's newest.
    if let Some(op) = status.operation.clone().filter(|o| o.state == REQUESTING) {
        let recent = need(
            o.recent.get(&project.id),
            SiteRead::Recent(project.id.clone()),
        )?;
        status.operation = adopt_requested(&op, recent).map(|d| OperationStatus {
            id: Some(d.id.clone()),
            state: d.status.to_string(),
            ..op
        });
    }
    if !status.operation.as_ref().is_some_and(is_site_op) {
        let newest = need(
            o.newest.get(&project.id),
            SiteRead::Newest(project.id.clone()),
        )?;
        status.operation = newest.as_ref().map(|d| OperationStatus {
            kind: DEPLOY.into(),
            id: Some(d.id.clone()),
            state: d.status.to_string(),
            generation: None,
            started_at: d.created_at.clone(),
            deadline: None,
        });
    }
    if let Some(op) = status
        .operation
        .clone()
        .filter(|o| !DeploymentStatus::parse(&o.state).is_terminal())
    {
        let id = op.id.clone().unwrap_or_default();
        let current = need(o.deployments.get(&id), SiteRead::Deployment(id.clone()))?;
        status.operation = current.as_ref().map(|d| OperationStatus {
            state: d.status.to_string(),
            ..op.clone()
        });
    }

    // Whether the last successful deployment is the spec's: known without a call while
    // nothing changed since bosun last found so.
    let op = status.operation.clone();
    let mut matches = false;
    let mut differences = Vec::new();
    let mut confirm = None;
    if let Some(op) = op
        .as_ref()
        .filter(|o| DeploymentStatus::parse(&o.state).is_success())
    {
        let id = op.id.clone().unwrap_or_default();
        let confirmed = need(
            o.confirmed.get(&project.id),
            SiteRead::Confirmed(project.id.clone()),
        )?;
        if *confirmed == Some((id.clone(), desired.print)) {
            matches = true;
        } else if let Some(dep) = need(o.deployments.get(&id), SiteRead::Deployment(id.clone()))? {
            let variables: Vec<String> = project
                .environment_variables
                .iter()
                .map(|v| v.name.clone())
                .collect();
            let secret_backed = spec.secret_backed_env();
            differences = site_differences(dep, &desired, &variables, &secret_backed);
            matches = differences.is_empty();
            if let Some(url) = dep.site_preview.clone().filter(|u| !u.is_empty()) {
                status.url = Some(url);
            }
            if dep.commit_id.is_some() {
                status.deployed_revision = dep.commit_id.clone();
            }
            status.replicas = Some(1);
            if matches {
                status.source_ref = Some(desired.git_ref.clone());
                confirm = Some((project.id.clone(), id.clone(), desired.print));
            }
        }
    }

    let mut step = plan_site(
        op.as_ref(),
        request.generation,
        request.mode.requested,
        matches,
    );
    if step == SiteStep::Wait && op.as_ref().is_some_and(|op| past_deadline(op, o.at)) {
        if !(request.mode.requested && act) {
            let id = op.as_ref().and_then(|o| o.id.clone()).unwrap_or_default();
            let msg = format!(
                "deployment {id} did not finish within {} minutes; set bosun.dev/reconcile-requested-at to cancel it and deploy again",
                DEPLOY_DEADLINE.as_secs() / 60
            );
            let report = Report::stalled(status, notes, Reason::DeploymentDeadlineExceeded, msg);
            return done(plan, report, adopt, confirm);
        }
        step = SiteStep::Supersede;
    }
    let dep_id = op.as_ref().and_then(|o| o.id.clone()).unwrap_or_default();
    let dep_state = op.as_ref().map(|o| o.state.clone()).unwrap_or_default();
    let follow = || {
        await_deployment(
            ObjectId::Known(dep_id.clone()),
            format!("follow deployment {dep_id} until it ends"),
            SiteOp::Await,
        )
    };
    let report = match step {
        SiteStep::Wait => {
            plan.push(follow());
            Report::progressing(
                status,
                notes,
                Reason::Deploying,
                format!("deployment {dep_id} of {} is {dep_state}", desired.git_ref),
                DEPLOY_POLL,
            )
        }
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
            plan.push(follow());
            Report::progressing(
                status,
                notes,
                Reason::AuthorizationNeeded,
                format!("deployment {dep_id} of {} waits for authorization at Spheron: authorize it in the Spheron dashboard (the repository's owner must approve it)", desired.git_ref),
                AUTHORIZATION_POLL,
            )
        }
        SiteStep::Failed => {
            let dep = need(
                o.deployments.get(&dep_id),
                SiteRead::Deployment(dep_id.clone()),
            )?;
            let state = DeploymentStatus::parse(&dep_state);
            let why = dep
                .as_ref()
                .and_then(|d| d.failure_reason())
                .unwrap_or_else(|| state.to_string());
            let msg = format!(
                "deployment {dep_id} of {} ended {state} ({why}); change the spec or set bosun.dev/reconcile-requested-at to deploy again",
                desired.git_ref
            );
            Report::stalled(status, notes, failure_reason_code(&state), msg)
        }
        SiteStep::Done => {
            let url = status.url.clone().unwrap_or_default();
            let readiness = Readiness::ready(
                Reason::Deployed,
                format!(
                    "Spheron project {} serves {} at {url}",
                    project.id, desired.git_ref
                ),
            );
            Report::settled(status, notes, readiness, observe_only)
        }
        SiteStep::Start | SiteStep::Redeploy | SiteStep::Supersede => {
            let started = if step == SiteStep::Redeploy {
                plan.push(Step {
                    action: StepAction::Start,
                    target: target.clone(),
                    changes: vec![Change::new(
                        "status.operation",
                        Some(format!("deployment {dep_id}")),
                        Some(
                            "a redeployment (the same commit, the project's latest variables)"
                                .into(),
                        ),
                    )],
                    drift: false,
                    summary: format!("redeploy deployment {dep_id}"),
                    deadline: None,
                    record: Some(new_operation(
                        REDEPLOY,
                        format!("{AFTER_PREFIX}{dep_id}"),
                        request.generation,
                    )),
                    op: SiteOp::Redeploy {
                        deployment: dep_id.clone(),
                        operation: new_operation(
                            REDEPLOY,
                            format!("{AFTER_PREFIX}{dep_id}"),
                            request.generation,
                        ),
                    },
                })
            } else {
                if step == SiteStep::Supersede {
                    plan.push(Step {
                        action: StepAction::Delete,
                        target: spheron_target("deployment", ObjectId::Known(dep_id.clone()), ""),
                        changes: Vec::new(),
                        drift: false,
                        summary: format!("cancel deployment {dep_id}: it is for an older spec"),
                        deadline: None,
                        record: None,
                        op: SiteOp::Cancel {
                            notes: vec![Note::normal(
                                Reason::DeployCanceled,
                                "Deploy",
                                format!("canceled deployment {dep_id}: it was for an older spec"),
                            )],
                        },
                    });
                }
                push_start(&mut plan, request, o, &desired, target.clone(), differences)
            };
            plan.push(await_deployment(
                ObjectId::FromStep(started),
                format!("follow the deployment of {} until it ends", desired.git_ref),
                SiteOp::Await,
            ));
            if act {
                Report::progressing(
                    status,
                    notes,
                    Reason::Deploying,
                    format!("a deployment of {} starts", desired.git_ref),
                    DEPLOY_POLL,
                )
            } else {
                let msg = format!(
                    "Spheron project {} does not serve {} as the spec says",
                    project.id, desired.git_ref
                );
                let readiness = Readiness::not_ready(Reason::NotDeployed, msg);
                Report::settled(status, notes, readiness, observe_only)
            }
        }
    };
    done(plan, report, adopt, confirm)
}

/// Pushes a start of the spec's source, its operation saved before it is sent.
fn push_start(
    plan: &mut Plan<SiteOp>,
    request: &WorkspaceRequest<'_>,
    o: &SiteObserved,
    desired: &SiteDesired,
    target: Target,
    differences: Vec<Change>,
) -> plan::StepRef {
    let operation = new_operation(
        DEPLOY,
        format!("{TOPIC_PREFIX}{}", o.topic),
        request.generation,
    );
    plan.push(Step {
        action: if target.id == ObjectId::New {
            StepAction::Create
        } else {
            StepAction::Start
        },
        // What the deployment changes against the last one: its fields old -> new, or else
        // (a first deployment, or one asked for again) the ref it deploys.
        changes: if differences.is_empty() {
            vec![Change::new(
                "status.sourceRef",
                request.previous.source_ref.clone(),
                Some(desired.git_ref.clone()),
            )]
        } else {
            differences
        },
        drift: false,
        summary: format!(
            "deploy {} of {} to Spheron ({})",
            desired.git_ref, desired.repository, desired.protocol
        ),
        deadline: None,
        record: Some(operation.clone()),
        op: SiteOp::Start {
            body: Box::new(desired.start_body(&o.topic)),
            operation,
            git_ref: desired.git_ref.clone(),
        },
        target,
    })
}

/// The first deployment of a repository, which creates its project.
fn plan_create_site(
    request: &WorkspaceRequest<'_>,
    o: &SiteObserved,
    plan: &mut Plan<SiteOp>,
    mut status: WorkspaceStatus,
    notes: Vec<Note>,
) -> Result<Report<WorkspaceStatus>, ReconcileError> {
    let desired = SiteDesired::new(request.spec, &request.env, &o.organization, None)?;
    let target = spheron_target("project", ObjectId::New, &desired.repo_name);
    let start = push_start(plan, request, o, &desired, target, Vec::new());
    plan.push(await_deployment(
        ObjectId::FromStep(start),
        format!(
            "follow the first deployment of {} until it ends",
            desired.git_ref
        ),
        SiteOp::Await,
    ));
    status.source_ref = None;
    status.url = None;
    status.deployed_revision = None;
    Ok(Report::progressing(
        status,
        notes,
        Reason::Deploying,
        format!(
            "the first deployment of {} creates its Spheron project",
            desired.repository
        ),
        DEPLOY_POLL,
    ))
}

/// A site Workspace's platform, for the plan seam.
pub struct SiteSeam<'a> {
    pub client: &'a SpheronClient,
    pub organization: &'a str,
}

/// How many reads one observation may make before it stops asking.
const MAX_SITE_READS: usize = 8;

impl<'r> Decides<'r> for SiteSeam<'_> {
    fn decided(
        &self,
        request: &WorkspaceRequest<'r>,
        observed: &SiteObserved,
    ) -> Result<Decided<SiteOp>, ReconcileError> {
        plan::decided(decide_site(request, observed))
    }
}

#[async_trait]
impl<'r> PlanSeam<WorkspaceRequest<'r>, WorkspaceStatus> for SiteSeam<'_> {
    type Answer = SiteAnswer;
    type Op = SiteOp;
    type Observation = SiteObserved;

    async fn observe(
        &self,
        request: &WorkspaceRequest<'r>,
    ) -> Result<SiteObserved, ReconcileError> {
        let client = self.client;
        let organization = self.organization;
        // An earlier create may have gone through unseen: only a fresh listing can tell.
        let requesting = request
            .previous
            .operation
            .as_ref()
            .is_some_and(|o| o.state == REQUESTING);
        if request.create_pending || requesting {
            client.forget_projects(organization).await;
        }
        let mut o = SiteObserved::new(
            organization,
            client.projects_of(organization).await?,
            topic_id(),
        );
        // The plan says which reads it needs, one at a time.
        for _ in 0..MAX_SITE_READS {
            let Err(plan::Halt::Need(read)) = decide_site(request, &o) else {
                break;
            };
            match read {
                SiteRead::FreshListing => {
                    client.forget_projects(organization).await;
                    o.projects = client.projects_of(organization).await?;
                    o.fresh = true;
                }
                SiteRead::OtherKind(id) => {
                    let other = client.owned_by_other_kind(organization, &id, false).await?;
                    o.other_kind.insert(id, other);
                }
                SiteRead::Recent(project) => {
                    let recent = client
                        .list_project_deployments_page(&project, 0, RECENT_DEPLOYMENTS, None)
                        .await?;
                    o.read_recent(project, recent);
                }
                SiteRead::Newest(project) => {
                    let newest = client
                        .list_project_deployments_page(&project, 0, 1, None)
                        .await?
                        .into_iter()
                        .next();
                    o.read_newest(project, newest);
                }
                SiteRead::Deployment(id) => {
                    let deployment = client.site_deployment(&id).await?;
                    o.deployments.insert(id, deployment);
                }
                SiteRead::Confirmed(project) => {
                    let confirmed = client.shared.confirmed(&project);
                    o.confirmed.insert(project, confirmed);
                }
            }
        }
        Ok(o)
    }

    fn plan(
        &self,
        request: &WorkspaceRequest<'r>,
        observed: &SiteObserved,
    ) -> Result<Planned<SiteOp, WorkspaceStatus>, ReconcileError> {
        self.decided(request, observed).map(|d| d.planned)
    }

    async fn execute(
        &self,
        step: &Step<SiteOp>,
        _answers: &[SiteAnswer],
    ) -> Result<SiteAnswer, ReconcileError> {
        let client = self.client;
        let project = match &step.target.id {
            ObjectId::Known(id) if step.target.kind == "project" => Some(id.as_str()),
            _ => None,
        };
        let started = match &step.op {
            SiteOp::Unarchive => {
                if let Some(project) = project {
                    client
                        .set_project_state(project, &ProjectState::Maintained)
                        .await?;
                }
                client.forget_projects(self.organization).await;
                return Ok(SiteAnswer::Done);
            }
            SiteOp::Cancel { .. } => {
                if let ObjectId::Known(id) = &step.target.id {
                    client.cancel_quietly(id).await?;
                }
                return Ok(SiteAnswer::Done);
            }
            SiteOp::Await => return Ok(SiteAnswer::Done),
            SiteOp::Start { body, .. } => {
                let started = client.start_deployment(body).await?;
                if step.target.id == ObjectId::New {
                    client.forget_projects(self.organization).await;
                    if started_project(&started).is_none() {
                        return Err(PlatformError::new(
                            ErrorKind::Protocol,
                            "spheron startDeployment: the answer names no project",
                        )
                        .into());
                    }
                }
                started
            }
            SiteOp::Redeploy { deployment, .. } => client.redeploy(deployment).await?,
        };
        if let Some(project) = project {
            client.shared.unconfirm(project);
        }
        Ok(SiteAnswer::Started(Box::new(started)))
    }

    fn answered_id(&self, answer: &SiteAnswer) -> Option<String> {
        match answer {
            SiteAnswer::Started(started) => started_project(started),
            SiteAnswer::Done => None,
        }
    }

    fn answered(
        &self,
        report: &mut Report<WorkspaceStatus>,
        step: &Step<SiteOp>,
        answer: &SiteAnswer,
    ) -> Flow {
        let started = match (&step.op, answer) {
            (SiteOp::Unarchive, _) => return Flow::Continue,
            (SiteOp::Cancel { notes }, _) => {
                report.notes.extend(notes.iter().cloned());
                return Flow::Continue;
            }
            (_, SiteAnswer::Started(started)) => started,
            _ => return Flow::Continue,
        };
        let deployment = started.deployment_id.clone();
        let (operation, message) = match &step.op {
            SiteOp::Start {
                operation, git_ref, ..
            } => {
                let note = if step.target.id == ObjectId::New {
                    let project = started_project(started).unwrap_or_default();
                    report.status.external_id = Some(project.clone());
                    report.status.source_ref = None;
                    report.status.url = None;
                    report.status.deployed_revision = None;
                    Note::normal(
                        Reason::Created,
                        "Create",
                        format!("created Spheron project {project} with deployment {deployment} of {git_ref}"),
                    )
                } else {
                    let project = match &step.target.id {
                        ObjectId::Known(id) => id.clone(),
                        _ => String::new(),
                    };
                    Note::normal(
                        Reason::DeployStarted,
                        "Deploy",
                        format!("started deployment {deployment} of {git_ref} to Spheron project {project}"),
                    )
                };
                report.notes.push(note);
                (
                    operation,
                    format!("deployment {deployment} of {git_ref} started"),
                )
            }
            SiteOp::Redeploy {
                deployment: previous,
                operation,
            } => {
                report.notes.push(Note::normal(
                    Reason::DeployStarted,
                    "Deploy",
                    format!("redeploying deployment {previous} as {deployment} (the same commit, the project's latest variables)"),
                ));
                (operation, format!("redeployment {deployment} started"))
            }
            _ => return Flow::Continue,
        };
        report.status.operation = Some(OperationStatus {
            id: Some(deployment),
            state: started_state(started.deployment.as_ref()),
            ..operation.clone()
        });
        report.progress(Reason::Deploying, message, DEPLOY_POLL);
        Flow::Stop
    }
}

impl SpheronClient {
    pub(super) async fn reconcile_site(
        &self,
        request: &WorkspaceRequest<'_>,
        guard: &dyn CreateGuard,
        organization: &str,
    ) -> Result<Report<WorkspaceStatus>, ReconcileError> {
        let seam = SiteSeam {
            client: self,
            organization,
        };
        self.reconcile_on(&seam, request, guard).await
    }

    /// Cancels a deployment; one that already ended (400) or is gone (404) needs nothing.
    pub(super) async fn cancel_quietly(&self, id: &str) -> Result<(), ReconcileError> {
        match self.cancel_deployment(id).await {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.kind, ErrorKind::Invalid | ErrorKind::NotFound) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

fn started_state(deployment: Option<&Deployment>) -> String {
    deployment
        .map(|d| d.status.to_string())
        .unwrap_or_else(|| DeploymentStatus::PreQueue.to_string())
}
