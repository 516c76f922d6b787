//! Finding the platform object a resource stands for, the same way on every platform: by the
//! id bosun knows, else by name; taking a named one over only after bosun's own interrupted
//! create or when asked to (`adoptByName`, `managementPolicy: Observe`); and what users are told
//! when that is not possible. A platform's plan says how its objects are named in messages
//! ([`Words`]) and what to do with the [`Placement`]; nothing else about locating is its own.

use crate::core::drivers::WorkspaceRequest;
use crate::core::error::ReconcileError;
use crate::core::plan::Halt;
use crate::core::reason::Reason;
use crate::core::reconciler::Note;
use std::fmt::Display;

/// A platform object that bosun finds by id or by name. Ids are numbers on most platforms;
/// `Id` is a string where the platform's ids are (Spheron's are Mongo ObjectIds).
pub trait Identified<Id: PartialEq = i64> {
    fn platform_id(&self) -> Id;
    fn platform_name(&self) -> &str;
}

/// Where the platform object stands relative to what bosun knows.
#[derive(Clone, Debug, PartialEq)]
pub enum Located<'a, T, Id = i64> {
    /// Found by id, or by name where taking it over is right.
    Found(&'a T),
    /// bosun knew an id but the platform no longer has it.
    Gone(Id),
    /// Nothing to find: create it.
    Absent,
    /// An object of that name exists that bosun did not create.
    NameTaken(&'a T),
    /// Several objects carry the name after an interrupted create.
    Ambiguous(usize),
}

/// Finds the object in a listing (pure): by the id bosun knows, else by name, taking a named
/// one over only after an interrupted create of bosun's own or when the user asked to adopt.
pub fn locate<'a, T: Identified<Id>, Id: PartialEq>(
    list: &'a [T],
    known_id: Option<Id>,
    name: &str,
    create_pending: bool,
    adopt_by_name: bool,
) -> Located<'a, T, Id> {
    if let Some(id) = known_id {
        return match list.iter().find(|o| o.platform_id() == id) {
            Some(o) => Located::Found(o),
            None => Located::Gone(id),
        };
    }
    let named: Vec<&T> = list.iter().filter(|o| o.platform_name() == name).collect();
    match named.as_slice() {
        [] => Located::Absent,
        [one] if create_pending || adopt_by_name => Located::Found(one),
        [one] => Located::NameTaken(one),
        many => Located::Ambiguous(many.len()),
    }
}

/// How a platform's objects are named in the messages about locating them.
pub struct Words<'w> {
    /// The object, with its platform: `Codesphere workspace`, `Spheron compute instance`.
    pub kind: &'w str,
    /// Where it lives: `team 3`, `environment 1`, `organization 65f…`.
    pub within: &'w str,
    /// How it is found without an id: `named "team-shop"`, `for repository https://…`.
    pub by: &'w str,
    /// Whether `spec.externalName` chooses what it is found by (a site is found by its
    /// repository instead).
    pub renamable: bool,
    /// What to do with the extra ones an interrupted create left: `delete`, `close`.
    pub extra: &'w str,
}

/// What the plan does with the object, decided the same way on every platform.
#[derive(Debug, PartialEq)]
pub enum Placement<'a, T, Id> {
    /// Manage (or observe) this object. If status did not have its id yet (it was found by
    /// name, or `spec.externalId` names it), the take-over is in the [`Record`].
    Found(&'a T),
    /// Nothing there: create it. `gone` is the id bosun knew, deleted at the platform:
    /// creating it again corrects that, with a `DriftCorrected` Event.
    Create { gone: Option<Id> },
    /// Nothing there, and `managementPolicy: Observe` may not create it: the message says
    /// what is missing.
    Missing(String),
}

/// Where [`place`] records taking over an object status had no id for: the id in status, the
/// `Adopted` Event, and the id the funnel saves before any step is sent (`Planned::adopt`).
pub struct Record<'r> {
    pub external_id: &'r mut Option<String>,
    pub notes: &'r mut Vec<Note>,
    pub adopt: &'r mut Option<String>,
}

/// Settles what [`locate`] found for `request`. `refresh` is the read that gets a fresh
/// listing, `None` when `list` was read just now: before concluding that a known object is gone, or creating after an interrupted
/// create (which may have gone through), the plan asks for a fresh listing (`refresh`), since
/// a shared one may predate a create. Without the create-pending marker bosun never sent a
/// create for this object, and a shared listing is good enough.
pub fn place<'a, T, Id, R>(
    list: &'a [T],
    request: &WorkspaceRequest<'_>,
    known_id: Option<Id>,
    by: &str,
    refresh: Option<R>,
    words: &Words<'_>,
    record: Record<'_>,
) -> Result<Placement<'a, T, Id>, Halt<R>>
where
    T: Identified<Id>,
    Id: PartialEq + Display + Clone,
{
    let observing = request.mode.observing();
    let act = request.mode.act();
    let adopt_by_name = request.spec.adopt_by_name || observing;
    let located = locate(list, known_id, by, request.create_pending, adopt_by_name);
    let interrupted = act && request.create_pending && matches!(located, Located::Absent);
    if matches!(located, Located::Gone(_)) || interrupted {
        if let Some(read) = refresh {
            return Err(Halt::Need(read));
        }
    }
    let Words {
        kind,
        within,
        by: found_by,
        ..
    } = words;
    Ok(match located {
        Located::Found(object) => {
            let id = object.platform_id().to_string();
            if request.previous.external_id.as_deref() != Some(id.as_str()) {
                let name = object.platform_name();
                record.notes.push(Note::normal(
                    Reason::Adopted,
                    "Adopt",
                    format!("manages {kind} {id} ({name})"),
                ));
                *record.external_id = Some(id.clone());
                *record.adopt = Some(id);
            }
            Placement::Found(object)
        }
        Located::NameTaken(object) => {
            let id = object.platform_id();
            let rename = if words.renamable {
                ", or spec.externalName to use another name"
            } else {
                ""
            };
            return Err(ReconcileError::user(
                Reason::NameTaken,
                format!(
                    "{within} already has a {kind} {found_by} (id {id}) that bosun did not create: set spec.adoptByName: true or spec.externalId: \"{id}\" to manage it{rename}"
                ),
            )
            .into());
        }
        Located::Ambiguous(n) => {
            return Err(ReconcileError::user(
                Reason::CreateOutcomeUnknown,
                format!(
                    "{within} has {n} {kind}s {found_by} (an interrupted create, or made outside bosun): {} the extra ones, or set spec.externalId to the one to keep",
                    words.extra
                ),
            )
            .into());
        }
        // An id the user named, or one an observed object had, is never made anew.
        Located::Gone(id) if request.spec.external_id.is_some() || observing => {
            return Err(ReconcileError::user(
                Reason::ExternalObjectNotFound,
                format!("{within} has no {kind} {id}"),
            )
            .into());
        }
        Located::Gone(id) => Placement::Create { gone: Some(id) },
        Located::Absent if observing => {
            Placement::Missing(format!("{within} has no {kind} {found_by} to observe"))
        }
        Located::Absent => Placement::Create { gone: None },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ManagementPolicy, WorkspaceSpec, WorkspaceStatus};
    use crate::core::plan::Hold;
    use crate::core::reconciler::Mode;

    #[derive(Debug, PartialEq)]
    struct Thing(i64, &'static str);

    impl Identified for Thing {
        fn platform_id(&self) -> i64 {
            self.0
        }
        fn platform_name(&self) -> &str {
            self.1
        }
    }

    const WORDS: Words<'static> = Words {
        kind: "thing",
        within: "team 3",
        by: "named \"team-shop\"",
        renamable: true,
        extra: "delete",
    };

    struct Case {
        list: Vec<Thing>,
        known: Option<i64>,
        external_id: bool,
        adopt_by_name: bool,
        create_pending: bool,
        hold: Option<Hold>,
        fresh: bool,
    }

    impl Default for Case {
        fn default() -> Self {
            Case {
                list: vec![Thing(7, "team-shop")],
                known: None,
                external_id: false,
                adopt_by_name: false,
                create_pending: false,
                hold: None,
                fresh: true,
            }
        }
    }

    /// What `place` says, as text: `found 7 (adopted)`, `create`, `create again (gone 9)`,
    /// `missing: …`, `fresh listing`, or the error's reason.
    fn placed(case: Case) -> String {
        let mut spec: WorkspaceSpec = serde_json::from_value(serde_json::json!({
            "providerRef": {"name": "p"},
            "source": {"repository": "https://example.com/r.git", "branch": "main"}
        }))
        .unwrap();
        spec.adopt_by_name = case.adopt_by_name;
        if case.external_id {
            spec.external_id = case.known.map(|k| k.to_string());
        }
        if case.hold == Some(Hold::Observe) {
            spec.management_policy = ManagementPolicy::Observe;
        }
        let previous = WorkspaceStatus {
            external_id: (!case.external_id)
                .then_some(case.known)
                .flatten()
                .map(|k| k.to_string()),
            ..Default::default()
        };
        let mut request = WorkspaceRequest::for_test(&spec, &previous);
        request.create_pending = case.create_pending;
        request.mode = Mode {
            hold: case.hold,
            requested: false,
        };
        let (mut external_id, mut notes, mut adopt) = (previous.external_id.clone(), vec![], None);
        let record = Record {
            external_id: &mut external_id,
            notes: &mut notes,
            adopt: &mut adopt,
        };
        let placed = place(
            &case.list,
            &request,
            case.known,
            "team-shop",
            (!case.fresh).then_some("fresh listing"),
            &WORDS,
            record,
        );
        match placed {
            Ok(Placement::Found(object)) => match adopt {
                Some(id) => {
                    assert_eq!(external_id.as_deref(), Some(id.as_str()), "saved in status");
                    let messages: Vec<&str> = notes.iter().map(|n| n.message.as_str()).collect();
                    format!("found {} (adopted: {})", object.0, messages.join("; "))
                }
                None => format!("found {}", object.0),
            },
            Ok(Placement::Create { gone: None }) => "create".into(),
            Ok(Placement::Create { gone: Some(id) }) => format!("create again (gone {id})"),
            Ok(Placement::Missing(m)) => format!("missing: {m}"),
            Err(Halt::Need(read)) => read.to_string(),
            Err(Halt::Error(e)) => format!("{:?}: {e}", e.reason()),
        }
    }

    #[test]
    fn placements_table() {
        let rows: Vec<(&str, Case, &str)> = vec![
            ("known and there", Case { known: Some(7), ..Default::default() }, "found 7"),
            (
                "a name bosun did not create",
                Case::default(),
                "NameTaken: team 3 already has a thing named \"team-shop\" (id 7) that bosun did not create: set spec.adoptByName: true or spec.externalId: \"7\" to manage it, or spec.externalName to use another name",
            ),
            ("adoptByName", Case { adopt_by_name: true, ..Default::default() }, "found 7 (adopted: manages thing 7 (team-shop))"),
            (
                "after bosun's interrupted create",
                Case { create_pending: true, ..Default::default() },
                "found 7 (adopted: manages thing 7 (team-shop))",
            ),
            (
                "observed: taken over by name",
                Case { hold: Some(Hold::Observe), ..Default::default() },
                "found 7 (adopted: manages thing 7 (team-shop))",
            ),
            (
                "spec.externalId names it",
                Case { known: Some(7), external_id: true, ..Default::default() },
                "found 7 (adopted: manages thing 7 (team-shop))",
            ),
            ("nothing there", Case { list: vec![], ..Default::default() }, "create"),
            (
                "paused: the create is planned (and held)",
                Case { list: vec![], hold: Some(Hold::Paused), ..Default::default() },
                "create",
            ),
            (
                "observed, nothing there",
                Case { list: vec![], hold: Some(Hold::Observe), ..Default::default() },
                "missing: team 3 has no thing named \"team-shop\" to observe",
            ),
            (
                "gone, seen in a shared listing: look again",
                Case { known: Some(9), fresh: false, ..Default::default() },
                "fresh listing",
            ),
            (
                "gone in a fresh listing: create again",
                Case { known: Some(9), ..Default::default() },
                "create again (gone 9)",
            ),
            (
                "gone, but the user named it",
                Case { known: Some(9), external_id: true, ..Default::default() },
                "ExternalObjectNotFound: team 3 has no thing 9",
            ),
            (
                "gone while observed",
                Case { known: Some(9), hold: Some(Hold::Observe), ..Default::default() },
                "ExternalObjectNotFound: team 3 has no thing 9",
            ),
            (
                "an interrupted create, seen in a shared listing: look again",
                Case { list: vec![], create_pending: true, fresh: false, ..Default::default() },
                "fresh listing",
            ),
            (
                "nothing there without the marker: the shared listing will do",
                Case { list: vec![], fresh: false, ..Default::default() },
                "create",
            ),
            (
                "two of the name",
                Case {
                    list: vec![Thing(7, "team-shop"), Thing(8, "team-shop")],
                    create_pending: true,
                    ..Default::default()
                },
                "CreateOutcomeUnknown: team 3 has 2 things named \"team-shop\" (an interrupted create, or made outside bosun): delete the extra ones, or set spec.externalId to the one to keep",
            ),
        ];
        for (case, input, want) in rows {
            assert_eq!(placed(input), want, "{case}");
        }
    }

    #[test]
    fn by_id_first_then_by_name() {
        let list = [Thing(1, "a"), Thing(2, "b")];
        assert_eq!(
            locate(&list, Some(2), "a", false, false),
            Located::Found(&list[1])
        );
        assert_eq!(locate(&list, Some(9), "a", false, false), Located::Gone(9));
        assert_eq!(locate(&list, None, "new", false, false), Located::Absent);
        assert_eq!(
            locate(&list, None, "a", false, false),
            Located::NameTaken(&list[0])
        );
        assert_eq!(
            locate(&list, None, "a", true, false),
            Located::Found(&list[0])
        );
        assert_eq!(
            locate(&list, None, "a", false, true),
            Located::Found(&list[0])
        );
        let twice = [Thing(1, "a"), Thing(2, "a")];
        assert_eq!(
            locate(&twice, None, "a", true, false),
            Located::Ambiguous(2)
        );
    }
}
