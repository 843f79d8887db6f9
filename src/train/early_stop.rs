//! Early stopping as Frankle & Carbin report it: the iteration of minimum validation loss
//! (the earliest one on ties) and the test accuracy there.

use super::engine::EvalPoint;

/// The early-stopping point of one replica.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EarlyStop {
    /// Iteration of minimum validation loss.
    pub iteration: u64,
    /// Validation loss there.
    pub val_loss: f64,
    /// Validation accuracy there.
    pub val_accuracy: f64,
    /// Test accuracy there.
    pub test_accuracy: f64,
}

impl EarlyStop {
    /// The early-stopping point of replica `r` over the evaluation points of a round.
    pub fn find(evals: &[EvalPoint], r: usize) -> Option<Self> {
        let mut best: Option<Self> = None;
        for e in evals {
            // A NaN loss never wins over a number (a diverged replica keeps its last finite
            // minimum); among NaNs the first point stands.
            let better = |b: &Self| {
                e.val_loss[r] < b.val_loss || (b.val_loss.is_nan() && !e.val_loss[r].is_nan())
            };
            if best.as_ref().is_none_or(better) {
                best = Some(Self {
                    iteration: e.iteration,
                    val_loss: e.val_loss[r],
                    val_accuracy: e.val_accuracy[r],
                    test_accuracy: e.test_accuracy[r],
                });
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(iteration: u64, val_loss: f64, test_accuracy: f64) -> EvalPoint {
        EvalPoint {
            iteration,
            train_loss: None,
            val_loss: vec![val_loss],
            val_accuracy: vec![0.5],
            test_loss: vec![1.0],
            test_accuracy: vec![test_accuracy],
        }
    }

    #[test]
    fn nan_losses_never_win() {
        let evals = [
            point(0, f64::NAN, 0.1),
            point(100, 0.9, 0.7),
            point(200, f64::NAN, 0.0),
        ];
        assert_eq!(EarlyStop::find(&evals, 0).unwrap().iteration, 100);
    }

    #[test]
    fn minimum_validation_loss_wins_and_the_earliest_tie() {
        let evals = [
            point(0, 2.0, 0.1),
            point(100, 0.5, 0.8),
            point(200, 0.5, 0.9),
            point(300, 0.7, 0.95),
        ];
        let stop = EarlyStop::find(&evals, 0).unwrap();
        assert_eq!(stop.iteration, 100);
        assert_eq!(stop.test_accuracy, 0.8);
    }
}
