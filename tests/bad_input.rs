//! Bad input gets a coded error, and the connection and the server keep serving.

mod support;

use bytes::Bytes;
use feedgate::protocol::pb;
use prost::Message as _;
use rand::{Rng, SeedableRng};
use support::raw::RawClient;
use support::*;
use tokio_tungstenite::tungstenite::Message;

/// After bad input: the same connection still answers, and a new connection works too.
async fn still_serving(client: &mut Client, addr: std::net::SocketAddr) {
    client.barrier().await;
    let mut fresh = Client::connect(addr).await;
    fresh.barrier().await;
}

async fn raw_error(client: &mut Client, frame: Message, code: ErrorCode) -> pb::Response {
    client.send_raw(frame).await;
    let response = client.recv_response().await;
    expect_error_response(response.clone(), code);
    response
}

#[tokio::test]
async fn random_bytes_get_invalid_message_and_the_connection_survives() {
    let server = start().await;
    let mut client = Client::connect(server.local_addr()).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut errors = 0;
    for _ in 0..200 {
        let len = rng.random_range(1..512);
        let frame: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        client.send_raw(Message::Binary(frame.into())).await;
        // Every frame gets exactly one response. Random bytes occasionally decode as a valid
        // request (protobuf is permissive), and then the answer may be a success.
        let response = client.recv_response().await;
        match &response.result {
            Some(pb::response::Result::Error(error)) => {
                assert_ne!(error.code(), ErrorCode::Internal, "{}", error.message);
                assert_ne!(error.code(), ErrorCode::Unspecified, "{}", error.message);
                errors += 1;
            }
            Some(pb::response::Result::Subscribed(_)) => {
                client.recv_event().await; // its Ready
            }
            _ => {}
        }
    }
    assert!(errors > 150, "most random frames are errors, got {errors}");
    still_serving(&mut client, server.local_addr()).await;
}

#[tokio::test]
async fn undecodable_frame_is_answered_with_the_id_it_could_read() {
    let server = start().await;
    let mut client = Client::connect(server.local_addr()).await;
    // request_id = 42, then a length-delimited field that runs past the end of the frame.
    let frame = Message::Binary(Bytes::from_static(&[0x08, 42, 0x1a, 0x40, 0x01]));
    let response = raw_error(&mut client, frame, ErrorCode::InvalidMessage).await;
    assert_eq!(response.request_id, 42);
    let frame = Message::Binary(Bytes::from_static(&[0xff, 0xff, 0xff]));
    let response = raw_error(&mut client, frame, ErrorCode::InvalidMessage).await;
    assert_eq!(response.request_id, 0);
    still_serving(&mut client, server.local_addr()).await;
}

#[tokio::test]
async fn a_text_frame_gets_invalid_message() {
    let server = start().await;
    let mut client = Client::connect(server.local_addr()).await;
    let response = raw_error(
        &mut client,
        Message::Text(r#"{"subscribe":"orders"}"#.into()),
        ErrorCode::InvalidMessage,
    )
    .await;
    assert_eq!(response.request_id, 0);
    still_serving(&mut client, server.local_addr()).await;
}

#[tokio::test]
async fn an_empty_frame_gets_invalid_message() {
    let server = start().await;
    let mut client = Client::connect(server.local_addr()).await;
    raw_error(
        &mut client,
        Message::Binary(Bytes::new()),
        ErrorCode::InvalidMessage,
    )
    .await;
    still_serving(&mut client, server.local_addr()).await;
}

#[tokio::test]
async fn a_request_without_a_command_or_with_an_unknown_one_gets_unknown_command() {
    let server = start().await;
    let mut client = Client::connect(server.local_addr()).await;
    let no_command = pb::Request {
        request_id: 11,
        command: None,
    };
    let response = raw_error(
        &mut client,
        Message::Binary(no_command.encode_to_vec().into()),
        ErrorCode::UnknownCommand,
    )
    .await;
    assert_eq!(response.request_id, 11);

    // Field 40: a command from a future protocol version.
    let future = Message::Binary(Bytes::from_static(&[0x08, 12, 0xc2, 0x02, 0x00]));
    let response = raw_error(&mut client, future, ErrorCode::UnknownCommand).await;
    assert_eq!(response.request_id, 12);
    still_serving(&mut client, server.local_addr()).await;
}

#[tokio::test]
async fn a_zero_request_id_or_subscription_id_gets_validation() {
    let server = start().await;
    let mut client = Client::connect(server.local_addr()).await;
    let zero_id = pb::Request {
        request_id: 0,
        command: Some(Command::Ping(pb::Ping {})),
    };
    raw_error(
        &mut client,
        Message::Binary(zero_id.encode_to_vec().into()),
        ErrorCode::Validation,
    )
    .await;
    client
        .expect_error(subscribe_topic(0, "t"), ErrorCode::Validation)
        .await;
    client
        .expect_error(
            Command::Subscribe(pb::Subscribe {
                subscription_id: 1,
                source: None,
                resume_from: Bytes::new(),
            }),
            ErrorCode::Validation,
        )
        .await;
    client
        .expect_error(subscribe_topic(1, "has space"), ErrorCode::Validation)
        .await;
    client
        .expect_error(subscribe_topic(1, "orders.*"), ErrorCode::Validation)
        .await;
    client
        .expect_error(publish("", b"x"), ErrorCode::Validation)
        .await;
    still_serving(&mut client, server.local_addr()).await;
}

#[tokio::test]
async fn a_duplicate_subscription_id_is_refused_and_the_first_keeps_working() {
    let server = start().await;
    let addr = server.local_addr();
    let mut client = Client::connect(addr).await;
    client.subscribe_topic(9, "first").await;
    let err = client
        .expect_error(
            subscribe_topic(9, "second"),
            ErrorCode::DuplicateSubscription,
        )
        .await;
    assert_eq!(err.details["subscription_id"], "9");
    let mut publisher = Client::connect(addr).await;
    publisher.publish("second", b"no").await;
    publisher.publish("first", b"yes").await;
    assert_eq!(&client.recv_message(9).await.payload[..], b"yes");
    client.barrier().await;
}

#[tokio::test]
async fn an_unknown_subscription_id_gets_subscription_not_found() {
    let server = start().await;
    let mut client = Client::connect(server.local_addr()).await;
    let err = client
        .expect_error(unsubscribe(404), ErrorCode::SubscriptionNotFound)
        .await;
    assert_eq!(err.details["subscription_id"], "404");
    still_serving(&mut client, server.local_addr()).await;
}

#[tokio::test]
async fn resume_from_on_an_in_process_topic_gets_resume_unavailable() {
    let server = start().await;
    let mut client = Client::connect(server.local_addr()).await;
    client
        .expect_error(
            Command::Subscribe(pb::Subscribe {
                subscription_id: 1,
                source: Some(pb::subscribe::Source::Topic(pb::TopicFeed {
                    topic: "t".into(),
                    ..Default::default()
                })),
                resume_from: Bytes::from_static(b"cursor"),
            }),
            ErrorCode::ResumeUnavailable,
        )
        .await;
    still_serving(&mut client, server.local_addr()).await;
}

#[tokio::test]
async fn a_ten_megabyte_frame_gets_limit_exceeded_and_the_connection_keeps_serving() {
    let server = start().await;
    let mut client = Client::connect(server.local_addr()).await;
    // A publish whose request id is readable at the front of the frame.
    let request = pb::Request {
        request_id: 77,
        command: Some(publish("big", &vec![0xab; 10 * 1024 * 1024])),
    };
    let response = raw_error(
        &mut client,
        Message::Binary(request.encode_to_vec().into()),
        ErrorCode::LimitExceeded,
    )
    .await;
    assert_eq!(response.request_id, 77);
    let Some(pb::response::Result::Error(error)) = response.result else {
        unreachable!()
    };
    assert_eq!(error.details["limit"], (1024 * 1024).to_string());
    still_serving(&mut client, server.local_addr()).await;
}

#[tokio::test]
async fn a_frame_over_the_hard_limit_closes_only_that_connection_with_1009() {
    let mut config = test_config();
    config.websocket.max_message_size = 64 * 1024;
    config.websocket.max_frame_size = 256 * 1024;
    let server = start_with(config).await;
    let addr = server.local_addr();
    let mut bystander = Client::connect(addr).await;
    bystander.subscribe_topic(1, "t").await;

    let mut client = Client::connect(addr).await;
    client
        .send_raw(Message::Binary(vec![0u8; 1024 * 1024].into()))
        .await;
    let (code, reason) = client.expect_close().await;
    assert_eq!(code, 1009, "{reason}");

    let mut publisher = Client::connect(addr).await;
    publisher.publish("t", b"still here").await;
    assert_eq!(&bystander.recv_message(1).await.payload[..], b"still here");
}

#[tokio::test]
async fn subscriptions_past_the_limit_get_limit_exceeded() {
    let mut config = test_config();
    config.limits.max_subscriptions = 3;
    let server = start_with(config).await;
    let mut client = Client::connect(server.local_addr()).await;
    for id in 1..=3 {
        client.subscribe_topic(id, "t").await;
    }
    let err = client
        .expect_error(subscribe_topic(4, "t"), ErrorCode::LimitExceeded)
        .await;
    assert_eq!(err.details["limit"], "3");
    client.request(unsubscribe(1)).await;
    client.subscribe_topic(4, "t").await;
}

#[tokio::test]
async fn a_client_close_is_answered_with_a_close_frame() {
    let server = start().await;
    let mut raw = RawClient::connect(server.local_addr()).await;
    raw.frame(0x88, &1000u16.to_be_bytes()).await; // FIN + close, code 1000
    assert_eq!(raw.close_code().await, Some(1000), "RFC 6455 5.5.1");
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn protocol_violations_close_with_1002_and_bad_utf8_with_1007() {
    let server = start().await;
    let addr = server.local_addr();
    let cases: [(&str, u8, &[u8], u16); 4] = [
        ("a ping over 125 bytes", 0x89, &[0u8; 126], 1002),
        ("reserved bits set", 0xC2, b"x", 1002),
        ("a reserved opcode", 0x83, b"", 1002),
        (
            "a text frame that is not UTF-8",
            0x81,
            &[0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xce, 0xbc, 0xff],
            1007,
        ),
    ];
    for (what, first, payload, code) in cases {
        let mut raw = RawClient::connect(addr).await;
        raw.frame(first, payload).await;
        assert_eq!(raw.close_code().await, Some(code), "{what}");
    }
    let mut client = Client::connect(addr).await;
    still_serving(&mut client, addr).await;
    server.shutdown().await.expect("shutdown");
}
