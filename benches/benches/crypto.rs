//! P-384, HKDF-SHA384 and AES-CMAC through the software backend and on the bare RustCrypto
//! crates, side by side: `lorapki/<op>` against `bare/<op>` shows the wrapper's overhead.

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use lorapki_benches::crypto::{Bare, Lorapki, Operation};
use std::hint::black_box;

fn soft_backend(c: &mut Criterion) {
    let mut ops = Lorapki::new();
    // Fresh ephemeral keys for the agree-only bench come from a second backend.
    let mut keys = Lorapki::new();
    let mut group = c.benchmark_group("lorapki");
    group.bench_function(Operation::Keygen.name(), |b| {
        b.iter(|| black_box(ops.keygen()))
    });
    group.bench_function(Operation::EcdhAgree.name(), |b| {
        b.iter_batched(
            || keys.keygen().0,
            |ephemeral| black_box(ops.ecdh_agree(ephemeral)),
            BatchSize::SmallInput,
        );
    });
    group.bench_function(Operation::EcdhGenerateAgree.name(), |b| {
        b.iter(|| black_box(ops.ecdh_generate_agree()));
    });
    group.bench_function(Operation::Sign.name(), |b| b.iter(|| black_box(ops.sign())));
    group.bench_function(Operation::Verify.name(), |b| b.iter(|| ops.verify()));
    group.bench_function(Operation::Hkdf16.name(), |b| {
        b.iter(|| black_box(ops.hkdf16()))
    });
    group.bench_function(Operation::Cmac16.name(), |b| {
        b.iter(|| black_box(ops.cmac16()))
    });
    group.finish();
}

fn bare_rustcrypto(c: &mut Criterion) {
    let mut ops = Bare::new();
    let mut keys = Bare::new();
    let mut group = c.benchmark_group("bare");
    group.bench_function(Operation::Keygen.name(), |b| {
        b.iter(|| black_box(ops.keygen()))
    });
    group.bench_function(Operation::EcdhAgree.name(), |b| {
        b.iter_batched(
            || keys.keygen().0,
            |scalar| black_box(ops.ecdh_agree(scalar)),
            BatchSize::SmallInput,
        );
    });
    group.bench_function(Operation::EcdhGenerateAgree.name(), |b| {
        b.iter(|| black_box(ops.ecdh_generate_agree()));
    });
    group.bench_function(Operation::Sign.name(), |b| b.iter(|| black_box(ops.sign())));
    group.bench_function(Operation::Verify.name(), |b| b.iter(|| ops.verify()));
    group.bench_function(Operation::Hkdf16.name(), |b| {
        b.iter(|| black_box(ops.hkdf16()))
    });
    group.bench_function(Operation::Cmac16.name(), |b| {
        b.iter(|| black_box(ops.cmac16()))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = soft_backend, bare_rustcrypto
}
criterion_main!(benches);
