//! A framework's event stream over raw gRPC, for tests that drive the
//! Scheduler service by hand.

use std::time::Duration;

use tokio_stream::StreamExt;
use wasmos_proto::v1;
use wasmos_proto::v1::event::Kind;

/// The answer to a `Subscribe` call, once its first event (SUBSCRIBED)
/// is in: the framework's id and the rest of the stream.
pub async fn subscribed(
    call: Result<tonic::Response<tonic::Streaming<v1::Event>>, tonic::Status>,
) -> Result<(String, tonic::Streaming<v1::Event>), tonic::Status> {
    let mut events = call?.into_inner();
    match events.next().await {
        Some(Ok(v1::Event {
            kind: Some(Kind::Subscribed(s)),
        })) => Ok((s.framework_id, events)),
        other => panic!("no SUBSCRIBED: {other:?}"),
    }
}

/// The next offer on `events` (within 30 s).
pub async fn next_offer(events: &mut tonic::Streaming<v1::Event>) -> v1::Offer {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), events.next()).await {
            Ok(Some(Ok(v1::Event {
                kind: Some(Kind::Offers(offers)),
            }))) if !offers.offers.is_empty() => return offers.offers[0].clone(),
            Ok(Some(Ok(_))) => continue,
            other => panic!("no offer: {other:?}"),
        }
    }
}
