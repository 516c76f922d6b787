//! Published OpenAPI documents (`shared/specs/`) as test oracles: a small JSON Schema checker and
//! helpers to match requests and responses against a spec's operations. Shared by the
//! simulators' fidelity tests and the clients' conformance tests (Codesphere, Devopness).

use reqwest::Method;
use serde_json::Value;

/// The Codesphere spec.
pub(crate) fn load_spec() -> Value {
    load_named_spec("codesphere-openapi.json")
}

/// A spec of `shared/specs/` by file name, e.g. `devopness-openapi.json`.
pub(crate) fn load_named_spec(file: &str) -> Value {
    let path = format!("{}/../shared/specs/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_json::from_str(&text).expect("spec is JSON")
}

/// A parameter object, following a `$ref` to `#/components/parameters`.
fn resolve_param<'a>(spec: &'a Value, param: &'a Value) -> &'a Value {
    param
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/components/parameters/"))
        .and_then(|name| spec.pointer("/components/parameters")?.get(name))
        .unwrap_or(param)
}

/// A small JSON Schema checker (the `OpenAPI` 3.0 dialect): type, properties, required, items,
/// additionalProperties, nullable, enum, minimum, format (date-time, uuid), `$ref` to
/// `#/components/schemas`, allOf, oneOf, anyOf. Stricter than JSON Schema in one way: an
/// object with declared `properties` and no `additionalProperties` may not carry undeclared
/// fields, so a misspelt field in the simulator is caught.
pub(crate) struct Checker<'a> {
    pub(crate) spec: &'a Value,
}

impl Checker<'_> {
    pub(crate) fn errors(&self, schema: &Value, value: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        self.check(schema, value, "$", true, &mut errors);
        errors
    }

    /// Like [`Checker::errors`], but undeclared fields are allowed (plain JSON Schema), for
    /// schemas whose declared properties are placeholders (e.g. Devopness' `ApiError.errors`).
    pub(crate) fn lenient_errors(&self, schema: &Value, value: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        self.check(schema, value, "$", false, &mut errors);
        errors
    }

    fn resolve(&self, reference: &str) -> Option<&Value> {
        let name = reference.strip_prefix("#/components/schemas/")?;
        self.spec.pointer("/components/schemas")?.get(name)
    }

    fn check(&self, schema: &Value, value: &Value, at: &str, strict: bool, errs: &mut Vec<String>) {
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            match self.resolve(reference) {
                Some(target) => self.check(target, value, at, strict, errs),
                None => errs.push(format!("{at}: unresolvable $ref {reference}")),
            }
            return;
        }
        if value.is_null() && schema.get("nullable") == Some(&Value::Bool(true)) {
            return;
        }
        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            // Properties may be split across the parts, so none of them can be strict.
            for part in all {
                self.check(part, value, at, false, errs);
            }
        }
        if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
            let passing = any.iter().filter(|s| self.errors_lenient(s, value)).count();
            if passing == 0 {
                errs.push(format!("{at}: matches none of anyOf"));
            }
        }
        if let Some(one) = schema.get("oneOf").and_then(Value::as_array) {
            let passing = one.iter().filter(|s| self.errors_lenient(s, value)).count();
            if passing != 1 {
                errs.push(format!("{at}: matches {passing} of oneOf, want exactly 1"));
            }
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
            if !allowed.contains(value) {
                errs.push(format!("{at}: {value} not in enum {allowed:?}"));
            }
        }
        let ty = schema.get("type").and_then(Value::as_str).or_else(|| {
            (schema.get("properties").is_some() || schema.get("required").is_some())
                .then_some("object")
        });
        match ty {
            Some("object") => self.check_object(schema, value, at, strict, errs),
            Some("array") => match value.as_array() {
                Some(items) => {
                    if let Some(item_schema) = schema.get("items") {
                        for (i, item) in items.iter().enumerate() {
                            self.check(item_schema, item, &format!("{at}[{i}]"), strict, errs);
                        }
                    }
                }
                None => errs.push(format!("{at}: expected array, got {value}")),
            },
            Some("string") => match value.as_str() {
                Some(s) => {
                    check_format(schema, s, at, errs);
                    check_pattern(schema, s, at, errs);
                }
                None => errs.push(format!("{at}: expected string, got {value}")),
            },
            Some("integer") => {
                if value.is_i64() || value.is_u64() {
                    check_bounds(schema, value, at, errs);
                } else {
                    errs.push(format!("{at}: expected integer, got {value}"));
                }
            }
            Some("number") => {
                if value.is_number() {
                    check_bounds(schema, value, at, errs);
                } else {
                    errs.push(format!("{at}: expected number, got {value}"));
                }
            }
            Some("boolean") if !value.is_boolean() => {
                errs.push(format!("{at}: expected boolean, got {value}"));
            }
            Some("boolean") | None => {}
            Some(other) => errs.push(format!("{at}: unsupported schema type {other}")),
        }
    }

    fn errors_lenient(&self, schema: &Value, value: &Value) -> bool {
        let mut errs = Vec::new();
        self.check(schema, value, "$", false, &mut errs);
        errs.is_empty()
    }

    fn check_object(
        &self,
        schema: &Value,
        value: &Value,
        at: &str,
        strict: bool,
        errs: &mut Vec<String>,
    ) {
        let Some(object) = value.as_object() else {
            errs.push(format!("{at}: expected object, got {value}"));
            return;
        };
        for name in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !object.contains_key(name) {
                errs.push(format!("{at}: missing required field {name}"));
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties");
        for (name, field) in object {
            let path = format!("{at}.{name}");
            match (properties.and_then(|p| p.get(name)), additional) {
                (Some(field_schema), _) => self.check(field_schema, field, &path, strict, errs),
                (None, Some(extra)) if extra.is_object() => {
                    self.check(extra, field, &path, strict, errs);
                }
                (None, Some(Value::Bool(false))) => {
                    errs.push(format!("{path}: additional property not allowed"));
                }
                (None, None) if strict && properties.is_some() => {
                    errs.push(format!("{path}: field not declared in the spec"));
                }
                _ => {}
            }
        }
    }
}

fn check_format(schema: &Value, s: &str, at: &str, errs: &mut Vec<String>) {
    match schema.get("format").and_then(Value::as_str) {
        Some("date-time") if s.parse::<jiff::Timestamp>().is_err() => {
            errs.push(format!("{at}: {s:?} is not an RFC 3339 date-time"));
        }
        Some("uuid") => {
            let groups: Vec<usize> = s.split('-').map(str::len).collect();
            let hex = s.chars().all(|c| c == '-' || c.is_ascii_hexdigit());
            if groups != [8, 4, 4, 4, 12] || !hex {
                errs.push(format!("{at}: {s:?} is not a UUID"));
            }
        }
        _ => {}
    }
}

fn check_bounds(schema: &Value, value: &Value, at: &str, errs: &mut Vec<String>) {
    let Some(v) = value.as_f64() else { return };
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
        if v < min {
            errs.push(format!("{at}: {v} is below the minimum {min}"));
        }
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
        if v > max {
            errs.push(format!("{at}: {v} is above the maximum {max}"));
        }
    }
}

/// Whether `s` matches one of the spec's patterns that matter here, written independently of
/// the simulator's own validators; `None` for a pattern this checker does not know.
fn matches_pattern(pattern: &str, s: &str) -> Option<bool> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let lower = |c: &char| c.is_ascii_lowercase();
    let chars: Vec<char> = s.chars().collect();
    match pattern {
        r"^[A-Za-z_][A-Za-z0-9_.-]*$" => Some(match chars.split_first() {
            Some((first, rest)) => {
                (first.is_ascii_alphabetic() || *first == '_')
                    && rest.iter().all(|c| word(*c) || matches!(c, '.' | '-'))
            }
            None => false,
        }),
        r"^(?:[a-z]|[a-z][-a-z0-9]{0,30}[a-z0-9])$" => Some(match chars.as_slice() {
            [] => false,
            [only] => lower(only),
            [first, middle @ .., last] => {
                lower(first)
                    && middle.len() <= 30
                    && middle
                        .iter()
                        .all(|c| lower(c) || c.is_ascii_digit() || *c == '-')
                    && (lower(last) || last.is_ascii_digit())
            }
        }),
        r"^[\w-]+(\.[\w-]+)*$" => Some(
            s.split('.')
                .all(|part| !part.is_empty() && part.chars().all(|c| word(c) || c == '-')),
        ),
        _ => None,
    }
}

fn check_pattern(schema: &Value, s: &str, at: &str, errs: &mut Vec<String>) {
    let Some(pattern) = schema.get("pattern").and_then(Value::as_str) else {
        return;
    };
    match matches_pattern(pattern, s) {
        Some(true) => {}
        Some(false) => errs.push(format!("{at}: {s:?} does not match {pattern}")),
        None => errs.push(format!("{at}: the checker does not know pattern {pattern}")),
    }
}

/// Checks the path parameters of `path` (an instance of `template`) against the operation.
pub(crate) fn param_errors(
    checker: &Checker,
    op: &Value,
    template: &str,
    path: &str,
) -> Vec<String> {
    let mut errs = Vec::new();
    let declared = op.get("parameters").and_then(Value::as_array);
    let template_segments: Vec<&str> = template.split('/').collect();
    let path_segments: Vec<&str> = path.split('/').collect();
    if template_segments.len() != path_segments.len() {
        return vec![format!("{path} is not an instance of {template}")];
    }
    for (t, p) in template_segments.iter().zip(&path_segments) {
        let Some(name) = t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) else {
            if t != p {
                errs.push(format!("{path} is not an instance of {template}"));
            }
            continue;
        };
        let schema = declared
            .into_iter()
            .flatten()
            .map(|q| resolve_param(checker.spec, q))
            .find(|q| q["name"] == name && q["in"] == "path")
            .and_then(|q| q.get("schema"));
        let Some(schema) = schema else {
            errs.push(format!("params/{name}: not declared"));
            continue;
        };
        // The value as the server sees it: one segment, percent-decoded.
        let Some(p) = percent_decode(p) else {
            errs.push(format!(
                "params/{name}: {p:?} is not valid percent-encoded UTF-8"
            ));
            continue;
        };
        let value = typed(schema, &p);
        for e in checker.errors(schema, &value) {
            errs.push(format!("params/{name}: {e}"));
        }
    }
    errs
}

/// The problem schema some operation declares for `status`.
pub(crate) fn problem_schema(spec: &Value, status: u16) -> Option<&Value> {
    spec.get("paths")?
        .as_object()?
        .values()
        .filter_map(Value::as_object)
        .flat_map(|item| item.values())
        .find_map(|op| response_schema(op, status))
}

pub(crate) fn operation<'a>(spec: &'a Value, method: &Method, path: &str) -> &'a Value {
    let op = spec
        .get("paths")
        .and_then(|p| p.get(path))
        .and_then(|p| p.get(method.as_str().to_ascii_lowercase()))
        .unwrap_or(&Value::Null);
    assert!(op.is_object(), "{method} {path} is not in the spec");
    op
}

pub(crate) fn response_schema(op: &Value, status: u16) -> Option<&Value> {
    op.pointer(&format!(
        "/responses/{status}/content/application~1json/schema"
    ))
}

/// Decodes `%XX` escapes; `None` for a malformed escape or bytes that are not UTF-8.
pub(crate) fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A path or query parameter's value as JSON: a number where the schema wants one and the text
/// parses, else the text (so the checker reports the type mismatch).
fn typed(schema: &Value, raw: &str) -> Value {
    match schema["type"].as_str() {
        Some("integer") => raw
            .parse::<i64>()
            .map_or_else(|_| Value::from(raw), Value::from),
        Some("number") => raw
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or_else(|| Value::from(raw), Value::Number),
        Some("boolean") => match raw {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::from(raw),
        },
        _ => Value::from(raw),
    }
}

/// The spec's path template and operation that a concrete `path` (relative to the spec's
/// server, still percent-encoded) is an instance of, for `method`. Where several templates
/// fit, the one with the most literal segments wins (as a router would pick it).
pub(crate) fn find_operation<'a>(
    spec: &'a Value,
    method: &Method,
    path: &str,
) -> Option<(&'a str, &'a Value)> {
    let segments: Vec<&str> = path.split('/').collect();
    let method = method.as_str().to_ascii_lowercase();
    spec.get("paths")?
        .as_object()?
        .iter()
        .filter_map(|(template, item)| Some((template.as_str(), item.get(&method)?)))
        .filter_map(|(template, op)| {
            let parts: Vec<&str> = template.split('/').collect();
            if parts.len() != segments.len() {
                return None;
            }
            let mut literals = 0;
            for (t, p) in parts.iter().zip(&segments) {
                if t.starts_with('{') && t.ends_with('}') {
                    if p.is_empty() {
                        return None;
                    }
                } else if t == p {
                    literals += 1;
                } else {
                    return None;
                }
            }
            Some((literals, template, op))
        })
        .max_by_key(|(literals, _, _)| *literals)
        .map(|(_, template, op)| (template, op))
}

/// Checks the query string (`a=1&b=x`, still encoded) against the operation's declared query
/// parameters: no undeclared names, every required one present, every value valid.
pub(crate) fn query_errors(checker: &Checker, op: &Value, query: &str) -> Vec<String> {
    let declared: Vec<&Value> = op
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|q| resolve_param(checker.spec, q))
        .filter(|q| q["in"] == "query")
        .collect();
    let mut errs = Vec::new();
    let mut seen = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (Some(name), Some(value)) = (
            percent_decode(&name.replace('+', " ")),
            percent_decode(&value.replace('+', " ")),
        ) else {
            errs.push(format!(
                "query: {pair:?} is not valid percent-encoded UTF-8"
            ));
            continue;
        };
        let Some(param) = declared.iter().find(|q| q["name"] == name.as_str()) else {
            errs.push(format!("query/{name}: not declared"));
            continue;
        };
        let schema = param.get("schema").unwrap_or(&Value::Null);
        for e in checker.errors(schema, &typed(schema, &value)) {
            errs.push(format!("query/{name}: {e}"));
        }
        seen.push(name);
    }
    for param in declared {
        let name = param["name"].as_str().unwrap_or_default();
        if param["required"] == true && !seen.iter().any(|s| s == name) {
            errs.push(format!("query/{name}: required but missing"));
        }
    }
    errs
}

/// Checks one request as it went over the wire: `path` relative to the spec's server (e.g.
/// `/workspaces/7/git/pull/origin/feature%2Fx`), the raw query string, and the JSON body if
/// any. Returns the template it matched (if one did) and every way the request breaks the spec.
pub(crate) fn request_errors<'a>(
    spec: &'a Value,
    method: &Method,
    path: &str,
    query: Option<&str>,
    body: Option<&Value>,
) -> (Option<&'a str>, Vec<String>) {
    let Some((template, op)) = find_operation(spec, method, path) else {
        return (
            None,
            vec!["no operation in the spec has this method and path".into()],
        );
    };
    let checker = Checker { spec };
    let mut errs = param_errors(&checker, op, template, path);
    errs.extend(query_errors(&checker, op, query.unwrap_or_default()));
    let schema = op.pointer("/requestBody/content/application~1json/schema");
    match (body, schema) {
        (Some(body), Some(schema)) => {
            errs.extend(
                checker
                    .errors(schema, body)
                    .into_iter()
                    .map(|e| format!("body{}", e.trim_start_matches('$'))),
            );
        }
        (Some(body), None) => errs.push(format!("body: the operation takes none, got {body}")),
        (None, _) => {}
    }
    (Some(template), errs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn checker_catches_mismatches() {
        let spec = load_spec();
        let checker = Checker { spec: &spec };
        let op = operation(&spec, &Method::GET, "/workspaces/{workspaceId}");
        let schema = response_schema(op, 200).expect("schema");
        let good = json!({
            "id": 1, "teamId": 1, "name": "n", "planId": 8, "isPrivateRepo": false, "replicas": 1,
            "dataCenterId": 1, "userId": 1, "gitUrl": null, "initialBranch": null,
            "sourceWorkspaceId": null, "welcomeMessage": null, "vpnConfig": null,
            "restricted": false, "collectTraces": false, "persistentLogs": false,
            "createdAt": "2026-01-01T00:00:00.000Z"
        });
        assert_eq!(checker.errors(schema, &good), Vec::<String>::new());

        let mutate = |f: &dyn Fn(&mut Value)| {
            let mut v = good.clone();
            f(&mut v);
            checker.errors(schema, &v)
        };
        assert_eq!(
            mutate(&|v| {
                v.as_object_mut().map(|o| o.remove("gitUrl"));
            })
            .len(),
            1
        );
        assert_eq!(mutate(&|v| v["replicas"] = json!(0)).len(), 1);
        assert_eq!(mutate(&|v| v["replicas"] = json!("1")).len(), 1);
        assert_eq!(mutate(&|v| v["restricted"] = Value::Null).len(), 1);
        assert_eq!(mutate(&|v| v["createdAt"] = json!("yesterday")).len(), 1);
        assert_eq!(
            mutate(&|v| v["branch"] = json!("main")).len(),
            1,
            "undeclared field"
        );
        assert!(
            checker.errors(schema, &json!([good])).len() == 1,
            "array instead of object"
        );

        // $ref, enum and the combinators.
        let problem = json!({ "$ref": "#/components/schemas/_problem" });
        let event =
            json!({ "event": "problem", "data": { "status": 404, "title": "t", "traceId": "x" } });
        assert!(checker.errors(&problem, &event).is_empty());
        let bad_event = json!({ "event": "data", "data": { "status": 999, "title": "t" } });
        assert_eq!(checker.errors(&problem, &bad_event).len(), 3);
        let any = json!({ "anyOf": [{ "type": "string" }, { "type": "integer" }] });
        assert!(checker.errors(&any, &json!(1)).is_empty());
        assert_eq!(checker.errors(&any, &json!(true)).len(), 1);
        let one = json!({ "oneOf": [{ "type": "number" }, { "type": "integer" }] });
        assert_eq!(checker.errors(&one, &json!(1)).len(), 1, "both match");
        assert!(checker.errors(&one, &json!(1.5)).is_empty());
        let all = json!({ "allOf": [
            { "type": "object", "properties": { "a": { "type": "integer" } }, "required": ["a"] },
            { "type": "object", "properties": { "b": { "type": "string" } }, "required": ["b"] }
        ] });
        assert!(checker
            .errors(&all, &json!({ "a": 1, "b": "x" }))
            .is_empty());
        assert_eq!(checker.errors(&all, &json!({ "a": "1" })).len(), 2);

        // Patterns, maximum and path parameters.
        let server = json!({ "type": "string",
            "pattern": "^(?:[a-z]|[a-z][-a-z0-9]{0,30}[a-z0-9])$" });
        for good in ["a", "web", "api-2", "codesphere-ide", &"a".repeat(32)] {
            assert!(checker.errors(&server, &json!(good)).is_empty(), "{good}");
        }
        for bad in ["", "Web", "web-", "2web", "a_b", &"a".repeat(33)] {
            assert_eq!(checker.errors(&server, &json!(bad)).len(), 1, "{bad:?}");
        }
        let profile = json!({ "type": "string", "pattern": "^[\\w-]+(\\.[\\w-]+)*$" });
        assert!(checker.errors(&profile, &json!("ci.staging-2")).is_empty());
        for bad in ["", "a..b", ".a", "a.", "a b", "a/b"] {
            assert_eq!(checker.errors(&profile, &json!(bad)).len(), 1, "{bad:?}");
        }
        let env = json!({ "type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_.-]*$" });
        assert!(checker.errors(&env, &json!("_A.b-1")).is_empty());
        assert_eq!(checker.errors(&env, &json!("1A")).len(), 1);
        let unknown = json!({ "type": "string", "pattern": "^x+$" });
        assert_eq!(
            checker.errors(&unknown, &json!("x")).len(),
            1,
            "unknown pattern"
        );
        let bounded = json!({ "type": "integer", "minimum": 1, "maximum": 100 });
        assert!(checker.errors(&bounded, &json!(100)).is_empty());
        assert_eq!(checker.errors(&bounded, &json!(101)).len(), 1);
        let template = "/workspaces/{workspaceId}/pipeline/{stage}/start/{profile}";
        let op = operation(&spec, &Method::POST, template);
        let errs = |path: &str| param_errors(&checker, op, template, path);
        assert!(errs("/workspaces/1/pipeline/run/start/prod").is_empty());
        assert_eq!(errs("/workspaces/x/pipeline/run/start/prod").len(), 1);
        assert_eq!(errs("/workspaces/1/pipeline/build/start/prod").len(), 1);
        assert_eq!(errs("/workspaces/1/pipeline/run/start/a..b").len(), 1);
        assert_eq!(errs("/workspaces/1/pipeline/run/stop/prod").len(), 1);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("feature%2Fx%20y").as_deref(),
            Some("feature/x y")
        );
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("%C3%A4").as_deref(), Some("ä"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%zz"), None);
        assert_eq!(percent_decode("%FF"), None, "not UTF-8");
    }

    #[test]
    fn requests_are_matched_to_operations() {
        let spec = load_spec();
        let post = Method::POST;
        let pull = |path: &str| request_errors(&spec, &post, path, None, None);
        let (template, errs) = pull("/workspaces/7/git/pull/origin/feature%2Fx");
        assert_eq!(
            template,
            Some("/workspaces/{workspaceId}/git/pull/{remote}/{branch}")
        );
        assert!(errs.is_empty(), "{errs:?}");
        // An unencoded `/` in a branch makes a path the spec does not have.
        let (template, errs) = pull("/workspaces/7/git/pull/origin/feature/x");
        assert_eq!((template, errs.len()), (None, 1));
        // The most specific template wins: `team` is a literal, not a workspace id.
        let (template, errs) =
            request_errors(&spec, &Method::GET, "/workspaces/team/1", None, None);
        assert_eq!(template, Some("/workspaces/team/{teamId}"));
        assert!(errs.is_empty(), "{errs:?}");
        // Path parameters are typed and decoded before they are checked.
        let (_, errs) = request_errors(&spec, &Method::GET, "/workspaces/x", None, None);
        assert_eq!(errs.len(), 1, "{errs:?}");
        let start = "/workspaces/1/pipeline/run/start/a%2Fb";
        assert_eq!(request_errors(&spec, &post, start, None, None).1.len(), 1);

        // Bodies: a misnamed field, a missing required one, a body where none is declared.
        let mut body = json!({ "teamId": 1, "name": "n", "planId": 8, "isPrivateRepo": false,
            "replicas": 1, "gitUrl": "https://example.com/r.git", "initialBranch": "main" });
        let create = |body: &Value| request_errors(&spec, &post, "/workspaces", None, Some(body)).1;
        assert!(create(&body).is_empty(), "{:?}", create(&body));
        let branch = body["initialBranch"].take();
        body.as_object_mut().map(|o| o.remove("initialBranch"));
        body["branch"] = branch;
        assert_eq!(
            create(&body),
            vec!["body.branch: field not declared in the spec"]
        );
        body.as_object_mut().map(|o| o.remove("teamId"));
        assert_eq!(create(&body).len(), 2);
        let head = "/workspaces/1/git/head";
        let (_, errs) = request_errors(&spec, &Method::GET, head, None, Some(&json!({})));
        assert_eq!(errs.len(), 1, "{errs:?}");

        // Query strings: declared, typed and required.
        let services = "/managed-services/providers";
        let query = |q: &str| request_errors(&spec, &Method::GET, services, Some(q), None).1;
        assert!(query("teamId=3").is_empty());
        assert_eq!(query("teamId=x").len(), 1);
        assert_eq!(query("team=3").len(), 1);
    }
}
