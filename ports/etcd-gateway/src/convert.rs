//! Field-by-field translation between etcd's messages and Ember's. The two
//! share names and meanings (Ember's types follow `etcdserverpb`), so most
//! of this is moving fields; where etcd has an enum number that names
//! nothing, the request is refused as etcd's server would.

use ember::proto as ember;
use tonic::Status;

use crate::pb::etcdserverpb as pb;
use crate::pb::mvccpb;

pub fn header(h: ember::ResponseHeader) -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader {
        cluster_id: h.cluster_id,
        member_id: h.member_id,
        revision: h.revision,
        raft_term: h.raft_term,
    })
}

pub fn key_value(kv: ember::KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

pub fn event(e: ember::Event) -> mvccpb::Event {
    let kind = match e.kind {
        ember::EventKind::Put => mvccpb::event::EventType::Put,
        ember::EventKind::Delete => mvccpb::event::EventType::Delete,
    };
    mvccpb::Event {
        r#type: kind as i32,
        kv: Some(key_value(e.kv)),
        prev_kv: e.prev_kv.map(key_value),
    }
}

pub fn range_request(r: pb::RangeRequest) -> Result<ember::RangeRequest, Status> {
    use pb::range_request::{SortOrder, SortTarget};
    let sort_order = match SortOrder::try_from(r.sort_order) {
        Ok(SortOrder::None) => ember::SortOrder::None,
        Ok(SortOrder::Ascend) => ember::SortOrder::Ascend,
        Ok(SortOrder::Descend) => ember::SortOrder::Descend,
        Err(_) => return Err(Status::invalid_argument("etcdserver: invalid sort option")),
    };
    let sort_target = match SortTarget::try_from(r.sort_target) {
        Ok(SortTarget::Key) => ember::SortTarget::Key,
        Ok(SortTarget::Version) => ember::SortTarget::Version,
        Ok(SortTarget::Create) => ember::SortTarget::Create,
        Ok(SortTarget::Mod) => ember::SortTarget::Mod,
        Ok(SortTarget::Value) => ember::SortTarget::Value,
        Err(_) => return Err(Status::invalid_argument("etcdserver: invalid sort option")),
    };
    Ok(ember::RangeRequest {
        key: r.key,
        range_end: r.range_end,
        limit: r.limit,
        revision: r.revision,
        sort_order,
        sort_target,
        serializable: r.serializable,
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    })
}

pub fn range_response(r: ember::RangeResponse) -> pb::RangeResponse {
    pb::RangeResponse {
        header: header(r.header),
        kvs: r.kvs.into_iter().map(key_value).collect(),
        more: r.more,
        count: r.count,
    }
}

pub fn put_request(r: pb::PutRequest) -> ember::PutRequest {
    ember::PutRequest {
        key: r.key,
        value: r.value,
        lease: r.lease,
        prev_kv: r.prev_kv,
        ignore_value: r.ignore_value,
        ignore_lease: r.ignore_lease,
    }
}

pub fn put_response(r: ember::PutResponse) -> pb::PutResponse {
    pb::PutResponse { header: header(r.header), prev_kv: r.prev_kv.map(key_value) }
}

pub fn delete_request(r: pb::DeleteRangeRequest) -> ember::DeleteRangeRequest {
    ember::DeleteRangeRequest { key: r.key, range_end: r.range_end, prev_kv: r.prev_kv }
}

pub fn delete_response(r: ember::DeleteRangeResponse) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header: header(r.header),
        deleted: r.deleted,
        prev_kvs: r.prev_kvs.into_iter().map(key_value).collect(),
    }
}

pub fn txn_request(r: pb::TxnRequest) -> Result<ember::TxnRequest, Status> {
    Ok(ember::TxnRequest {
        compare: r.compare.into_iter().map(compare).collect::<Result<_, _>>()?,
        success: r.success.into_iter().map(request_op).collect::<Result<_, _>>()?,
        failure: r.failure.into_iter().map(request_op).collect::<Result<_, _>>()?,
    })
}

fn compare(c: pb::Compare) -> Result<ember::Compare, Status> {
    use pb::compare::{CompareResult, CompareTarget, TargetUnion};
    let result = match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => ember::CompareResult::Equal,
        Ok(CompareResult::Greater) => ember::CompareResult::Greater,
        Ok(CompareResult::Less) => ember::CompareResult::Less,
        Ok(CompareResult::NotEqual) => ember::CompareResult::NotEqual,
        Err(_) => return Err(Status::invalid_argument("etcdserver: unknown compare result")),
    };
    // A union left unset compares against the target's zero value, as in
    // etcd, where the unset field reads as zero.
    let target = match (CompareTarget::try_from(c.target), c.target_union) {
        (Ok(CompareTarget::Version), union) => ember::CompareTarget::Version(match union {
            Some(TargetUnion::Version(v)) => v,
            _ => 0,
        }),
        (Ok(CompareTarget::Create), union) => ember::CompareTarget::Create(match union {
            Some(TargetUnion::CreateRevision(v)) => v,
            _ => 0,
        }),
        (Ok(CompareTarget::Mod), union) => ember::CompareTarget::Mod(match union {
            Some(TargetUnion::ModRevision(v)) => v,
            _ => 0,
        }),
        (Ok(CompareTarget::Value), union) => ember::CompareTarget::Value(match union {
            Some(TargetUnion::Value(v)) => v,
            _ => Vec::new(),
        }),
        (Ok(CompareTarget::Lease), union) => ember::CompareTarget::Lease(match union {
            Some(TargetUnion::Lease(v)) => v,
            _ => 0,
        }),
        (Err(_), _) => return Err(Status::invalid_argument("etcdserver: unknown compare target")),
    };
    Ok(ember::Compare { result, target, key: c.key, range_end: c.range_end })
}

fn request_op(op: pb::RequestOp) -> Result<ember::RequestOp, Status> {
    use pb::request_op::Request;
    match op.request {
        Some(Request::RequestRange(r)) => Ok(ember::RequestOp::Range(range_request(r)?)),
        Some(Request::RequestPut(r)) => Ok(ember::RequestOp::Put(put_request(r))),
        Some(Request::RequestDeleteRange(r)) => {
            Ok(ember::RequestOp::DeleteRange(delete_request(r)))
        }
        Some(Request::RequestTxn(r)) => Ok(ember::RequestOp::Txn(txn_request(r)?)),
        None => Err(Status::invalid_argument("etcdserver: a txn operation is empty")),
    }
}

pub fn txn_response(r: ember::TxnResponse) -> pb::TxnResponse {
    pb::TxnResponse {
        header: header(r.header),
        succeeded: r.succeeded,
        responses: r.responses.into_iter().map(response_op).collect(),
    }
}

/// The answers inside a txn carry only the revision in their headers, as
/// etcd's do: who answered is said once, in the txn's own header.
fn response_op(op: ember::ResponseOp) -> pb::ResponseOp {
    use pb::response_op::Response;
    let response = match op {
        ember::ResponseOp::Range(mut r) => {
            r.header = revision_only(r.header);
            Response::ResponseRange(range_response(r))
        }
        ember::ResponseOp::Put(mut r) => {
            r.header = revision_only(r.header);
            Response::ResponsePut(put_response(r))
        }
        ember::ResponseOp::DeleteRange(mut r) => {
            r.header = revision_only(r.header);
            Response::ResponseDeleteRange(delete_response(r))
        }
        // etcd leaves a nested txn's own header empty; its answers carry
        // the revision.
        ember::ResponseOp::Txn(mut r) => {
            r.header = ember::ResponseHeader::default();
            Response::ResponseTxn(txn_response(r))
        }
    };
    pb::ResponseOp { response: Some(response) }
}

fn revision_only(h: ember::ResponseHeader) -> ember::ResponseHeader {
    ember::ResponseHeader { revision: h.revision, ..ember::ResponseHeader::default() }
}

pub fn member(m: ember::Member) -> pb::Member {
    pb::Member {
        id: m.id,
        name: m.name,
        peer_ur_ls: m.peer_urls,
        client_ur_ls: m.client_urls,
        is_learner: m.is_learner,
    }
}
