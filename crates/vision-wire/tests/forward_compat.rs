//! Frozen "next version" signed messages (`tests/fixtures/*-v3.json`): a hello call,
//! its answer and a heartbeat as a node of protocol version 3 would send them —
//! `protocol_version: 3`, `protocol_min: 2`, and fields this release does not know
//! (arrays, nested objects, a double, a negative integer, `null`, an escaped string),
//! members in another order than this release writes them. They were signed once, by
//! the keys of seeds `[0x31; 32]` (caller) and `[0x32; 32]` (anchor), and are never
//! regenerated: this release must keep reading them, with the signature covering every
//! field. `*.signing-bytes.hex` freezes the canonical bytes the signatures cover.

use serde_json::Value;
use vision_chain::SecretKey;
use vision_wire::{
    HelloAnswers, PROTOCOL_VERSION, ProtocolRange, ReplayGuard, SignedError, SignedHeartbeat,
    SignedHello,
};

const CALL: &str = include_str!("fixtures/hello-call-v3.json");
const CALL_BYTES: &str = include_str!("fixtures/hello-call-v3.signing-bytes.hex");
const ANSWER: &str = include_str!("fixtures/hello-answer-v3.json");
const ANSWER_BYTES: &str = include_str!("fixtures/hello-answer-v3.signing-bytes.hex");
const HEARTBEAT: &str = include_str!("fixtures/heartbeat-v3.json");
const HEARTBEAT_BYTES: &str = include_str!("fixtures/heartbeat-v3.signing-bytes.hex");

// The fixtures stand for a version newer than this release; when this release reaches
// version 3, freeze a version-4 set beside them.
const _: () = assert!(
    PROTOCOL_VERSION < 3,
    "the fixtures must be from a newer version"
);

/// The fixtures' timestamps (their "now").
const CALL_TS: u64 = 1_800_000_000;
const ANSWER_TS: u64 = 1_800_000_001;
const HEARTBEAT_TS: u64 = 1_800_000_005;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn caller() -> SecretKey {
    SecretKey::from_seed(&[0x31; 32])
}

fn anchor() -> SecretKey {
    SecretKey::from_seed(&[0x32; 32])
}

/// Parse a fixture after `edit` changed its JSON (the signature left as it is).
fn edited<T: serde::de::DeserializeOwned>(text: &str, edit: impl FnOnce(&mut Value)) -> T {
    let mut v: Value = serde_json::from_str(text).unwrap();
    edit(&mut v);
    serde_json::from_value(v).unwrap()
}

#[test]
fn the_next_version_fixtures_verify_with_every_field_signed() {
    let call: SignedHello = serde_json::from_str(CALL).unwrap();
    assert_eq!(hex(&call.payload.signing_bytes()), CALL_BYTES.trim());
    assert_eq!(call.payload.protocol_version, 3);
    assert_eq!(call.payload.protocol_min, 2);
    let unknown: Vec<&str> = call.payload.unknown.0.keys().map(String::as_str).collect();
    assert_eq!(unknown, ["epoch_offset", "features", "relay", "sealed"]);
    // A caller's hello of the next version: verified, its challenge bound.
    let (who, exchange) = call.verify_call("regtest", CALL_TS).unwrap();
    assert_eq!(who, caller().address());
    assert_eq!(exchange.challenge, "00112233445566778899aabbccddeeff");

    // The next version's answer names that exchange (with a field of its own inside
    // `answers`) and verifies against it; against another exchange it is unbound.
    let answer: SignedHello = serde_json::from_str(ANSWER).unwrap();
    assert_eq!(hex(&answer.payload.signing_bytes()), ANSWER_BYTES.trim());
    assert_eq!(
        answer.verify_answer("regtest", ANSWER_TS, &exchange),
        Ok(anchor().address())
    );
    let other = HelloAnswers::new("ffffffffffffffffffffffffffffffff".into(), who.to_hex());
    assert_eq!(
        answer.verify_answer("regtest", ANSWER_TS, &other),
        Err(SignedError::Unbound)
    );

    let hb: SignedHeartbeat = serde_json::from_str(HEARTBEAT).unwrap();
    assert_eq!(hex(&hb.payload.signing_bytes()), HEARTBEAT_BYTES.trim());
    assert_eq!(hb.verify("regtest", HEARTBEAT_TS), Ok(caller().address()));
    assert_eq!(hb.payload.unknown.len(), 2);

    // The usual checks still hold for a newer message: network and freshness.
    assert!(matches!(
        call.verify("mainnet", CALL_TS),
        Err(SignedError::WrongNetwork { .. })
    ));
    assert!(matches!(
        hb.verify("regtest", HEARTBEAT_TS + 121),
        Err(SignedError::Stale { .. })
    ));
}

#[test]
fn a_relayed_fixture_keeps_every_field_and_still_verifies() {
    // What this release writes back out (a relay, a log) carries every field of the
    // newer version, so its signature still verifies downstream.
    let call: SignedHello = serde_json::from_str(CALL).unwrap();
    let again: SignedHello = serde_json::from_slice(&serde_json::to_vec(&call).unwrap()).unwrap();
    assert_eq!(again, call);
    assert!(again.verify_call("regtest", CALL_TS).is_ok());
    let out: Value = serde_json::to_value(&call).unwrap();
    assert_eq!(out["payload"]["relay"]["region"], "eu-west");
    assert_eq!(out["payload"]["epoch_offset"], -3);
    let hb: SignedHeartbeat = serde_json::from_str(HEARTBEAT).unwrap();
    let again: SignedHeartbeat =
        serde_json::from_value(serde_json::to_value(&hb).unwrap()).unwrap();
    assert!(again.verify("regtest", HEARTBEAT_TS).is_ok());
}

#[test]
fn every_unknown_field_is_under_the_signature() {
    let bad = |h: SignedHello| {
        assert!(
            matches!(
                h.verify("regtest", CALL_TS),
                Err(SignedError::BadSignature(_))
            ),
            "tampering went unnoticed: {:?}",
            h.payload.unknown
        );
    };
    // Changed, deep inside a nested unknown object.
    bad(edited(CALL, |v| {
        v["payload"]["relay"]["max_peers"] = 65.into()
    }));
    // A double changed in its last bit.
    bad(edited(CALL, |v| {
        v["payload"]["relay"]["fee_floor"] = 1.500_000_000_000_000_2.into()
    }));
    // An integer written as a double is another value.
    bad(edited(CALL, |v| {
        v["payload"]["relay"]["max_peers"] = 64.0.into()
    }));
    // Array order.
    bad(edited(CALL, |v| {
        v["payload"]["features"] = serde_json::json!(["headers_first", "compact_blocks"])
    }));
    // Removed, added, and a known field's new neighbour.
    bad(edited(CALL, |v| {
        v["payload"].as_object_mut().unwrap().remove("sealed");
    }));
    bad(edited(CALL, |v| v["payload"]["injected"] = true.into()));
    // The version itself (still in range).
    bad(edited(CALL, |v| {
        v["payload"]["protocol_version"] = 4.into()
    }));
    // A field added inside `answers` of the answer.
    let answer: SignedHello = edited(ANSWER, |v| v["payload"]["answers"]["extra"] = 1.into());
    assert!(matches!(
        answer.verify("regtest", ANSWER_TS),
        Err(SignedError::BadSignature(_))
    ));
    let hb: SignedHeartbeat = edited(HEARTBEAT, |v| v["payload"]["load"]["peers"][1] = 5.into());
    assert!(matches!(
        hb.verify("regtest", HEARTBEAT_TS),
        Err(SignedError::BadSignature(_))
    ));
    // Spelling does not matter: members reordered and whitespace removed by a
    // round trip through `Value` (sorted members) verify as sent.
    let good: SignedHello = edited(CALL, |_| {});
    assert!(good.verify("regtest", CALL_TS).is_ok());
}

#[test]
fn a_field_outside_the_signed_payload_is_refused() {
    let mut v: Value = serde_json::from_str(CALL).unwrap();
    v["relayed_by"] = "someone".into();
    assert!(serde_json::from_value::<SignedHello>(v).is_err());
}

#[test]
fn out_of_range_versions_get_the_typed_error_naming_both_ranges() {
    let ours = ProtocolRange::OURS;
    // A newer node that no longer talks to this version (its minimum is above ours):
    // refused before the signature is looked at, naming both ranges.
    let newer: SignedHello = edited(CALL, |v| {
        v["payload"]["protocol_min"] = (PROTOCOL_VERSION + 1).into();
        v["payload"]["protocol_version"] = (PROTOCOL_VERSION + 2).into();
    });
    let e = newer.verify("regtest", CALL_TS).unwrap_err();
    assert_eq!(
        e,
        SignedError::UnsupportedProtocol {
            theirs: ProtocolRange {
                min: PROTOCOL_VERSION + 1,
                max: PROTOCOL_VERSION + 2
            },
            ours
        }
    );
    let text = e.to_string();
    assert!(
        text.contains(&format!(
            "{} to {}",
            PROTOCOL_VERSION + 1,
            PROTOCOL_VERSION + 2
        )) && text.contains(&ours.to_string()),
        "{text}"
    );
    // A release before versioning (no protocol fields): legacy version 1.
    let legacy: SignedHeartbeat = edited(HEARTBEAT, |v| {
        let p = v["payload"].as_object_mut().unwrap();
        p.remove("protocol_version");
        p.remove("protocol_min");
    });
    assert!(matches!(
        legacy.verify("regtest", HEARTBEAT_TS),
        Err(SignedError::UnsupportedProtocol {
            theirs: ProtocolRange { min: 1, max: 1 },
            ..
        })
    ));
    // An empty range (min above max) shares no version with anyone.
    let empty: SignedHello = edited(CALL, |v| {
        v["payload"]["protocol_min"] = 3.into();
        v["payload"]["protocol_version"] = 2.into();
    });
    assert!(matches!(
        empty.verify("regtest", CALL_TS),
        Err(SignedError::UnsupportedProtocol { .. })
    ));
}

#[test]
fn too_many_unknown_fields_are_refused() {
    let flood: SignedHello = edited(CALL, |v| {
        for i in 0..=vision_wire::UNKNOWN_FIELDS_MAX {
            v["payload"][format!("x{i}")] = i.into();
        }
    });
    assert!(matches!(
        flood.verify("regtest", CALL_TS),
        Err(SignedError::TooManyUnknownFields(n)) if n > vision_wire::UNKNOWN_FIELDS_MAX
    ));
}

#[test]
fn the_replay_guard_takes_a_newer_message_once() {
    let hb: SignedHeartbeat = serde_json::from_str(HEARTBEAT).unwrap();
    let who = hb.verify("regtest", HEARTBEAT_TS).unwrap();
    let mut guard = ReplayGuard::new();
    let p = &hb.payload;
    assert!(
        guard
            .check_and_record(&who, p.timestamp_unix, &p.nonce, HEARTBEAT_TS)
            .is_ok()
    );
    assert!(
        guard
            .check_and_record(&who, p.timestamp_unix, &p.nonce, HEARTBEAT_TS)
            .is_err()
    );
}
