//! docs/PROTOCOL.md stays true to the code: every error code appears in its
//! table with its number and gRPC status, and every request kind with its tag.

mod proto_samples;

use ember::proto::ErrorCode;

fn protocol_doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md");
    std::fs::read_to_string(path).expect("docs/PROTOCOL.md exists")
}

#[test]
fn every_error_code_is_documented_with_its_grpc_status() {
    let doc = protocol_doc();
    let missing: Vec<String> = ErrorCode::ALL
        .iter()
        .map(|code| format!("| {} | `{code:?}` | {:?} |", code.number(), code.grpc()))
        .filter(|row| !doc.contains(row.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "error table rows missing or wrong in PROTOCOL.md:\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_request_kind_is_documented_with_its_tag() {
    let doc = protocol_doc();
    for (tag, request) in proto_samples::requests().iter().enumerate() {
        assert!(format!("{request:?}").starts_with(request.name()), "name() of {request:?}");
        let row = format!("| {tag} | `{}` |", request.name());
        assert!(doc.contains(&row), "request table row missing in PROTOCOL.md: {row}");
    }
}
