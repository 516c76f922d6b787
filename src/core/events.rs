//! Publishing `events.k8s.io/v1` Events.
//!
//! kube's `Recorder` folds Events with the same reason and action into one series that keeps
//! the first message, which would hide the values of a second drift correction. bosun only
//! emits an Event when something happened or an error is new, so each gets its own object.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

/// Who publishes.
#[derive(Clone)]
pub struct Publisher {
    client: Client,
    controller: String,
    instance: String,
}

impl Publisher {
    pub fn new(client: Client, instance: Option<String>) -> Self {
        Publisher {
            client,
            controller: "bosun.dev/bosun".into(),
            instance: instance.unwrap_or_else(|| "bosun".into()),
        }
    }

    /// Creates one Event about `regarding`.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        warning: bool,
        reason: &str,
        action: &str,
        note: &str,
    ) -> Result<(), kube::Error> {
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let name = regarding.name.clone().unwrap_or_default();
        let event = Event {
            metadata: ObjectMeta {
                // `<object>.<hex nanoseconds>`, as Kubernetes names its own Events.
                name: Some(format!(
                    "{}.{:x}{:04x}",
                    name.chars().take(200).collect::<String>(),
                    jiff::Timestamp::now().as_nanosecond(),
                    rand::random::<u16>()
                )),
                namespace: Some(namespace),
                ..Default::default()
            },
            event_time: Some(MicroTime(jiff::Timestamp::now())),
            type_: Some(if warning { "Warning" } else { "Normal" }.into()),
            reason: Some(reason.chars().take(128).collect()),
            action: Some(action.chars().take(128).collect()),
            note: Some(note.chars().take(1000).collect()),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.chars().take(128).collect()),
            ..Default::default()
        };
        api.create(&PostParams::default(), &event).await.map(|_| ())
    }
}
