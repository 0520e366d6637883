//! Guards the idempotency contract: the id is exactly SHA-256 of `scope|ts|res|vantage`, the
//! same capsule twice is one capsule, and different content under the same key is a typed
//! conflict that leaves the original untouched.

mod common;

use common::{mem_store, named, observed};
use rim_capsule::{
    Batch, CapsuleBody, CapsuleId, CapsuleKey, CapsuleRequest, ModelError, PutOutcome, StoreError, Vantage,
};
use sha2::{Digest, Sha256};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn id_is_sha256_of_the_literal_key_text() {
    let key = CapsuleKey {
        scope_id: "rim:sensor:plant-a:temp.1".into(),
        timestamp: 1_700_000_000_000,
        resolution: 60,
        vantage: Vantage::Observed,
    };
    // Computed outside Rust with `printf '%s' '...' | sha256sum`.
    const EXPECTED: &str = "d83176b54c477aa1246ae8580d41338e554fe593594ae9831124ae5b7872a2cd";
    assert_eq!(key.id().to_string(), EXPECTED);
    let literal = Sha256::digest(b"rim:sensor:plant-a:temp.1|1700000000000|60|OBSERVED");
    assert_eq!(hex(&literal), EXPECTED);

    let negative = CapsuleKey {
        scope_id: "rim:market:xnas:AAPL".into(),
        timestamp: -1000,
        resolution: 1,
        vantage: Vantage::Predicted,
    };
    assert_eq!(
        negative.id().to_string(),
        "25dce06c7ed9428cfc4f5db5ab94c3d44c8fec790c8980eb2100617974e85354"
    );
    for (ts, res, v) in [
        (0i64, 1u32, "MANUAL_1"),
        (i64::MIN, u32::MAX, "X"),
        (i64::MAX, 7, "A_B"),
    ] {
        let key = CapsuleKey {
            scope_id: "rim:a:b:c".into(),
            timestamp: ts,
            resolution: res,
            vantage: Vantage::parse(v).unwrap(),
        };
        let text = format!("rim:a:b:c|{ts}|{res}|{v}");
        assert_eq!(key.id().to_string(), hex(&Sha256::digest(text.as_bytes())));
    }
}

#[test]
fn id_hex_round_trips() {
    let id = observed("rim:n:s:1", 0, 1, 1).id();
    let text = id.to_string();
    assert_eq!(text.len(), 64);
    assert!(text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    assert_eq!(CapsuleId::parse_hex(&text).unwrap(), id);
    assert_eq!(CapsuleId::parse_hex(&text.to_uppercase()).unwrap(), id);
    assert!(CapsuleId::parse_hex(&text[1..]).is_err());
    assert!(CapsuleId::parse_hex(&format!("g{}", &text[1..])).is_err());
    let json = serde_json::to_string(&id).unwrap();
    assert_eq!(json, format!("\"{text}\""));
}

#[test]
fn same_capsule_twice_is_one_capsule() {
    let store = mem_store();
    let c = observed("rim:n:s:1", 60_000, 60, 5);
    assert_eq!(store.put(&c).unwrap(), PutOutcome::Inserted);
    let mut again = c.clone();
    again.created_ms += 99_999; // processing time is not content
    assert_eq!(store.put(&again).unwrap(), PutOutcome::Existing);
    assert_eq!(store.counts().unwrap().capsules, 1);

    let batch = Batch {
        capsules: vec![c.clone(), again.clone(), c.clone()],
        ..Batch::default()
    };
    let out = store.write(&batch).unwrap();
    assert_eq!((out.inserted, out.existing, out.conflicts.len()), (0, 3, 0));
    assert_eq!(store.counts().unwrap().capsules, 1);
    assert_eq!(store.get(&c.id()).unwrap().unwrap(), c);
}

#[test]
fn duplicate_inside_one_batch_is_inserted_once() {
    let store = mem_store();
    let c = observed("rim:n:s:1", 0, 1, 1);
    let out = store
        .write(&Batch {
            capsules: vec![c.clone(), c.clone()],
            ..Batch::default()
        })
        .unwrap();
    assert_eq!((out.inserted, out.existing), (1, 1));
    assert_eq!(store.counts().unwrap().capsules, 1);
}

#[test]
fn different_content_is_a_conflict_and_the_original_stays() {
    let store = mem_store();
    let original = observed("rim:n:s:1", 60_000, 60, 5);
    store.put(&original).unwrap();
    let changed = observed("rim:n:s:1", 60_000, 60, 6);
    assert_eq!(changed.id(), original.id());

    match store.put(&changed) {
        Err(StoreError::Conflict { id }) => assert_eq!(id, original.id()),
        other => panic!("expected a conflict, got {other:?}"),
    }

    let other = observed("rim:n:s:2", 60_000, 60, 1);
    let out = store
        .write(&Batch {
            capsules: vec![changed.clone(), other.clone()],
            ..Batch::default()
        })
        .unwrap();
    assert_eq!(out.conflicts, vec![original.id()]);
    assert_eq!(out.inserted, 1, "the rest of the batch still commits");
    assert_eq!(store.get(&original.id()).unwrap().unwrap(), original);
    assert_eq!(store.get(&other.id()).unwrap().unwrap(), other);
    assert_eq!(store.counts().unwrap().capsules, 2);
}

#[test]
fn payload_capsules_are_idempotent_whatever_the_json_formatting() {
    let store = mem_store();
    let req = |text: &str| -> CapsuleRequest { serde_json::from_str(text).unwrap() };
    let a = req(
        r#"{"scopeId":"rim:n:s:1","timestamp":0,"resolution":60,"vantageMode":"MANUAL","payload":{"a":1,"b":[1,2]}}"#,
    )
    .into_capsule(1)
    .unwrap();
    let b = req(r#"{ "scopeId": "rim:n:s:1", "timestamp": 0, "resolution": 60, "vantageMode": "MANUAL", "payload": { "b": [1, 2], "a": 1 } }"#)
        .into_capsule(2)
        .unwrap();
    assert_eq!(store.put(&a).unwrap(), PutOutcome::Inserted);
    assert_eq!(store.put(&b).unwrap(), PutOutcome::Existing);
    let c = named("rim:n:s:1", 0, "MANUAL", serde_json::json!({"a": 2}));
    assert!(matches!(store.put(&c), Err(StoreError::Conflict { .. })));
}

#[test]
fn vantage_is_validated() {
    for ok in ["A", "MANUAL", "X_1", "A2345678901234567890123456789012"] {
        assert_eq!(Vantage::parse(ok).unwrap().as_str(), ok);
    }
    assert_eq!(Vantage::parse("OBSERVED").unwrap(), Vantage::Observed);
    assert_eq!(Vantage::parse("PREDICTED").unwrap(), Vantage::Predicted);
    for bad in [
        "",
        "a",
        "1ABC",
        "_A",
        "AB-C",
        "AB C",
        "Abc",
        "A23456789012345678901234567890123", // 33 characters
        "É",
    ] {
        assert!(
            matches!(Vantage::parse(bad), Err(ModelError::InvalidVantage { .. })),
            "{bad:?} should be rejected"
        );
    }
    assert!(serde_json::from_str::<Vantage>("\"lower\"").is_err());

    // A hand-built invalid vantage never reaches the file.
    let store = mem_store();
    let mut c = named("rim:n:s:1", 0, "MANUAL", serde_json::json!(1));
    c.key.vantage = Vantage::Named("bad name".into());
    assert!(matches!(store.put(&c), Err(StoreError::InvalidVantage { .. })));
    // API capsules cannot claim rimd's vantages.
    let mut c = named("rim:n:s:1", 0, "MANUAL", serde_json::json!(1));
    c.key.vantage = Vantage::Observed;
    assert!(matches!(
        store.put(&c),
        Err(StoreError::Invalid(ModelError::BodyMismatch { .. }))
    ));
    // In a batch, an invalid capsule is listed and the rest commits.
    let good = observed("rim:n:s:1", 0, 1, 1);
    let out = store
        .write(&Batch {
            capsules: vec![c, good],
            ..Batch::default()
        })
        .unwrap();
    assert_eq!((out.inserted, out.invalid.len()), (1, 1));
}

#[test]
fn payload_size_is_bounded() {
    let big = serde_json::Value::String("x".repeat(rim_capsule::PAYLOAD_BYTES_MAX));
    assert!(matches!(
        CapsuleBody::payload(&big),
        Err(ModelError::PayloadTooLarge { .. })
    ));
    let store = mem_store();
    let mut c = named("rim:n:s:1", 0, "MANUAL", serde_json::json!(1));
    c.body = CapsuleBody::Payload(format!("\"{}\"", "y".repeat(rim_capsule::PAYLOAD_BYTES_MAX)));
    assert!(matches!(store.put(&c), Err(StoreError::PayloadTooLarge { .. })));
}

#[test]
fn json_shape_is_camel_case() {
    let c = observed("rim:n:s:1", 0, 1, 1);
    let v = serde_json::to_value(&c).unwrap();
    assert_eq!(v["scopeId"], "rim:n:s:1");
    assert_eq!(v["vantageMode"], "OBSERVED");
    assert_eq!(v["observed"]["lastStatus"], "OK");
    assert_eq!(v["createdMs"], 2000);
    let back: rim_capsule::Capsule = serde_json::from_value(v).unwrap();
    assert_eq!(back, c);
    let p = named("rim:n:s:1", 0, "MANUAL", serde_json::json!({"k": [1, 2]}));
    let v = serde_json::to_value(&p).unwrap();
    assert_eq!(v["payload"]["k"][1], 2);
}
