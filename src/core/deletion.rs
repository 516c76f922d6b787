//! Deleting is a plan too: what removing an object takes at the platform is computed by a pure
//! function of what is left there, as typed steps, and sent here, once, for every platform.
//!
//! The controller core has already honoured `deletionPolicy: Orphan`, `managementPolicy:
//! Observe` and `bosun.dev/paused` before a deletion is planned (see `core::reconciler`).

use crate::core::error::ReconcileError;
use crate::core::plan::{Plan, Step, StepAction};
use crate::core::reconciler::{Cleanup, Note};
use async_trait::async_trait;
use std::time::Duration;

/// How long bosun waits before looking again at a deletion the platform has not finished.
pub const DELETION_POLL: Duration = Duration::from_secs(5);

/// What removing an object takes.
pub struct Deletion<Op> {
    /// The steps, in order. An `Await` step says the platform deletes in its own time: bosun
    /// lets go of the object only once a fresh look finds nothing left to do.
    pub plan: Plan<Op>,
    /// What bosun leaves at the platform on purpose, said in Events (Code Manager keeps an
    /// environment until its branch is deleted).
    pub left: Vec<Note>,
}

impl<Op> Default for Deletion<Op> {
    fn default() -> Self {
        Deletion {
            plan: Plan::default(),
            left: Vec::new(),
        }
    }
}

/// A platform's part in deleting a kind's object.
#[async_trait]
pub trait DeletionSeam<Request: Sync + ?Sized>: Send + Sync {
    /// What `observe_remains` found.
    type Remains: Send + Sync;
    /// The platform's own request a step carries.
    type Op: Send + Sync;
    /// What the platform answers a step with.
    type Answer: Send;

    /// Reads only: what of the object is left at the platform.
    async fn observe_remains(&self, request: &Request) -> Result<Self::Remains, ReconcileError>;

    /// Pure: the steps that remove what is left.
    fn plan_deletion(
        &self,
        request: &Request,
        remains: &Self::Remains,
    ) -> Result<Deletion<Self::Op>, ReconcileError>;

    /// Sends one step.
    async fn execute_deletion(&self, step: &Step<Self::Op>)
        -> Result<Self::Answer, ReconcileError>;

    /// The Event for a step that was sent.
    fn removed(&self, step: &Step<Self::Op>, answer: &Self::Answer) -> Note;
}

/// Observe what is left → plan its removal → send the steps in order. Done (the finalizer may
/// go) when nothing is left; in progress while the platform is still removing it.
pub async fn delete<Request, P>(seam: &P, request: &Request) -> Result<Cleanup, ReconcileError>
where
    Request: Sync + ?Sized,
    P: DeletionSeam<Request>,
{
    let remains = seam.observe_remains(request).await?;
    let Deletion { plan, left } = seam.plan_deletion(request, &remains)?;
    let mut notes = Vec::new();
    for step in plan.steps.iter().take_while(|s| s.action.writes()) {
        let answer = seam.execute_deletion(step).await?;
        notes.push(seam.removed(step, &answer));
    }
    if plan.steps.iter().any(|s| s.action == StepAction::Await) {
        let remains = seam.observe_remains(request).await?;
        let still = seam.plan_deletion(request, &remains)?.plan;
        if !still.is_empty() {
            return Ok(Cleanup::InProgress(DELETION_POLL, waiting_for(&still)));
        }
    }
    notes.extend(left);
    Ok(Cleanup::Done(notes))
}

/// What a deletion still waits for: its await steps, or else what is still to send.
fn waiting_for<Op>(plan: &Plan<Op>) -> String {
    let awaits: Vec<&str> = plan
        .steps
        .iter()
        .filter(|s| s.action == StepAction::Await)
        .map(|s| s.summary.as_str())
        .collect();
    if awaits.is_empty() {
        let rest: Vec<&str> = plan.steps.iter().map(|s| s.summary.as_str()).collect();
        format!("still to do: {}", rest.join("; "))
    } else {
        awaits.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::plan::{ObjectId, Target};
    use crate::core::reason::Reason;
    use std::sync::Mutex;

    /// A platform whose objects go `gone_after` looks after their delete was sent.
    struct Platform {
        objects: Mutex<Vec<(u32, u32)>>,
        asynchronous: bool,
        sent: Mutex<Vec<String>>,
    }

    impl Platform {
        fn new(ids: &[u32], asynchronous: bool, gone_after: u32) -> Self {
            Platform {
                objects: Mutex::new(ids.iter().map(|i| (*i, gone_after)).collect()),
                asynchronous,
                sent: Mutex::new(Vec::new()),
            }
        }
    }

    fn step(action: StepAction, id: u32) -> Step<u32> {
        let target = Target {
            kind: "thing",
            name: format!("t{id}"),
            id: ObjectId::Known(id.to_string()),
        };
        Step::plain(action, target, format!("{action} thing {id}"), id)
    }

    #[async_trait]
    impl DeletionSeam<()> for Platform {
        type Remains = Vec<u32>;
        type Op = u32;
        type Answer = ();

        async fn observe_remains(&self, _: &()) -> Result<Vec<u32>, ReconcileError> {
            let mut objects = self.objects.lock().unwrap();
            // Each look brings a pending delete closer to done.
            for (_, left) in objects.iter_mut() {
                *left = left.saturating_sub(1);
            }
            objects.retain(|(_, left)| *left > 0 || !self.asynchronous);
            Ok(objects.iter().map(|(id, _)| *id).collect())
        }

        fn plan_deletion(
            &self,
            _: &(),
            remains: &Vec<u32>,
        ) -> Result<Deletion<u32>, ReconcileError> {
            let mut plan = Plan::default();
            for id in remains {
                plan.push(step(StepAction::Delete, *id));
            }
            if self.asynchronous {
                for id in remains {
                    plan.push(step(StepAction::Await, *id));
                }
            }
            Ok(Deletion {
                plan,
                left: vec![Note::warning(
                    Reason::NotDeletedAtPlatform,
                    "Delete",
                    "kept x",
                )],
            })
        }

        async fn execute_deletion(&self, step: &Step<u32>) -> Result<(), ReconcileError> {
            self.sent.lock().unwrap().push(step.summary.clone());
            if !self.asynchronous {
                self.objects
                    .lock()
                    .unwrap()
                    .retain(|(id, _)| *id != step.op);
            }
            Ok(())
        }

        fn removed(&self, step: &Step<u32>, _: &()) -> Note {
            Note::normal(
                Reason::Deleted,
                "Delete",
                format!("deleted thing {}", step.op),
            )
        }
    }

    #[tokio::test]
    async fn steps_are_sent_in_order_and_each_is_an_event() {
        let platform = Platform::new(&[1, 2], false, 0);
        let Cleanup::Done(notes) = delete(&platform, &()).await.unwrap() else {
            panic!("a synchronous deletion is done at once");
        };
        assert_eq!(
            *platform.sent.lock().unwrap(),
            vec!["delete thing 1", "delete thing 2"]
        );
        let messages: Vec<&str> = notes.iter().map(|n| n.message.as_str()).collect();
        assert_eq!(
            messages,
            vec!["deleted thing 1", "deleted thing 2", "kept x"]
        );
    }

    #[tokio::test]
    async fn an_asynchronous_deletion_waits_until_a_fresh_look_finds_nothing() {
        // Gone at the third look: the look right after the delete still finds it.
        let platform = Platform::new(&[7], true, 3);
        match delete(&platform, &()).await.unwrap() {
            Cleanup::InProgress(after, message) => {
                assert_eq!(after, DELETION_POLL);
                assert_eq!(message, "await thing 7");
            }
            Cleanup::Done(_) => panic!("the object is still there"),
        }
        // The next round sends the delete again (idempotent) and finds it gone.
        let Cleanup::Done(notes) = delete(&platform, &()).await.unwrap() else {
            panic!("gone by now");
        };
        assert_eq!(
            platform.sent.lock().unwrap().len(),
            1,
            "nothing left to delete"
        );
        assert_eq!(notes.len(), 1, "only what is kept on purpose: {notes:?}");
    }

    #[tokio::test]
    async fn nothing_left_sends_nothing() {
        let platform = Platform::new(&[], false, 0);
        let Cleanup::Done(notes) = delete(&platform, &()).await.unwrap() else {
            panic!("nothing to wait for");
        };
        assert!(platform.sent.lock().unwrap().is_empty());
        assert_eq!(notes[0].reason, Reason::NotDeletedAtPlatform);
    }
}
