//! How a [`Write`] is laid out in a frame of the checkpoint's log. A frame
//! holds one batch: its writes one after another, each
//!
//! ```text
//! kind u8, then
//!   1 task           key, CheckpointTask (varint length, protobuf)
//!   2 launch         key, TaskLaunch (varint length, protobuf)
//!   3 forget task    key
//!   4 update         seq varint, TaskStatus (varint length, protobuf)
//!   5 forget update  seq varint
//! key := varint length, UTF-8
//! ```
//!
//! The values are the protobuf messages the executor already speaks, so
//! fields added to them are read by older and newer executors alike.

use prost::Message;
use prost::bytes::Buf;
use prost::encoding::{decode_varint, encode_varint};
use wasmos_proto::v1;

use super::Write;

const TASK: u8 = 1;
const LAUNCH: u8 = 2;
const FORGET_TASK: u8 = 3;
const UPDATE: u8 = 4;
const FORGET_UPDATE: u8 = 5;

pub fn task(buf: &mut Vec<u8>, id: &str, task: &v1::CheckpointTask) {
    buf.push(TASK);
    key(buf, id);
    task.encode_length_delimited(buf).expect("a Vec grows");
}

pub fn launch(buf: &mut Vec<u8>, id: &str, launch: &v1::TaskLaunch) {
    buf.push(LAUNCH);
    key(buf, id);
    launch.encode_length_delimited(buf).expect("a Vec grows");
}

pub fn update(buf: &mut Vec<u8>, seq: u64, status: &v1::TaskStatus) {
    buf.push(UPDATE);
    encode_varint(seq, buf);
    status.encode_length_delimited(buf).expect("a Vec grows");
}

/// Appends `write` to a batch's body.
pub fn encode(buf: &mut Vec<u8>, write: &Write) {
    match write {
        Write::Task(id, t) => task(buf, id, t),
        Write::Launch(id, l) => launch(buf, id, l),
        Write::ForgetTask(id) => {
            buf.push(FORGET_TASK);
            key(buf, id);
        }
        Write::Update(seq, status) => update(buf, *seq, status),
        Write::ForgetUpdate(seq) => {
            buf.push(FORGET_UPDATE);
            encode_varint(*seq, buf);
        }
    }
}

/// The writes of one batch's body, in order.
pub fn decode(mut body: &[u8]) -> anyhow::Result<Vec<Write>> {
    let mut writes = Vec::new();
    while body.has_remaining() {
        let kind = body.get_u8();
        writes.push(match kind {
            TASK => Write::Task(
                read_key(&mut body)?,
                v1::CheckpointTask::decode_length_delimited(&mut body)?,
            ),
            LAUNCH => Write::Launch(
                read_key(&mut body)?,
                v1::TaskLaunch::decode_length_delimited(&mut body)?,
            ),
            FORGET_TASK => Write::ForgetTask(read_key(&mut body)?),
            UPDATE => Write::Update(
                decode_varint(&mut body)?,
                v1::TaskStatus::decode_length_delimited(&mut body)?,
            ),
            FORGET_UPDATE => Write::ForgetUpdate(decode_varint(&mut body)?),
            other => anyhow::bail!("a record of unknown kind {other}"),
        });
    }
    Ok(writes)
}

fn key(buf: &mut Vec<u8>, id: &str) {
    encode_varint(id.len() as u64, buf);
    buf.extend_from_slice(id.as_bytes());
}

fn read_key(body: &mut &[u8]) -> anyhow::Result<String> {
    let len = usize::try_from(decode_varint(body)?)?;
    anyhow::ensure!(len <= body.len(), "a key runs past its record");
    let (key, rest) = body.split_at(len);
    *body = rest;
    Ok(std::str::from_utf8(key)?.to_string())
}
