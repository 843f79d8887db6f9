//! Per-replica batch order. The batch a replica sees at iteration `t` depends only on its seed
//! and `t`: epoch `e = t / steps_per_epoch` is a permutation of the training set drawn from the
//! stream (seed, batches, e), cut into consecutive batches; the last partial batch of an epoch
//! is dropped so every batch has exactly `batch_size` examples. Rewinding to iteration `k` thus
//! replays the dense run's data order from `k`, and arms of the same seed see the same order.

use tch::{Device, Tensor};

use crate::rng::{permutation, stream, Purpose};

/// The batch order of one seed.
#[derive(Debug, Clone)]
pub struct BatchOrder {
    seed: u64,
    train_size: usize,
    batch_size: usize,
    epoch: Option<(u64, Vec<u32>)>,
}

impl BatchOrder {
    /// Batch order of `seed` over a training set of `train_size` examples.
    pub fn new(seed: u64, train_size: usize, batch_size: usize) -> Self {
        assert!(
            batch_size >= 1 && batch_size <= train_size,
            "batch size within the training set"
        );
        Self {
            seed,
            train_size,
            batch_size,
            epoch: None,
        }
    }

    /// Full batches per epoch.
    pub fn steps_per_epoch(&self) -> u64 {
        (self.train_size / self.batch_size) as u64
    }

    /// Training-set indices of the batch at `iteration`.
    pub fn batch(&mut self, iteration: u64) -> &[u32] {
        let spe = self.steps_per_epoch();
        let epoch = iteration / spe;
        if self.epoch.as_ref().map(|(e, _)| *e) != Some(epoch) {
            let perm = permutation(
                &mut stream(self.seed, Purpose::Batches, epoch),
                self.train_size,
            );
            self.epoch = Some((epoch, perm));
        }
        let start = (iteration % spe) as usize * self.batch_size;
        &self.epoch.as_ref().expect("epoch drawn").1[start..start + self.batch_size]
    }
}

/// Index tensor `[steps, replicas, batch]` for iterations `from..from + steps`, one batch order
/// per replica, moved to `device` in one asynchronous copy.
pub fn index_chunk(orders: &mut [BatchOrder], from: u64, steps: u64, device: Device) -> Tensor {
    let replicas = orders.len();
    let batch = orders.first().map_or(0, |o| o.batch_size);
    let mut flat = Vec::with_capacity(steps as usize * replicas * batch);
    for t in from..from + steps {
        for order in orders.iter_mut() {
            flat.extend(order.batch(t).iter().map(|&i| i64::from(i)));
        }
    }
    let host = Tensor::from_slice(&flat).view([steps as i64, replicas as i64, batch as i64]);
    super::transfer::to_device(host, device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_epoch_visits_each_example_at_most_once_and_drops_the_tail() {
        let mut order = BatchOrder::new(3, 10, 3);
        assert_eq!(order.steps_per_epoch(), 3);
        let mut seen: Vec<u32> = (0..3).flat_map(|t| order.batch(t).to_vec()).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 9);
        assert_ne!(
            order.batch(0).to_vec(),
            order.batch(3).to_vec(),
            "epochs reshuffle"
        );
    }

    #[test]
    fn batch_at_an_iteration_does_not_depend_on_what_was_asked_before() {
        let mut a = BatchOrder::new(5, 100, 7);
        let mut b = BatchOrder::new(5, 100, 7);
        for t in 0..40 {
            a.batch(t);
        }
        assert_eq!(a.batch(17).to_vec(), b.batch(17).to_vec());
    }
}
