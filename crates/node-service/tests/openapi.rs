//! Keeps `docs/openapi.yaml` true.
//!
//! 1. The spec's (method, path template) set equals [`node_service::api::ROUTES`],
//!    and every listed route is routed (never the router's "no route" 404, and its
//!    request metrics carry the same template).
//! 2. Real regtest nodes on 127.0.0.1 (one mining, one anchor, one whose only anchor
//!    is dead) are called on every route with valid and invalid requests; every
//!    answer's status must be listed for that operation and its body must validate
//!    against the listed schema.
//!
//! The validator below covers the subset of OpenAPI 3.0 schemas the spec uses
//! (`$ref`, `type`, `nullable`, `enum`, `properties`, `required`,
//! `additionalProperties`, `items`, `minimum`, `maximum`, `minLength`, `maxItems`,
//! and `pattern` of the form `^[class]{n}...$`) and refuses any other keyword, so
//! the spec cannot quietly outgrow it. It is stricter than OpenAPI in one way, on
//! purpose: an object schema with `properties` and no `additionalProperties` must
//! list every field the server sends, so a field the spec forgot fails too.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::{HeaderMap, Method};
use node_service::AnchorSeed;
use node_service::http::{Handler, Request};
use serde_json::{Value, json};
use vision_chain::{Block, Network, SecretKey, Transaction};
use vision_wire::{HeartbeatPayload, fresh_nonce};

// ---------------------------------------------------------------- the spec

fn load_spec() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.yaml");
    let text = std::fs::read_to_string(path).expect("docs/openapi.yaml is readable");
    serde_yaml_ng::from_str(&text).expect("docs/openapi.yaml is valid YAML")
}

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn spec_routes(spec: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for (k, _) in item.as_object().expect("path item") {
            if METHODS.contains(&k.as_str()) {
                out.insert((k.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

/// Schema validation over the subset the spec uses.
struct Validator<'a> {
    root: &'a Value,
    /// Objects with `properties` and no `additionalProperties` are closed.
    strict: bool,
}

const IGNORED_KEYWORDS: &[&str] = &["description", "format", "default", "example", "title"];

impl Validator<'_> {
    fn resolve<'v>(&'v self, mut v: &'v Value) -> &'v Value {
        for _ in 0..16 {
            let Some(r) = v.get("$ref").and_then(Value::as_str) else {
                return v;
            };
            let ptr = r
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("only local $ref is supported: {r}"));
            v = self
                .root
                .pointer(ptr)
                .unwrap_or_else(|| panic!("dangling $ref {r}"));
        }
        panic!("$ref chain too deep")
    }

    fn validate(&self, schema: &Value, v: &Value, at: &str, errs: &mut Vec<String>) {
        let schema = self.resolve(schema);
        let Some(s) = schema.as_object() else {
            errs.push(format!("{at}: schema is not an object: {schema}"));
            return;
        };
        for k in s.keys() {
            let known = matches!(
                k.as_str(),
                "type"
                    | "nullable"
                    | "enum"
                    | "properties"
                    | "required"
                    | "additionalProperties"
                    | "items"
                    | "minimum"
                    | "maximum"
                    | "minLength"
                    | "maxItems"
                    | "pattern"
            ) || IGNORED_KEYWORDS.contains(&k.as_str());
            assert!(known, "validator does not support keyword {k:?} (at {at})");
        }
        if v.is_null() {
            if s.get("nullable") != Some(&Value::Bool(true)) {
                errs.push(format!("{at}: null but the schema is not nullable"));
            }
            return;
        }
        if let Some(t) = s.get("type").and_then(Value::as_str) {
            let ok = match t {
                "object" => v.is_object(),
                "array" => v.is_array(),
                "string" => v.is_string(),
                "boolean" => v.is_boolean(),
                "integer" => v.is_u64() || v.is_i64(),
                "number" => v.is_number(),
                other => panic!("unknown type {other:?}"),
            };
            if !ok {
                errs.push(format!("{at}: expected {t}, got {v}"));
                return;
            }
        }
        if let Some(e) = s.get("enum").and_then(Value::as_array)
            && !e.contains(v)
        {
            errs.push(format!("{at}: {v} is not one of {e:?}"));
        }
        if let Some(n) = v.as_f64() {
            if let Some(min) = s.get("minimum").and_then(Value::as_f64)
                && n < min
            {
                errs.push(format!("{at}: {v} < minimum {min}"));
            }
            if let Some(max) = s.get("maximum").and_then(Value::as_f64)
                && n > max
            {
                errs.push(format!("{at}: {v} > maximum {max}"));
            }
        }
        if let Some(text) = v.as_str() {
            if let Some(min) = s.get("minLength").and_then(Value::as_u64)
                && (text.chars().count() as u64) < min
            {
                errs.push(format!("{at}: {text:?} shorter than {min}"));
            }
            if let Some(p) = s.get("pattern").and_then(Value::as_str)
                && !pattern_matches(p, text)
            {
                errs.push(format!("{at}: {text:?} does not match {p}"));
            }
        }
        if let Some(items) = v.as_array() {
            if let Some(max) = s.get("maxItems").and_then(Value::as_u64)
                && items.len() as u64 > max
            {
                errs.push(format!("{at}: {} items > maxItems {max}", items.len()));
            }
            if let Some(item_schema) = s.get("items") {
                for (i, item) in items.iter().enumerate() {
                    self.validate(item_schema, item, &format!("{at}[{i}]"), errs);
                }
            }
        }
        if let Some(obj) = v.as_object() {
            let props = s.get("properties").and_then(Value::as_object);
            for r in s
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let r = r.as_str().expect("required names are strings");
                if !obj.contains_key(r) {
                    errs.push(format!("{at}: required field {r:?} is missing"));
                }
            }
            for (k, fv) in obj {
                let here = format!("{at}.{k}");
                if let Some(ps) = props.and_then(|p| p.get(k)) {
                    self.validate(ps, fv, &here, errs);
                    continue;
                }
                match s.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        errs.push(format!("{here}: not allowed (additionalProperties: false)"))
                    }
                    Some(Value::Bool(true)) => {}
                    Some(extra) => self.validate(extra, fv, &here, errs),
                    None if self.strict && props.is_some() => {
                        errs.push(format!("{here}: field not described in the spec"))
                    }
                    None => {}
                }
            }
        }
    }
}

/// One pattern atom: a character class (inclusive ranges) and how often it repeats.
type Atom = (Vec<(char, char)>, usize, usize);

/// `^` (`[class]` quantifier?)* `$`, quantifier one of `{n}`, `*`, `+`.
fn pattern_matches(pattern: &str, text: &str) -> bool {
    let body = pattern
        .strip_prefix('^')
        .and_then(|p| p.strip_suffix('$'))
        .unwrap_or_else(|| panic!("pattern {pattern:?} must be anchored with ^...$"));
    let mut atoms: Vec<Atom> = Vec::new();
    let mut cs = body.chars().peekable();
    while let Some(c) = cs.next() {
        assert_eq!(c, '[', "unsupported pattern syntax in {pattern:?}");
        let mut ranges = Vec::new();
        loop {
            let a = cs.next().expect("unterminated class");
            if a == ']' {
                break;
            }
            if cs.peek() == Some(&'-') {
                cs.next();
                let b = cs.next().expect("unterminated range");
                ranges.push((a, b));
            } else {
                ranges.push((a, a));
            }
        }
        let (min, max) = match cs.peek() {
            Some('*') => (0, usize::MAX),
            Some('+') => (1, usize::MAX),
            Some('{') => {
                cs.next();
                let n: String = cs.by_ref().take_while(|c| *c != '}').collect();
                let n: usize = n.parse().expect("only {n} quantifiers are supported");
                atoms.push((ranges, n, n));
                continue;
            }
            _ => {
                atoms.push((ranges, 1, 1));
                continue;
            }
        };
        cs.next();
        atoms.push((ranges, min, max));
    }
    fn go(atoms: &[Atom], text: &[char]) -> bool {
        let Some(((ranges, min, max), rest)) = atoms.split_first() else {
            return text.is_empty();
        };
        let fits = |c: &char| ranges.iter().any(|(a, b)| a <= c && c <= b);
        let run = text.iter().take_while(|c| fits(c)).count().min(*max);
        (*min..=run).rev().any(|n| go(rest, &text[n..]))
    }
    let text: Vec<char> = text.chars().collect();
    go(&atoms, &text)
}

/// One answer, checked against the operation `method template` of the spec.
fn check_answer(spec: &Value, method: &str, template: &str, a: &Answer) -> Result<(), String> {
    let v = Validator {
        root: spec,
        strict: true,
    };
    let op = &spec["paths"][template][method.to_ascii_lowercase()];
    if op.is_null() {
        return Err(format!("{method} {template} is not in the spec"));
    }
    let status = a.status.to_string();
    let Some(resp) = op["responses"].get(&status) else {
        return Err(format!(
            "{method} {template} answered {status}, which the spec does not list ({})",
            String::from_utf8_lossy(&a.body)
        ));
    };
    check_response(&v, v.resolve(resp), a).map_err(|e| format!("{method} {template} {status}: {e}"))
}

fn check_response(v: &Validator<'_>, resp: &Value, a: &Answer) -> Result<(), String> {
    let Some(content) = resp.get("content").and_then(Value::as_object) else {
        return if a.body.is_empty() {
            Ok(())
        } else {
            Err("the spec lists no content but the body is not empty".into())
        };
    };
    let ct = a.content_type.split(';').next().unwrap_or("").trim();
    let Some(media) = content.get(ct) else {
        return Err(format!(
            "content type {ct:?} not listed (spec: {:?})",
            content.keys().collect::<Vec<_>>()
        ));
    };
    let schema = &media["schema"];
    if ct == "application/json" {
        let body: Value = serde_json::from_slice(&a.body).map_err(|e| {
            format!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&a.body)
            )
        })?;
        let mut errs = Vec::new();
        v.validate(schema, &body, "$", &mut errs);
        if errs.is_empty() {
            Ok(())
        } else {
            let body = body.to_string();
            let cut = body.char_indices().nth(400).map_or(body.len(), |(i, _)| i);
            Err(format!("{}\nbody: {}", errs.join("\n"), &body[..cut]))
        }
    } else if schema.get("format").and_then(Value::as_str) == Some("binary") {
        Ok(())
    } else {
        std::str::from_utf8(&a.body)
            .map(|_| ())
            .map_err(|_| "text body is not UTF-8".into())
    }
}

// ---------------------------------------------------------------- nodes and HTTP

mod common;
use common::{Answer, header, raw, start_node, wait_for};

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hello(key: &SecretKey, network: &str, ts: u64) -> Vec<u8> {
    serde_json::to_vec(&common::signed_hello(key, network, ts)).unwrap()
}

fn heartbeat(key: &SecretKey, network: &str) -> Vec<u8> {
    let h = HeartbeatPayload {
        network: network.into(),
        node_id: key.address().to_hex(),
        timestamp_unix: now_unix(),
        nonce: fresh_nonce(),
        protocol_version: vision_wire::PROTOCOL_VERSION,
        protocol_min: vision_wire::PROTOCOL_VERSION_MIN,
        unknown: Default::default(),
        http_address: "127.0.0.1:1".into(),
        p2p_address: Some("127.0.0.1:2".into()),
        is_anchor: false,
        height: 0,
        tip_hash: "00".repeat(32),
    }
    .sign(key);
    serde_json::to_vec(&h).unwrap()
}

/// Calls on one node, each checked against the spec as it is made.
struct Session<'a> {
    spec: &'a Value,
    addr: SocketAddr,
    called: &'a mut BTreeMap<(String, String), usize>,
    failures: &'a mut Vec<String>,
}

impl Session<'_> {
    /// Call `method path` (an instance of `template`), check the answer against the
    /// spec, and, when `expect` is given, that this is the status it answered.
    async fn call(
        &mut self,
        method: &str,
        template: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        expect: Option<u16>,
    ) -> Answer {
        let a = raw(self.addr, method, path, headers, body).await;
        *self
            .called
            .entry((method.to_string(), template.to_string()))
            .or_default() += 1;
        if let Err(e) = check_answer(self.spec, method, template, &a) {
            self.failures.push(e);
        }
        if let Some(want) = expect
            && a.status != want
        {
            self.failures.push(format!(
                "{method} {path}: expected {want}, got {} {}",
                a.status,
                String::from_utf8_lossy(&a.body)
            ));
        }
        if a.status == 404 && String::from_utf8_lossy(&a.body).contains("no route") {
            self.failures
                .push(format!("{method} {path} ({template}) is not routed"));
        }
        a
    }

    async fn get(&mut self, template: &str, path: &str, expect: u16) -> Answer {
        self.call("GET", template, path, &[], b"", Some(expect))
            .await
    }

    async fn post(&mut self, template: &str, body: &[u8], expect: Option<u16>) -> Answer {
        let ct = [("Content-Type", "application/json")];
        self.call("POST", template, template, &ct, body, expect)
            .await
    }
}

fn json_of(a: &Answer) -> Value {
    serde_json::from_slice(&a.body).unwrap_or(Value::Null)
}

// ---------------------------------------------------------------- the tests

#[test]
fn spec_routes_equal_the_router() {
    let spec = load_spec();
    assert_eq!(spec["openapi"], "3.0.3");
    let ours: BTreeSet<(String, String)> = node_service::api::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(
        ours.len(),
        node_service::api::ROUTES.len(),
        "ROUTES has duplicates"
    );
    let theirs = spec_routes(&spec);
    let missing: Vec<_> = ours.difference(&theirs).collect();
    let extra: Vec<_> = theirs.difference(&ours).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "docs/openapi.yaml and api::ROUTES differ: not in the spec {missing:?}, not routed {extra:?}"
    );
}

#[test]
fn every_ref_resolves_and_every_operation_lists_a_success() {
    let spec = load_spec();
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|x| refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&spec, &mut all);
    for r in all {
        let ptr = r.strip_prefix('#').expect("local ref");
        assert!(spec.pointer(ptr).is_some(), "dangling $ref {r}");
    }
    for (m, p) in spec_routes(&spec) {
        let op = &spec["paths"][&p][m.to_ascii_lowercase()];
        let responses = op["responses"].as_object().unwrap();
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{m} {p} lists no success"
        );
    }
}

#[test]
fn the_validator_can_fail() {
    let spec = load_spec();
    let v = Validator {
        root: &spec,
        strict: true,
    };
    let status = json!({"$ref": "#/components/schemas/SyncStatus"});
    let good = json!({"network_tip": 3, "tip_source": "local", "lag": 0, "syncing": false,
        "progress": 1.0, "blocks_per_s": 0.0, "eta_s": 0});
    let check = |body: &Value| {
        let mut errs = Vec::new();
        v.validate(&status, body, "$", &mut errs);
        errs
    };
    assert_eq!(check(&good), Vec::<String>::new());
    let mut renamed = good.clone();
    let lag = renamed.as_object_mut().unwrap().remove("lag").unwrap();
    renamed["lag_blocks"] = lag;
    let errs = check(&renamed);
    assert!(
        errs.iter().any(|e| e.contains("\"lag\" is missing")),
        "{errs:?}"
    );
    assert!(errs.iter().any(|e| e.contains("lag_blocks")), "{errs:?}");
    assert!(
        !check(&json!({"network_tip": -1, "tip_source": "local", "lag": 0, "syncing": false, "progress": 1.0, "blocks_per_s": 0.0, "eta_s": 0}))
            .is_empty()
    );
    assert!(
        !check(&json!({"network_tip": 1.5, "tip_source": "local", "lag": 0, "syncing": false, "progress": 1.0, "blocks_per_s": 0.0, "eta_s": 0}))
            .is_empty()
    );
    assert!(
        !check(&json!({"network_tip": 1, "tip_source": "moon", "lag": 0, "syncing": false, "progress": 1.0, "blocks_per_s": 0.0, "eta_s": 0}))
            .is_empty()
    );
    assert!(
        !check(&json!({"network_tip": 1, "tip_source": null, "lag": 0, "syncing": false, "progress": 1.0, "blocks_per_s": 0.0, "eta_s": 0}))
            .is_empty()
    );

    // A schema that forgets a field the server sends fails in strict mode.
    let mut thin = spec.clone();
    let s = thin.pointer_mut("/components/schemas/SyncStatus").unwrap();
    s["properties"].as_object_mut().unwrap().remove("syncing");
    s["required"] = json!(["network_tip", "tip_source", "lag"]);
    let v2 = Validator {
        root: &thin,
        strict: true,
    };
    let mut errs = Vec::new();
    v2.validate(&status, &good, "$", &mut errs);
    assert!(errs.iter().any(|e| e.contains("syncing")), "{errs:?}");

    assert!(pattern_matches("^[0-9a-f]{64}$", &"ab".repeat(32)));
    assert!(!pattern_matches("^[0-9a-f]{64}$", &"AB".repeat(32)));
    assert!(!pattern_matches("^[0-9a-f]{64}$", &"ab".repeat(31)));
    assert!(pattern_matches("^[a-z][a-z0-9_]*$", "not_found"));
    assert!(!pattern_matches("^[a-z][a-z0-9_]*$", "Not found"));
    assert!(!pattern_matches("^[a-z][a-z0-9_]*$", ""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_answers_conform_to_the_spec() {
    let spec = load_spec();
    let mut called = BTreeMap::new();
    let mut failures = Vec::new();

    let miner = start_node(|c| {
        c.mine = true;
        c.threads = 1;
    })
    .await;
    let anchor = start_node(|c| c.is_anchor = true).await;
    let orphaned = start_node(|c| {
        // Port 1 on loopback refuses at once: a node whose only anchor is dead.
        c.anchor_seeds = vec![AnchorSeed::parse("http://127.0.0.1:1").expect("a valid seed")];
    })
    .await;

    wait_for("a few mined blocks", Duration::from_secs(60), async || {
        miner.shared.core.chain().height >= 3
    })
    .await;
    let key =
        SecretKey::from_hex(&std::fs::read_to_string(miner.dir.path().join("node.key")).unwrap())
            .unwrap();
    let me = key.address().to_hex();

    let mut s = Session {
        spec: &spec,
        addr: miner.addr,
        called: &mut called,
        failures: &mut failures,
    };

    // Read routes.
    s.get("/", "/", 200).await;
    s.get("/api/status", "/api/status", 200).await;
    s.get("/api/status", "/api/status/", 200).await;
    s.get("/api/health", "/api/health", 200).await;
    s.get("/healthz", "/healthz", 200).await;
    s.get("/readyz", "/readyz", 200).await;
    s.get("/metrics", "/metrics", 200).await;
    s.get("/api/exchange/ready", "/api/exchange/ready", 200)
        .await;
    s.get("/api/peers", "/api/peers", 200).await;
    s.get("/api/mempool", "/api/mempool", 200).await;
    s.get("/api/p2p/seed_peers", "/api/p2p/seed_peers", 200)
        .await;
    s.get(
        "/api/p2p/seed_peers",
        "/api/p2p/seed_peers?limit=100000",
        200,
    )
    .await;
    s.get("/api/p2p/seed_peers", "/api/p2p/seed_peers?limit=x", 400)
        .await;

    // Headers and blocks, JSON and binary.
    let octet = [("Accept", "application/octet-stream")];
    s.get("/api/headers", "/api/headers", 200).await;
    s.get("/api/headers", "/api/headers?from=1&limit=2", 200)
        .await;
    s.get("/api/headers", "/api/headers?from=99999999&limit=2", 200)
        .await;
    s.get("/api/headers", "/api/headers?from=-1", 400).await;
    s.get(
        "/api/headers",
        "/api/headers?limit=18446744073709551616",
        400,
    )
    .await;
    s.call(
        "GET",
        "/api/headers",
        "/api/headers?limit=2",
        &octet,
        b"",
        Some(200),
    )
    .await;
    s.get("/api/blocks", "/api/blocks?from=0&limit=3", 200)
        .await;
    s.get("/api/blocks", "/api/blocks?limit=abc", 400).await;
    let bin = s
        .call(
            "GET",
            "/api/blocks",
            "/api/blocks?from=1&limit=2",
            &octet,
            b"",
            Some(200),
        )
        .await;
    let blocks = vision_wire::binary::decode_blocks(&bin.body, 2).unwrap();
    s.get("/api/blocks/{height}", "/api/blocks/0", 200).await;
    s.get("/api/blocks/{height}", "/api/blocks/1", 200).await;
    s.call(
        "GET",
        "/api/blocks/{height}",
        "/api/blocks/1",
        &octet,
        b"",
        Some(200),
    )
    .await;
    s.get("/api/blocks/{height}", "/api/blocks/99999999", 404)
        .await;
    s.get("/api/blocks/{height}", "/api/blocks/one", 400).await;
    let h1 = blocks[0].hash().to_hex();
    s.get("/api/block/{hash}", &format!("/api/block/{h1}"), 200)
        .await;
    s.get(
        "/api/block/{hash}",
        &format!("/api/block/{}", h1.to_uppercase()),
        200,
    )
    .await;
    s.call(
        "GET",
        "/api/block/{hash}",
        &format!("/api/block/{h1}"),
        &octet,
        b"",
        Some(200),
    )
    .await;
    s.get(
        "/api/block/{hash}",
        &format!("/api/block/{}", "ab".repeat(32)),
        404,
    )
    .await;
    s.get("/api/block/{hash}", "/api/block/12", 400).await;
    s.get(
        "/api/accounts/{address}",
        &format!("/api/accounts/{me}"),
        200,
    )
    .await;
    s.get(
        "/api/accounts/{address}",
        &format!("/api/accounts/{}", "0".repeat(64)),
        200,
    )
    .await;
    s.get("/api/accounts/{address}", "/api/accounts/me", 400)
        .await;

    // Push routes: bad input is a 400 with the error shape (the stream itself is
    // tested in tests/events.rs), the long poll answers at once when `known` is not
    // the tip.
    s.get("/api/events", "/api/events?types=block_connected,nope", 400)
        .await;
    s.get("/api/events", "/api/events?types=", 400).await;
    s.get("/api/events", "/api/events?last_event_id=12x", 400)
        .await;
    s.call(
        "GET",
        "/api/events",
        "/api/events",
        &[("Last-Event-ID", "-1")],
        b"",
        Some(400),
    )
    .await;
    s.get("/api/events", "/api/events?address=me", 400).await;
    s.get("/api/tip", "/api/tip", 200).await;
    s.get(
        "/api/tip",
        &format!("/api/tip?known={}&wait_ms=1", "ab".repeat(32)),
        200,
    )
    .await;
    s.get(
        "/api/tip",
        &format!("/api/tip?known={h1}&wait_ms=60001"),
        400,
    )
    .await;
    s.get("/api/tip", "/api/tip?known=12", 400).await;
    s.get("/api/tip", "/api/tip?wait_ms=soon", 400).await;

    // Submitting blocks: known (binary and JSON), garbage, orphan, invalid.
    let bin_ct = [("Content-Type", "application/octet-stream")];
    s.call(
        "POST",
        "/api/blocks",
        "/api/blocks",
        &bin_ct,
        &blocks[0].encode(),
        Some(200),
    )
    .await;
    let json_block = serde_json::to_vec(&blocks[1]).unwrap();
    s.post("/api/blocks", &json_block, Some(200)).await;
    s.call(
        "POST",
        "/api/blocks",
        "/api/blocks",
        &bin_ct,
        b"\x00garbage",
        Some(400),
    )
    .await;
    s.post("/api/blocks", b"{\"header\": 1}", Some(400)).await;
    let mut orphan: Block = blocks[1].clone();
    orphan.header.prev_hash = vision_chain::Hash32::digest(b"nobody's parent");
    s.call(
        "POST",
        "/api/blocks",
        "/api/blocks",
        &bin_ct,
        &orphan.encode(),
        None,
    )
    .await;
    let mut invalid: Block = blocks[1].clone();
    invalid.header.timestamp_ms += 1;
    invalid.header.nonce = invalid.header.nonce.wrapping_add(1);
    invalid.header.target = vision_chain::U256::from_u128(1);
    s.call(
        "POST",
        "/api/blocks",
        "/api/blocks",
        &bin_ct,
        &invalid.encode(),
        None,
    )
    .await;

    // Transactions. The chain holds still for them: a block mined between the
    // submission and the replacement check would consume the nonce and turn that
    // check's 409 into a 422.
    miner.shared.miner.stop();
    wait_for("the miner stopped", Duration::from_secs(30), async || {
        miner.shared.miner.state() == miner_core::MinerState::StoppedByUser
    })
    .await;
    let acct = json_of(
        &s.get(
            "/api/accounts/{address}",
            &format!("/api/accounts/{me}"),
            200,
        )
        .await,
    );
    let to = SecretKey::from_seed(&[7; 32]).address();
    let tx = Transaction::new_signed(
        &key,
        Network::Regtest,
        to,
        1_000,
        10,
        acct["nonce"].as_u64().unwrap(),
    );
    let tx_json = serde_json::to_vec(&tx).unwrap();
    s.post("/api/tx", &tx_json, Some(202)).await;
    s.post("/api/tx", &tx_json, Some(200)).await;
    s.get("/api/mempool", "/api/mempool", 200).await;
    let mut forged = tx.clone();
    forged.amount += 1;
    // At a pooled nonce without the replacement step: 409 (before the signature).
    s.post("/api/tx", &serde_json::to_vec(&forged).unwrap(), Some(409))
        .await;
    forged.nonce += 1;
    s.post("/api/tx", &serde_json::to_vec(&forged).unwrap(), Some(422))
        .await;
    // Exchange routes (after the replacement checks, which race the miner): the
    // transaction (pending or already confirmed), history pages, fees, bad input.
    let txid = tx.id().to_hex();
    s.get("/api/tx/{txid}", &format!("/api/tx/{txid}"), 200)
        .await;
    s.get(
        "/api/tx/{txid}",
        &format!("/api/tx/{}", "cd".repeat(32)),
        404,
    )
    .await;
    s.get("/api/tx/{txid}", "/api/tx/xyz", 400).await;
    let page = json_of(
        &s.get(
            "/api/accounts/{address}/txs",
            &format!("/api/accounts/{me}/txs?limit=1"),
            200,
        )
        .await,
    );
    let cursor = page["next_cursor"].as_str().expect("more than one entry");
    s.get(
        "/api/accounts/{address}/txs",
        &format!("/api/accounts/{me}/txs?limit=2&cursor={cursor}"),
        200,
    )
    .await;
    s.get(
        "/api/accounts/{address}/txs",
        &format!("/api/accounts/{me}/txs"),
        200,
    )
    .await;
    s.get(
        "/api/accounts/{address}/txs",
        &format!("/api/accounts/{me}/txs?cursor=yesterday"),
        400,
    )
    .await;
    s.get(
        "/api/accounts/{address}/txs",
        "/api/accounts/nobody/txs",
        400,
    )
    .await;
    s.get("/api/fees", "/api/fees", 200).await;
    s.post("/api/tx", b"{\"from\": \"ab", Some(400)).await;
    s.post("/api/tx", b"", Some(400)).await;
    s.post("/api/tx", b"\xff\xfe", Some(400)).await;
    let mut extra: Value = serde_json::from_slice(&tx_json).unwrap();
    extra["memo"] = json!("hi");
    s.post("/api/tx", &serde_json::to_vec(&extra).unwrap(), Some(400))
        .await;
    s.post("/api/tx", &vec![b' '; 3 * 1024 * 1024], Some(413))
        .await;

    // Signed hello.
    let peer = SecretKey::from_seed(&[42; 32]);
    let h = hello(&peer, "regtest", now_unix());
    s.post("/api/hello", &h, Some(200)).await;
    s.post("/api/hello", &h, Some(409)).await;
    s.post(
        "/api/hello",
        &hello(&peer, "mainnet", now_unix()),
        Some(409),
    )
    .await;
    s.post(
        "/api/hello",
        &hello(&peer, "regtest", now_unix() - 600),
        Some(401),
    )
    .await;
    s.post("/api/hello", b"{}", Some(400)).await;

    // Heartbeat to a node that is not an anchor.
    let a = s
        .post("/api/heartbeat", &heartbeat(&peer, "regtest"), Some(409))
        .await;
    if json_of(&a)["error"] != "not_an_anchor" {
        s.failures.push(format!("heartbeat on a non-anchor: {a:?}"));
    }

    // Admin (loopback needs no token).
    s.post("/api/miner/start", b"{\"threads\": 0}", Some(400))
        .await;
    s.post("/api/miner/start", b"{\"threads\": 1, \"x\": 1}", Some(400))
        .await;
    s.post("/api/miner/start", b"{\"threads\": null}", Some(202))
        .await;
    s.post("/api/miner/start", b"", Some(202)).await;
    s.post("/api/miner/start", b"{\"threads\": 1}", Some(202))
        .await;
    s.post("/api/miner/stop", b"", Some(202)).await;

    // Unknown routes and wrong methods answer the shared error responses.
    let v = Validator {
        root: &spec,
        strict: true,
    };
    for p in ["/nope", "/api", "/api/blocks/1/2", "//api/status"] {
        let a = raw(s.addr, "GET", p, &[], b"").await;
        let r = v.resolve(&spec["components"]["responses"]["NotFound"]);
        if a.status != 404 {
            s.failures
                .push(format!("GET {p}: expected 404, got {}", a.status));
        }
        if let Err(e) = check_response(&v, r, &a) {
            s.failures.push(format!("GET {p}: {e}"));
        }
    }
    for (_, template) in node_service::api::ROUTES {
        // No route accepts DELETE.
        let wrong = "DELETE";
        let path = template
            .replace("{height}", "0")
            .replace("{hash}", &h1)
            .replace("{address}", &me);
        let a = raw(s.addr, wrong, &path, &[], b"").await;
        let r = v.resolve(&spec["components"]["responses"]["MethodNotAllowed"]);
        if a.status != 405 || header(&a.head, "allow").is_none() {
            s.failures.push(format!(
                "{wrong} {path}: expected 405 with Allow, got {}",
                a.status
            ));
        }
        if let Err(e) = check_response(&v, r, &a) {
            s.failures.push(format!("{wrong} {path}: {e}"));
        }
    }

    // The anchor: heartbeats and seed peers.
    let mut s = Session {
        spec: &spec,
        addr: anchor.addr,
        called: &mut called,
        failures: &mut failures,
    };
    s.post("/api/heartbeat", &heartbeat(&peer, "regtest"), None)
        .await;
    s.post("/api/heartbeat", &heartbeat(&peer, "mainnet"), None)
        .await;
    s.post("/api/heartbeat", b"{\"payload\": 1}", None).await;
    // A members digest from a key that is not one of the anchor's anchors: 403.
    let digest = vision_wire::MembersDigestPayload {
        network: "regtest".into(),
        node_id: peer.address().to_hex(),
        timestamp_unix: now_unix(),
        nonce: fresh_nonce(),
        digests: Vec::new(),
    }
    .sign(&peer);
    s.post(
        "/api/members/digest",
        &serde_json::to_vec(&digest).unwrap(),
        Some(403),
    )
    .await;
    s.post("/api/members/digest", b"{\"payload\": 1}", Some(400))
        .await;
    s.get("/api/p2p/seed_peers", "/api/p2p/seed_peers?limit=10", 200)
        .await;
    s.get("/api/status", "/api/status", 200).await;

    // A node whose only anchor is dead is not ready.
    let mut s = Session {
        spec: &spec,
        addr: orphaned.addr,
        called: &mut called,
        failures: &mut failures,
    };
    s.get("/readyz", "/readyz", 503).await;
    s.get("/api/exchange/ready", "/api/exchange/ready", 503)
        .await;
    s.get("/api/status", "/api/status", 200).await;
    // no backbone: down, and the HTTP status says so
    s.get("/api/health", "/api/health", 503).await;

    // Admin from elsewhere without the token: 401 (through the handler, as a
    // non-loopback peer cannot be made on 127.0.0.1).
    for path in ["/api/miner/start", "/api/miner/stop"] {
        let api = node_service::api::Api(miner.shared.clone());
        let resp = api
            .handle(Request {
                method: Method::POST,
                uri: path.parse().unwrap(),
                headers: HeaderMap::new(),
                body: Bytes::new(),
                peer: "10.1.2.3:4444".parse().unwrap(),
            })
            .await;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        let a = Answer {
            status,
            content_type,
            head: String::new(),
            body,
        };
        *called.entry(("POST".into(), path.into())).or_default() += 1;
        if status != 401 {
            failures.push(format!("non-loopback POST {path} without token: {status}"));
        }
        if let Err(e) = check_answer(&spec, "POST", path, &a) {
            failures.push(e);
        }
    }

    // Every route was exercised, and the router labels it with the same template.
    let metrics =
        String::from_utf8(raw(miner.addr, "GET", "/metrics", &[], b"").await.body).unwrap();
    for (m, p) in node_service::api::ROUTES {
        if !called.contains_key(&(m.to_string(), p.to_string())) {
            failures.push(format!("{m} {p} was never called by this test"));
        }
        if !metrics.contains(&format!("route=\"{p}\"")) {
            failures.push(format!("{m} {p}: no request metric with route=\"{p}\""));
        }
    }
    assert!(
        failures.is_empty(),
        "{} disagreement(s) with docs/openapi.yaml:\n{}",
        failures.len(),
        failures.join("\n---\n")
    );
}
