//! The FPort-1 codec: parsing and emitting whole frames, a concatenated frame, and carrying a
//! PubKeyReq through 11-byte Fragments (US915 DR0) and back.
// Bench set-up on fixed, valid frames: a failed `expect` is a bug in the bench itself.
#![allow(clippy::expect_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lorapki_wire::{
    CommandRepr, Commands, Fragment, Fragmenter, KeyChangeReqRepr, PROTOCOL_VERSION, PubKeyReqRepr,
    Reassembler, Session, SigVerifyReqRepr,
};
use std::hint::black_box;

fn pub_key_req() -> CommandRepr<'static> {
    let mut ephemeral = [0; 49];
    ephemeral
        .iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = i as u8);
    ephemeral[0] = 0x02;
    CommandRepr::PubKeyReq(PubKeyReqRepr {
        session: Session::new(5).expect("in range"),
        version: PROTOCOL_VERSION,
        ephemeral,
    })
}

/// Every command of `payload`, parsed into its representation.
fn parse_all(payload: &[u8]) -> usize {
    Commands::new(payload)
        .map(|item| {
            let command = item.expect("valid frame");
            CommandRepr::parse(&command)
                .expect("defined command")
                .buffer_len()
        })
        .sum()
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("wire");

    let command = pub_key_req();
    let mut frame = [0; 51];
    command.emit(&mut frame).expect("fits");
    group.throughput(Throughput::Bytes(51));
    group.bench_function("parse_pub_key_req_51", |b| {
        b.iter(|| parse_all(black_box(&frame)))
    });
    group.bench_function("emit_pub_key_req_51", |b| {
        let mut buffer = [0; 51];
        b.iter(|| black_box(&command).emit(black_box(&mut buffer)))
    });

    let [_, s] = SigVerifyReqRepr::chunks(Session::new(5).expect("in range"), true, &[0x5a; 96]);
    let mut concatenated = [0; 51];
    let len = CommandRepr::SigVerifyReq(s)
        .emit(&mut concatenated)
        .expect("fits");
    CommandRepr::KeyChangeReq(KeyChangeReqRepr)
        .emit(&mut concatenated[len..])
        .expect("fits");
    group.bench_function("parse_sig_verify_req_key_change_req_51", |b| {
        b.iter(|| parse_all(black_box(&concatenated)))
    });

    // Seven 11-byte frames: emit each Fragment, parse it, push it.
    group.bench_function("fragment_reassemble_pub_key_req_n11", |b| {
        let session = Session::new(5).expect("in range");
        let mut reassembler = Reassembler::<4>::new();
        reassembler.bind(session);
        b.iter(|| {
            let mut fragmenter = Fragmenter::new(black_box(&frame), session, 0).expect("valid");
            let mut buffer = [0; 11];
            let mut complete = 0;
            while !fragmenter.is_done() {
                let written = fragmenter.emit_next(&mut buffer).expect("room");
                let fragment = Fragment::new_checked(&buffer[..written]).expect("a Fragment");
                if let Some(inner) = reassembler.push(&fragment).expect("accepted") {
                    complete = inner.len();
                }
            }
            complete
        })
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
