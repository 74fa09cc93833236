//! gRPC reflection on the master, in both versions clients speak: v1
//! (grpcurl) and v1alpha (grpcio-reflection, grpcui, Postman, older
//! grpcurl). It needs no token: it only describes the services.

mod support;

use support::Cluster;
use tokio_stream::StreamExt;

/// `$name(url)`: the services reflection `$version` lists, and how many
/// files it returns for `wasmos.v1.Scheduler`. (One body for both: their
/// messages are the same in two packages.)
macro_rules! ask {
    ($name:ident, $version:ident) => {
        async fn $name(url: &str) -> (Vec<String>, usize) {
            use tonic_reflection::pb::$version::ServerReflectionRequest;
            use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
            use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
            use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
            let channel = tonic::transport::Channel::from_shared(url.to_string())
                .unwrap()
                .connect()
                .await
                .unwrap();
            let requests = [
                MessageRequest::ListServices(String::new()),
                MessageRequest::FileContainingSymbol("wasmos.v1.Scheduler".into()),
            ]
            .map(|m| ServerReflectionRequest {
                host: String::new(),
                message_request: Some(m),
            });
            let mut answers = ServerReflectionClient::new(channel)
                .server_reflection_info(tokio_stream::iter(requests))
                .await
                .unwrap()
                .into_inner();
            let (mut services, mut files) = (Vec::new(), 0);
            while let Some(answer) = answers.next().await {
                match answer.unwrap().message_response {
                    Some(MessageResponse::ListServicesResponse(list)) => {
                        services = list.service.into_iter().map(|s| s.name).collect();
                    }
                    Some(MessageResponse::FileDescriptorResponse(f)) => {
                        files = f.file_descriptor_proto.len()
                    }
                    other => panic!("unexpected answer: {other:?}"),
                }
            }
            (services, files)
        }
    };
}

ask!(ask_v1, v1);
ask!(ask_v1alpha, v1alpha);

#[tokio::test]
async fn the_master_answers_reflection_v1_and_v1alpha() {
    let cluster = Cluster::start(0, &[], &[]);
    let (v1, v1_files) = ask_v1(&cluster.url).await;
    let (v1alpha, v1alpha_files) = ask_v1alpha(&cluster.url).await;
    for service in [
        "wasmos.v1.Scheduler",
        "wasmos.v1.Operator",
        "wasmos.v1.Artifacts",
        "wasmos.v1.AgentLink",
    ] {
        assert!(v1.iter().any(|s| s == service), "v1 lists {v1:?}");
        assert!(
            v1alpha.iter().any(|s| s == service),
            "v1alpha lists {v1alpha:?}"
        );
    }
    assert!(v1_files > 0 && v1alpha_files > 0);
}
