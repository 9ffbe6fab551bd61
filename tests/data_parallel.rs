//! Data parallelism in one process: replicas over several devices (here one
//! adapter opened several times) against the plain single-device run, and
//! packing tensors into buckets. The same training under mpirun is
//! `tests/mpi.rs` (feature `mpi`).

mod common;
#[path = "parallel/fixture.rs"]
mod fixture;

use std::panic::AssertUnwindSafe;

use common::{own_device, panic_of};
use fixture::{B, STEPS};
use wgrad::Tensor;
use wgrad::pack::Packing;
use wgrad::parallel::DataParallel;

fn two_devices() -> DataParallel {
    DataParallel::new(vec![own_device(), own_device()])
}

#[test]
fn two_and_four_replicas_match_one_device_within_the_summation_bound() {
    let single = fixture::single(&own_device());
    let two = fixture::data_parallel(&mut two_devices()).expect("two replicas");
    fixture::assert_within_bound(&two, &single);
    let four = fixture::data_parallel(&mut DataParallel::new((0..4).map(|_| own_device()).collect())).expect("four");
    fixture::assert_within_bound(&four, &single);
    // one replica is the plain run: the round trip through the host is exact
    let one = fixture::data_parallel(&mut DataParallel::new(vec![own_device()])).expect("one replica");
    assert_eq!(one.params, single.params);
}

#[test]
fn same_replicas_give_the_same_bits_run_to_run_and_for_any_buckets() {
    let a = fixture::data_parallel(&mut two_devices()).expect("first run");
    let b = fixture::data_parallel(&mut two_devices()).expect("second run");
    assert_eq!(a.params, b.params);
    assert_eq!(a.params.len(), STEPS);
    // a bucket per tensor and more (w has 24 elements, b 3): the same sums
    let mut small = two_devices().bucket_elements(10);
    let c = fixture::data_parallel(&mut small).expect("small buckets");
    assert_eq!(a.params, c.params);
    let stats = small.stats();
    assert_eq!((stats.steps, stats.bytes), (STEPS as u64, 4 * 27));
}

#[test]
fn packing_round_trips_and_buckets_by_size() {
    let dev = own_device();
    let shapes = [vec![2, 3], vec![4], vec![5, 1], vec![1]];
    let tensors: Vec<Tensor> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let n: usize = s.iter().product();
            Tensor::from_slice(&dev, &(0..n).map(|j| (10 * i + j) as f32).collect::<Vec<_>>(), s)
        })
        .collect();
    let refs: Vec<&Tensor> = tensors.iter().collect();
    // 6 + 4 fit in 10, then 5 + 1
    let packing = Packing::of(&refs, 10);
    assert_eq!((packing.buckets(), packing.bucket_len(0), packing.bucket_len(1), packing.numel()), (2, 10, 6, 16));
    let buckets = packing.pack(&refs);
    assert_eq!(buckets[1].to_vec::<f32>().unwrap(), [20.0, 21.0, 22.0, 23.0, 24.0, 30.0]);
    for (t, v) in tensors.iter().zip(packing.unpack(&buckets)) {
        assert_eq!(v.shape(), t.shape());
        assert_eq!(v.to_vec::<f32>().unwrap(), t.to_vec::<f32>().unwrap());
    }
    // a tensor larger than a bucket gets its own
    assert_eq!(Packing::of(&refs, 3).buckets(), 4);
    let (msg, _) = panic_of(AssertUnwindSafe(|| {
        packing.pack(&refs[..3]);
    }));
    assert!(msg.contains("pack: f32 tensors of shapes [[2, 3], [4], [5, 1], [1]] expected"), "{msg}");
}

#[test]
fn a_batch_that_does_not_split_evenly_is_refused() {
    let dp = two_devices();
    assert_eq!(dp.shard(1, B), B / 2..B);
    let (msg, line) = panic_of(AssertUnwindSafe(|| {
        dp.shard(0, 7);
    }));
    assert!(msg.contains("a batch of 7 must split evenly over 2 replicas"), "{msg}");
    assert!(line.contains("data_parallel.rs"), "{line}");
}
