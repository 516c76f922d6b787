//! Spheron compute instances: the pure planning of an instance's main service, and the calls
//! that carry it out.

use super::*;

// ---------------------------------------------------------------------------------------------
// Pure planning: compute.

/// An image reference split into name and tag (pure): the tag follows the last `:` after the
/// last `/` (so a registry port is not a tag).
pub fn split_image(image: &str) -> (String, Option<String>) {
    let image = image.trim();
    let name_start = image.rfind('/').map(|i| i + 1).unwrap_or(0);
    match image[name_start..].rfind(':') {
        Some(i) => {
            let at = name_start + i;
            (image[..at].to_string(), Some(image[at + 1..].to_string()))
        }
        None => (image.to_string(), None),
    }
}

/// The image and tag the main service runs (pure): a tag in `compute.image` wins; else the
/// source's tag, or its commit (images are commonly tagged by both); else `latest` for a
/// branch.
pub fn image_and_tag(image: &str, git_ref: GitRef<'_>) -> (String, String) {
    let (name, tag) = split_image(image);
    let tag = tag
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| match git_ref {
            GitRef::Tag(t) | GitRef::Commit(t) => t.to_string(),
            GitRef::Branch(_) => "latest".to_string(),
        });
    (name, tag)
}

/// The main service as the spec wants it. Fields the spec leaves out (`None`) keep what runs,
/// so an adopted instance is only changed where the spec says. Holds resolved variables.
#[derive(Clone, PartialEq)]
pub struct MainService {
    pub image: Option<(String, String)>,
    pub machine: Option<String>,
    pub replicas: u32,
    pub env: BTreeMap<String, String>,
    /// Variables whose values come from Secrets (sent with `isSecret`, never shown in Events).
    pub secret_keys: Vec<String>,
    pub region: String,
    /// A fingerprint of all of the above.
    pub print: u64,
}

impl MainService {
    /// Reads the spec (pure).
    pub fn new(
        spec: &WorkspaceSpec,
        compute: &SpheronCompute,
        env: &BTreeMap<String, String>,
    ) -> Self {
        let image = compute
            .image
            .as_deref()
            .filter(|i| !i.trim().is_empty())
            .map(|i| image_and_tag(i, spec.source.git_ref()));
        let machine = compute
            .machine
            .clone()
            .or_else(|| spec.plan.clone())
            .filter(|m| !m.trim().is_empty());
        let region = compute
            .region
            .clone()
            .filter(|r| !r.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_REGION.into());
        let secret_keys = spec.secret_backed_env();
        let replicas = u32::try_from(spec.replicas.max(1)).unwrap_or(1);
        let print = fingerprint(&(&image, &machine, replicas, env, &secret_keys, &region));
        MainService {
            image,
            machine,
            replicas,
            env: env.clone(),
            secret_keys,
            region,
            print,
        }
    }

    fn env_entries(&self) -> Vec<EnvEntry> {
        self.env
            .iter()
            .map(|(k, v)| EnvEntry::new(k, v, self.secret_keys.contains(k)))
            .collect()
    }

    /// The main service's configuration (pure): over what runs (`current`), which keeps its
    /// name, ports, command and everything the spec does not name; or new, for a create.
    pub fn config(&self, current: Option<&DeployedService>) -> Result<ComputeService, String> {
        let mut c = match current {
            Some(s) => s.to_config(),
            None => ComputeService {
                name: MAIN_SERVICE.into(),
                image: String::new(),
                tag: String::new(),
                private_image_config: None,
                service_count: self.replicas,
                build_image: false,
                ports: vec![Port {
                    container_port: MAIN_PORT,
                    exposed_port: MAIN_PORT,
                    global: None,
                    expose_to: None,
                }],
                env: Vec::new(),
                command: Vec::new(),
                args: Vec::new(),
                akash_machine_image_name: String::new(),
                custom_service_specs: None,
                health_check: None,
                autoscaling_rules: None,
                template_id: None,
            },
        };
        match (&self.image, current) {
            (Some((image, tag)), _) => {
                c.image = image.clone();
                c.tag = tag.clone();
            }
            (None, None) => {
                return Err(
                    "spec.spheron.compute.image: a new compute instance needs a container image"
                        .into(),
                )
            }
            (None, Some(_)) => {}
        }
        match (&self.machine, current) {
            (Some(m), _) => c.akash_machine_image_name = m.clone(),
            (None, None) => {
                return Err("spec.spheron.compute.machine: a new compute instance needs a machine (plan) name, for example \"Ventus Nano 1\"".into())
            }
            (None, Some(_)) => {}
        }
        c.service_count = self.replicas;
        c.env = self.env_entries();
        Ok(c)
    }
}

/// One field of the main service that differs from the spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    pub field: String,
    pub observed: String,
    pub desired: String,
}

/// Where the running main service differs from the spec (pure). Values of Secret-backed
/// variables are never shown.
pub fn main_differences(running: &DeployedService, desired: &MainService) -> Vec<Difference> {
    let mut out = Vec::new();
    if let Some((image, tag)) = &desired.image {
        if running.image != *image || running.tag != *tag {
            out.push(Difference {
                field: "spec.spheron.compute.image".into(),
                observed: format!("{}:{}", running.image, running.tag),
                desired: format!("{image}:{tag}"),
            });
        }
    }
    if let Some(machine) = &desired.machine {
        let ran = running
            .agreed_machine_image
            .as_ref()
            .and_then(|m| m.machine_type.clone())
            .unwrap_or_default();
        if ran != *machine {
            out.push(Difference {
                field: "spec.spheron.compute.machine".into(),
                observed: format!("{ran:?}"),
                desired: format!("{machine:?}"),
            });
        }
    }
    if running.service_count != desired.replicas {
        out.push(Difference {
            field: "spec.replicas".into(),
            observed: running.service_count.to_string(),
            desired: desired.replicas.to_string(),
        });
    }
    let ran: BTreeMap<&str, (&str, bool)> = running
        .env
        .iter()
        .map(|e| {
            let (k, v) = e.key_value();
            (k, (v, e.is_secret))
        })
        .collect();
    let shown = |key: &str, value: &str, secret: bool| {
        plan::shown(
            value,
            secret || desired.secret_keys.iter().any(|k| k == key),
        )
    };
    for (key, value) in &desired.env {
        let secret = desired.secret_keys.contains(key);
        match ran.get(key.as_str()) {
            None => out.push(Difference {
                field: format!("spec.env[{key}]"),
                observed: "(not set)".into(),
                desired: shown(key, value, secret),
            }),
            Some((v, was_secret)) if *v != value || *was_secret != secret => out.push(Difference {
                field: format!("spec.env[{key}]"),
                observed: shown(key, v, *was_secret),
                desired: shown(key, value, secret),
            }),
            Some(_) => {}
        }
    }
    for (key, (value, secret)) in &ran {
        if !desired.env.contains_key(*key) {
            out.push(Difference {
                field: format!("spec.env[{key}]"),
                observed: shown(key, value, *secret),
                desired: "(not set)".into(),
            });
        }
    }
    out
}

/// The Event for an update of the spec (pure), naming the fields. A drift correction's Events
/// come from the step's changes, in the funnel.
pub fn update_note(instance: &str, differences: &[Difference]) -> Note {
    let changes: Vec<String> = differences
        .iter()
        .map(|d| format!("{} {} -> {}", d.field, d.observed, d.desired))
        .collect();
    Note::normal(
        Reason::Updated,
        "Update",
        format!(
            "updating compute instance {instance}: {}",
            changes.join(", ")
        ),
    )
}

/// What a compute Workspace needs next, given the instance's newest deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ComputeStep {
    /// A deployment is in progress (bosun's own when `ours`): look again soon.
    Wait { ours: bool },
    /// bosun's deployment of this spec failed: wait for a change.
    Failed,
    /// Compare what runs with the spec, and update if they differ.
    Converge,
}

/// Plans a compute instance (pure).
pub fn compute_step(
    op: Option<&OperationStatus>,
    newest: Option<&ComputeDeployment>,
    generation: i64,
    requested: bool,
) -> ComputeStep {
    let Some(newest) = newest else {
        return ComputeStep::Converge;
    };
    let ours = op.is_some_and(|o| o.id.as_deref() == Some(newest.id.as_str()));
    if !newest.status.is_terminal() {
        return ComputeStep::Wait { ours };
    }
    let this_spec = op.is_some_and(|o| o.generation == Some(generation));
    if newest.status == ComputeDeploymentStatus::Failed && ours && this_spec && !requested {
        ComputeStep::Failed
    } else {
        ComputeStep::Converge
    }
}

/// What a ServiceScale finds in the running services.
#[derive(Clone, Debug, PartialEq)]
pub enum ScalePlan {
    /// The service runs the desired count.
    InSync(u32),
    /// The service runs `observed`; send `services` (the full list, this one's count changed).
    Scale {
        observed: u32,
        services: Vec<ComputeService>,
    },
}

/// Plans a ServiceScale (pure): the main service (the first) belongs to the Workspace's
/// `spec.replicas` and is refused; an unknown service is named with the ones that exist.
pub fn plan_service_scale(
    services: &[DeployedService],
    service: &str,
    replicas: i32,
) -> Result<ScalePlan, ReconcileError> {
    let wanted = u32::try_from(replicas.max(1)).unwrap_or(1);
    let Some(index) = services.iter().position(|s| s.name == service) else {
        let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
        return Err(ReconcileError::user(
            Reason::ServiceNotFound,
            format!(
                "spec.service: the compute instance has no service {service:?}; it has {}",
                names.join(", ")
            ),
        ));
    };
    if index == 0 {
        return Err(ReconcileError::user(
            Reason::ScaledByWorkspace,
            format!(
                "spec.service: {service:?} is the main service of the Workspace's compute instance; its replicas are the Workspace's spec.replicas (kubectl scale workspace/<name>), so delete this ServiceScale"
            ),
        ));
    }
    let observed = services[index].service_count;
    if observed == wanted {
        return Ok(ScalePlan::InSync(observed));
    }
    let mut configs: Vec<ComputeService> =
        services.iter().map(DeployedService::to_config).collect();
    configs[index].service_count = wanted;
    Ok(ScalePlan::Scale {
        observed,
        services: configs,
    })
}

// ---------------------------------------------------------------------------------------------
// Compute instances.

/// A read the compute plan needs before it can decide.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ComputeRead {
    /// The organization's instances again, not a shared listing from before a create.
    FreshListing,
    /// Whether an id bosun knew is a site project: a Workspace cannot switch kinds.
    OtherKind(String),
    /// What bosun last confirmed an instance runs (bosun's memory, not the platform).
    Confirmed(String),
    Deployment(String),
}

/// What Spheron showed for one compute Workspace.
#[derive(Clone, Debug)]
pub struct ComputeObserved {
    pub organization: String,
    /// The open instances (a closed one is what is left of a deleted one).
    pub instances: Vec<ComputeInstance>,
    pub fresh: bool,
    pub other_kind: BTreeMap<String, bool>,
    pub confirmed: BTreeMap<String, Option<(String, u64)>>,
    pub deployments: BTreeMap<String, Option<ComputeDeployment>>,
    /// The `uniqueTopicId` a create or an update carries, chosen here so the plan is a pure
    /// function of the observation.
    pub topic: String,
    pub at: Timestamp,
}

impl ComputeObserved {
    /// The organization's open instances, before any other read.
    pub fn new(organization: &str, instances: Vec<ComputeInstance>, topic: String) -> Self {
        ComputeObserved {
            organization: organization.to_string(),
            instances,
            fresh: false,
            other_kind: BTreeMap::new(),
            confirmed: BTreeMap::new(),
            deployments: BTreeMap::new(),
            topic,
            at: Timestamp::now(),
        }
    }
}

pub type ComputeHalt = plan::Halt<ComputeRead>;

/// The request a compute step carries.
#[derive(Clone, Debug, PartialEq)]
pub enum ComputeOp {
    Create {
        body: CreateComputeInstance,
        /// `status.operation` once the deployment id is known.
        operation: OperationStatus,
    },
    Update {
        body: UpdateComputeInstance,
        operation: OperationStatus,
        /// The Events that are not drift corrections (those come from the step).
        notes: Vec<Note>,
    },
    Await,
}

/// What Spheron answers a compute step with.
#[derive(Clone, Debug)]
pub enum ComputeAnswer {
    Started(InstanceDeployment),
    Done,
}

/// The plan for a compute Workspace (pure): create the instance, or update its service list
/// when what runs differs from the spec, or follow the deployment in flight.
pub fn decide_compute(
    request: &WorkspaceRequest<'_>,
    compute: &SpheronCompute,
    o: &ComputeObserved,
) -> Result<Decided<ComputeOp>, ComputeHalt> {
    let spec = request.spec;
    let organization = o.organization.as_str();
    let desired = MainService::new(spec, compute, &request.env);
    let observe_only = request.mode.observing();
    let act = request.mode.act();
    let mut status = request.previous.clone();
    let mut notes = Vec::new();
    let mut plan = Plan::default();
    let mut adopt = None;
    status.selector = Some(selector(&request.key));
    let done = |plan, report, adopt, confirm| Ok(Decided::new(plan, report, adopt, confirm));

    let known = known_id(request);
    // An instance bosun knew that is not among the open instances may be a site project: a
    // kind a Workspace cannot change to, said before anything is concluded from its absence.
    if let Some(id) = known.as_ref() {
        if o.fresh
            && !o.instances.iter().any(|i| &i.id == id)
            && *need(o.other_kind.get(id), ComputeRead::OtherKind(id.clone()))?
        {
            return Err(unsupported(format!(
                "spec.spheron.compute: this Workspace manages site project {id}, and a site cannot become a compute instance; create a new Workspace for the instance"
            )).into());
        }
    }
    let (within, by) = (
        format!("organization {organization}"),
        format!("named {:?}", request.external_name),
    );
    let words = Words {
        kind: "Spheron compute instance",
        within: &within,
        by: &by,
        renamable: true,
        extra: "close",
    };
    let placed = place(
        &o.instances,
        request,
        known,
        &request.external_name,
        (!o.fresh).then_some(ComputeRead::FreshListing),
        &words,
        Record {
            external_id: &mut status.external_id,
            notes: &mut notes,
            adopt: &mut adopt,
        },
    )?;
    let instance = match placed {
        Placement::Found(object) => object,
        Placement::Missing(msg) => {
            return done(plan, not_found(status, notes, true, msg), adopt, None);
        }
        Placement::Create { gone } => {
            if let Some(id) = gone {
                notes.push(Note::warning(
                    Reason::DriftCorrected,
                    "Create",
                    format!("compute instance {id} was closed or removed at the platform; creating it again"),
                ));
                status.operation = None;
                status.replicas = None;
            }
            let report = plan_create_instance(request, o, &desired, &mut plan, status, notes)?;
            // Paused: the create waits, and the plan shows it.
            let report = if act {
                report
            } else {
                not_found(report.status, report.notes, false, String::new())
            };
            return done(plan, report, adopt, None);
        }
    };

    if desired.region != DEFAULT_REGION
        && instance
            .region
            .as_deref()
            .is_some_and(|r| !r.eq_ignore_ascii_case(&desired.region))
    {
        return Err(unsupported(format!(
            "spec.spheron.compute.region: compute instance {} runs in {}, and an instance cannot move; set it back, or create a new Workspace for {}",
            instance.id,
            instance.region.clone().unwrap_or_default(),
            desired.region
        )).into());
    }
    let target = spheron_target(
        "compute instance",
        ObjectId::Known(instance.id.clone()),
        &instance.name,
    );

    let newest_id = instance.deployments.last().cloned();
    if let Some(op) = status.operation.clone().filter(|o| o.state == REQUESTING) {
        status.operation =
            adopt_requested_update(&op, newest_id.as_deref()).map(|id| OperationStatus {
                id: Some(id.to_string()),
                state: ComputeDeploymentStatus::Queued.to_string(),
                ..op
            });
    }
    // Nothing changed at Spheron since bosun found the instance matching this spec.
    if let Some(newest) = &newest_id {
        if instance.state == InstanceState::Active && !request.mode.requested {
            let confirmed = need(
                o.confirmed.get(&instance.id),
                ComputeRead::Confirmed(instance.id.clone()),
            )?;
            if *confirmed == Some((newest.clone(), desired.print)) {
                let msg = format!(
                    "compute instance {} runs the spec ({} replicas)",
                    instance.id, desired.replicas
                );
                let ready = Readiness::ready(Reason::Available, msg);
                return done(
                    plan,
                    Report::settled(status, notes, ready, observe_only),
                    adopt,
                    None,
                );
            }
        }
    }

    let newest = match &newest_id {
        Some(id) => need(o.deployments.get(id), ComputeRead::Deployment(id.clone()))?.clone(),
        None => None,
    };
    if let (Some(op), Some(n)) = (status.operation.as_mut(), newest.as_ref()) {
        if op.id.as_deref() == Some(n.id.as_str()) {
            op.state = n.status.to_string();
        }
    }
    let op = status.operation.clone();
    match compute_step(
        op.as_ref(),
        newest.as_ref(),
        request.generation,
        request.mode.requested,
    ) {
        ComputeStep::Wait { ours } => {
            let n_id = newest.as_ref().map(|n| n.id.clone()).unwrap_or_default();
            let n_state = newest
                .as_ref()
                .map(|n| n.status.to_string())
                .unwrap_or_default();
            if ours && op.as_ref().is_some_and(|op| past_deadline(op, o.at)) {
                let msg = format!(
                    "deployment {n_id} of compute instance {} did not finish within {} minutes ({n_state})",
                    instance.id,
                    DEPLOY_DEADLINE.as_secs() / 60
                );
                let report =
                    Report::stalled(status, notes, Reason::DeploymentDeadlineExceeded, msg);
                return done(plan, report, adopt, None);
            }
            let msg = if ours {
                format!(
                    "deployment {n_id} of compute instance {} is {n_state}",
                    instance.id
                )
            } else {
                format!("a deployment of compute instance {} started outside bosun ({n_id}) is {n_state}; waiting for it to end", instance.id)
            };
            plan.push(await_deployment(
                ObjectId::Known(n_id.clone()),
                format!("follow deployment {n_id} until it ends"),
                ComputeOp::Await,
            ));
            let report = Report::progressing(status, notes, Reason::Deploying, msg, DEPLOY_POLL);
            return done(plan, report, adopt, None);
        }
        ComputeStep::Failed => {
            let n = newest.as_ref();
            let why = n
                .and_then(ComputeDeployment::failure_reason)
                .unwrap_or_else(|| "Failed".into());
            let msg = format!(
                "deployment {} of compute instance {} ended {why}; change the spec or set bosun.dev/reconcile-requested-at to deploy again",
                n.map(|n| n.id.clone()).unwrap_or_default(),
                instance.id
            );
            return done(
                plan,
                Report::stalled(status, notes, Reason::DeployFailed, msg),
                adopt,
                None,
            );
        }
        ComputeStep::Converge => {}
    }

    // What runs: the active deployment when it succeeded. Without one, the newest
    // deployment's service list is the template for the update that brings it up.
    let active_id = instance.active_deployment.clone().or(newest_id.clone());
    let running = match (&active_id, &newest) {
        (Some(a), Some(n)) if *a == n.id => Some(n.clone()),
        (Some(a), _) => need(o.deployments.get(a), ComputeRead::Deployment(a.clone()))?.clone(),
        (None, _) => None,
    }
    .filter(|d| d.status.is_success() || d.status == ComputeDeploymentStatus::Deprecated);
    let template = running.clone().or(newest.clone());
    let main = template.as_ref().and_then(|d| d.services.first());
    let differences = match main {
        Some(m) => main_differences(m, &desired),
        None => Vec::new(),
    };
    match running.as_ref().and_then(|r| r.services.first()) {
        Some(m) => {
            status.replicas = Some(i32::try_from(m.service_count).unwrap_or(i32::MAX));
            status.deployed_revision = Some(format!("{}:{}", m.image, m.tag));
            status.url = m
                .url_preview
                .clone()
                .or_else(|| running.as_ref().and_then(|r| r.url_preview.clone()))
                .filter(|u| !u.is_empty());
        }
        None => status.replicas = Some(0),
    }
    if running.is_some() && differences.is_empty() {
        if let (Some(op), Some(r)) = (status.operation.as_mut(), running.as_ref()) {
            if op.id.as_deref() == Some(r.id.as_str()) {
                op.state = r.status.to_string();
            }
        }
        status.source_ref = Some(spec.source.git_ref().to_string());
        let confirm = newest_id
            .as_ref()
            .filter(|n| running.as_ref().map(|r| &r.id) == Some(*n))
            .map(|n| (instance.id.clone(), n.clone(), desired.print));
        let msg = format!(
            "compute instance {} runs {} replicas of {}",
            instance.id,
            desired.replicas,
            status.deployed_revision.clone().unwrap_or_default()
        );
        let ready = Readiness::ready(Reason::Available, msg);
        return done(
            plan,
            Report::settled(status, notes, ready, observe_only),
            adopt,
            confirm,
        );
    }

    // Update: the full service list again, the main service as the spec says.
    let mut services: Vec<ComputeService> = template
        .as_ref()
        .map(ComputeDeployment::service_configs)
        .unwrap_or_default();
    let main_config = desired
        .config(main)
        .map_err(|m| ReconcileError::user(Reason::UnsupportedByProvider, m))?;
    match services.first_mut() {
        Some(first) => *first = main_config,
        None => services.push(main_config),
    }
    let operation = new_operation(
        UPDATE,
        format!("{AFTER_PREFIX}{}", newest_id.clone().unwrap_or_default()),
        request.generation,
    );
    // Drift: the spec did not change since the last status, yet the instance differs.
    let drift = running.is_some()
        && is_drift(
            &request.previous.conditions,
            request.generation,
            request.observed_generation,
        );
    let (changes, update_events) = if running.is_none() {
        let note = Note::normal(
            Reason::Updated,
            "Update",
            format!(
                "deploying compute instance {} again: nothing runs",
                instance.id
            ),
        );
        let change = Change::new(
            "status.replicas",
            Some("0".into()),
            Some(desired.replicas.to_string()),
        );
        (vec![change], vec![note])
    } else {
        let changes = differences
            .iter()
            .map(|d| Change::new(&d.field, Some(d.observed.clone()), Some(d.desired.clone())))
            .collect();
        let events = if drift {
            Vec::new()
        } else {
            vec![update_note(&instance.id, &differences)]
        };
        (changes, events)
    };
    let fields: Vec<&str> = changes.iter().map(|c| c.field.as_str()).collect();
    let summary = format!("deploy the service list again with {}", fields.join(", "));
    let update = plan.push(Step {
        action: StepAction::Update,
        target,
        changes: changes.clone(),
        drift,
        summary,
        deadline: None,
        record: Some(operation.clone()),
        op: ComputeOp::Update {
            body: UpdateComputeInstance {
                services,
                organization_id: organization.to_string(),
                unique_topic_id: o.topic.clone(),
            },
            operation,
            notes: update_events,
        },
    });
    plan.push(await_deployment(
        ObjectId::FromStep(update),
        "follow the update's deployment until it ends".into(),
        ComputeOp::Await,
    ));
    let report = if act {
        Report::progressing(
            status,
            notes,
            Reason::Deploying,
            format!(
                "compute instance {} is updated: {}",
                instance.id,
                fields.join(", ")
            ),
            DEPLOY_POLL,
        )
    } else {
        let msg = if running.is_none() {
            format!("compute instance {} runs no deployment", instance.id)
        } else {
            format!(
                "compute instance {} differs from the spec in {}",
                instance.id,
                fields.join(", ")
            )
        };
        Report::settled(
            status,
            notes,
            Readiness::not_ready(Reason::Differs, msg),
            observe_only,
        )
    };
    done(plan, report, adopt, None)
}

/// A new instance: create it with the main service, and follow its first deployment.
fn plan_create_instance(
    request: &WorkspaceRequest<'_>,
    o: &ComputeObserved,
    desired: &MainService,
    plan: &mut Plan<ComputeOp>,
    mut status: WorkspaceStatus,
    notes: Vec<Note>,
) -> Result<Report<WorkspaceStatus>, ReconcileError> {
    let main = desired
        .config(None)
        .map_err(|m| ReconcileError::user(Reason::ComputeSettingsRequired, m))?;
    let image = format!("{}:{}", main.image, main.tag);
    let body = CreateComputeInstance {
        organization_id: o.organization.clone(),
        unique_topic_id: o.topic.clone(),
        compute_provider: "DOCKERHUB".into(),
        compute_project_name: request.external_name.clone(),
        compute_project_description: Some(format!("managed by bosun for {}", request.key)),
        region: desired.region.clone(),
        // On demand: a spot lease may be taken away, which bosun would see as drift.
        scalable: true,
        services: vec![main],
    };
    let mut operation = new_operation(CREATE, String::new(), request.generation);
    operation.state = ComputeDeploymentStatus::Queued.to_string();
    let create = plan.push(Step {
        action: StepAction::Create,
        target: spheron_target("compute instance", ObjectId::New, &request.external_name),
        changes: vec![
            Change::new("spec.spheron.compute.image", None, Some(image)),
            Change::new("spec.replicas", None, Some(desired.replicas.to_string())),
        ],
        drift: false,
        summary: format!(
            "create compute instance {} in organization {} ({} replicas)",
            request.external_name, o.organization, desired.replicas
        ),
        deadline: None,
        record: None,
        op: ComputeOp::Create { body, operation },
    });
    plan.push(await_deployment(
        ObjectId::FromStep(create),
        "follow the first deployment until it ends".into(),
        ComputeOp::Await,
    ));
    status.source_ref = None;
    status.url = None;
    status.deployed_revision = None;
    Ok(Report::progressing(
        status,
        notes,
        Reason::Deploying,
        format!(
            "compute instance {} will be created in organization {}",
            request.external_name, o.organization
        ),
        DEPLOY_POLL,
    ))
}

/// A compute Workspace's platform, for the plan seam: the client and where the instance lives.
pub struct ComputeSeam<'a> {
    pub client: &'a SpheronClient,
    pub organization: &'a str,
    pub compute: &'a SpheronCompute,
}

/// How many reads one observation may make before it stops asking.
const MAX_COMPUTE_READS: usize = 8;

impl<'r> Decides<'r> for ComputeSeam<'_> {
    fn decided(
        &self,
        request: &WorkspaceRequest<'r>,
        observed: &ComputeObserved,
    ) -> Result<Decided<ComputeOp>, ReconcileError> {
        plan::decided(decide_compute(request, self.compute, observed))
    }
}

impl ComputeSeam<'_> {
    /// A closed instance no longer runs: it is what is left of a deleted one.
    async fn open_instances(&self) -> Result<Vec<ComputeInstance>, ReconcileError> {
        Ok(self
            .client
            .instances_of(self.organization)
            .await?
            .iter()
            .filter(|i| i.state != InstanceState::Closed)
            .cloned()
            .collect())
    }
}

#[async_trait]
impl<'r> PlanSeam<WorkspaceRequest<'r>, WorkspaceStatus> for ComputeSeam<'_> {
    type Answer = ComputeAnswer;
    type Op = ComputeOp;
    type Observation = ComputeObserved;

    async fn observe(
        &self,
        request: &WorkspaceRequest<'r>,
    ) -> Result<ComputeObserved, ReconcileError> {
        let client = self.client;
        // An earlier create or update may have gone through unseen: only a fresh listing can
        // tell.
        let requesting = request
            .previous
            .operation
            .as_ref()
            .is_some_and(|o| o.state == REQUESTING);
        if request.create_pending || requesting {
            client.forget_instances(self.organization).await;
        }
        let mut o =
            ComputeObserved::new(self.organization, self.open_instances().await?, topic_id());
        // The plan says which reads it needs, one at a time.
        for _ in 0..MAX_COMPUTE_READS {
            let Err(plan::Halt::Need(read)) = decide_compute(request, self.compute, &o) else {
                break;
            };
            match read {
                ComputeRead::FreshListing => {
                    client.forget_instances(self.organization).await;
                    o.instances = self.open_instances().await?;
                    o.fresh = true;
                }
                ComputeRead::OtherKind(id) => {
                    let other = client
                        .owned_by_other_kind(self.organization, &id, true)
                        .await?;
                    o.other_kind.insert(id, other);
                }
                ComputeRead::Confirmed(id) => {
                    let confirmed = client.shared.confirmed(&id);
                    o.confirmed.insert(id, confirmed);
                }
                ComputeRead::Deployment(id) => {
                    let deployment = client.compute_deployment(&id).await?;
                    o.deployments.insert(id, deployment);
                }
            }
        }
        Ok(o)
    }

    fn plan(
        &self,
        request: &WorkspaceRequest<'r>,
        observed: &ComputeObserved,
    ) -> Result<Planned<ComputeOp, WorkspaceStatus>, ReconcileError> {
        self.decided(request, observed).map(|d| d.planned)
    }

    async fn execute(
        &self,
        step: &Step<ComputeOp>,
        _answers: &[ComputeAnswer],
    ) -> Result<ComputeAnswer, ReconcileError> {
        let client = self.client;
        Ok(match &step.op {
            ComputeOp::Create { body, .. } => {
                let created = client.create_compute_instance(body).await?;
                client.forget_instances(self.organization).await;
                ComputeAnswer::Started(created)
            }
            ComputeOp::Update { body, .. } => {
                let ObjectId::Known(instance) = &step.target.id else {
                    return Err(ReconcileError::user(
                        Reason::Unknown,
                        "an update of a compute instance without its id: nothing was sent",
                    ));
                };
                let updated = client.update_compute_instance(instance, body).await?;
                client.forget_instances(self.organization).await;
                client.shared.unconfirm(instance);
                ComputeAnswer::Started(updated)
            }
            ComputeOp::Await => ComputeAnswer::Done,
        })
    }

    fn answered_id(&self, answer: &ComputeAnswer) -> Option<String> {
        match answer {
            ComputeAnswer::Started(d) => Some(d.compute_instance_id.clone()),
            ComputeAnswer::Done => None,
        }
    }

    fn answered(
        &self,
        report: &mut Report<WorkspaceStatus>,
        step: &Step<ComputeOp>,
        answer: &ComputeAnswer,
    ) -> Flow {
        let ComputeAnswer::Started(started) = answer else {
            return Flow::Continue;
        };
        let deployment = started.compute_deployment_id.clone();
        let instance = started.compute_instance_id.clone();
        let (operation, message) = match &step.op {
            ComputeOp::Create { operation, .. } => {
                report.notes.push(Note::normal(
                    Reason::Created,
                    "Create",
                    format!(
                        "created Spheron compute instance {instance} in organization {} ({})",
                        self.organization,
                        step.changes
                            .iter()
                            .find(|c| c.field == "spec.replicas")
                            .and_then(|c| c.to.clone())
                            .map(|n| format!("{n} replicas"))
                            .unwrap_or_default()
                    ),
                ));
                report.status.external_id = Some(instance.clone());
                (
                    operation,
                    format!("deployment {deployment} of compute instance {instance} started"),
                )
            }
            ComputeOp::Update {
                operation, notes, ..
            } => {
                report.notes.extend(notes.iter().cloned());
                (
                    operation,
                    format!("update {deployment} of compute instance {instance} started"),
                )
            }
            ComputeOp::Await => return Flow::Continue,
        };
        report.status.operation = Some(OperationStatus {
            id: Some(deployment),
            state: ComputeDeploymentStatus::Queued.to_string(),
            ..operation.clone()
        });
        report.progress(Reason::Deploying, message, DEPLOY_POLL);
        Flow::Stop
    }
}

impl SpheronClient {
    pub(super) async fn reconcile_compute(
        &self,
        request: &WorkspaceRequest<'_>,
        guard: &dyn CreateGuard,
        organization: &str,
        compute: &SpheronCompute,
    ) -> Result<Report<WorkspaceStatus>, ReconcileError> {
        let seam = ComputeSeam {
            client: self,
            organization,
            compute,
        };
        self.reconcile_on(&seam, request, guard).await
    }
}
