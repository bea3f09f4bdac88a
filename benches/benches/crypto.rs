//! P-384, HKDF-SHA384 and AES-CMAC through the software backend and on the bare RustCrypto
//! crates, side by side: `lorapki/<op>` against `bare/<op>` shows the wrapper's overhead.

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use lorapki_benches::crypto::{Bare, Lorapki, Operation, Operations};
use std::hint::black_box;

/// The seven operations of one side, as the bench group `group`.
fn operations<O: Operations>(c: &mut Criterion, group: &str) {
    let mut ops = O::default();
    // Fresh ephemeral keys for the agree-only bench come from a second instance.
    let mut keys = O::default();
    let mut group = c.benchmark_group(group);
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

fn soft_backend(c: &mut Criterion) {
    operations::<Lorapki>(c, "lorapki");
}

fn bare_rustcrypto(c: &mut Criterion) {
    operations::<Bare>(c, "bare");
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = soft_backend, bare_rustcrypto
}
criterion_main!(benches);
